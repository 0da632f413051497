"""A labelled atlas for the report's brain figures: region centres and region-wise maps.

Region-level runs carry region labels (e.g. AAL2 names) but no anatomy; given the atlas
image the regions came from (a 3-D NIfTI of integer labels in MNI space) and, optionally,
its label table, :func:`load_atlas` finds each region's centre (nilearn
``find_parcellation_cut_coords``) and :meth:`Atlas.paint` turns one value per region into an
image for ``plot_stat_map``.

Label tables: a TSV with columns ``index`` and ``name`` (BIDS ``dseg.tsv``), or plain lines
``<index> <name> ...`` (AAL's ``.txt`` style).  Without a table, region ``i`` (0-based, in
the run's order) is taken to be label ``i + 1``, as in neurolib's AAL2 region order.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from dtb.errors import ReportError

__all__ = ["Atlas", "load_atlas", "read_label_table"]


@dataclass(frozen=True, eq=False)
class Atlas:
    """An integer label image and where the run's regions are in it.

    Attributes
    ----------
    image : 3-D nibabel image of integer labels (0 = background).
    label_of : region name -> integer label in ``image``.
    centre_mm : region name -> (x, y, z) MNI coordinates [mm] of the region's centre.
    source : where the atlas came from (for captions).
    """

    image: nib.spatialimages.SpatialImage
    label_of: Mapping[str, int]
    centre_mm: Mapping[str, tuple[float, float, float]]
    source: str

    def coords(self, regions: Sequence[str]) -> np.ndarray | None:
        """(n, 3) centres [mm] of ``regions`` in that order, or None if any is not in the atlas."""
        if not regions or any(r not in self.centre_mm for r in regions):
            return None
        return np.array([self.centre_mm[r] for r in regions], dtype=float)

    def missing(self, regions: Sequence[str]) -> list[str]:
        """The regions the atlas does not contain."""
        return [r for r in regions if r not in self.centre_mm]

    def paint(self, regions: Sequence[str], values: np.ndarray):
        """An image holding ``values[i]`` in the voxels of ``regions[i]`` and 0 elsewhere."""
        from nilearn.image import new_img_like

        labels = np.asarray(self.image.dataobj).astype(np.int64)
        lookup = np.zeros(int(labels.max()) + 1, dtype=np.float32)
        for region, value in zip(regions, np.asarray(values, dtype=float)):
            if region in self.label_of:
                lookup[self.label_of[region]] = value
        return new_img_like(self.image, lookup[np.clip(labels, 0, None)], copy_header=False)


def read_label_table(path: str | Path) -> dict[int, str]:
    """Read an atlas label table: integer label -> region name (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"atlas label table {path} does not exist (give a TSV with columns index and name)")
    text = path.read_text(errors="replace").splitlines()
    rows = [line for line in text if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise ReportError(f"atlas label table {path} is empty (give a TSV with columns index and name)")
    table: dict[int, str] = {}
    header = rows[0].split("\t")
    if "index" in header and "name" in header:
        for i, row in enumerate(csv.DictReader(rows, delimiter="\t"), start=2):
            try:
                table[int(row["index"])] = row["name"].strip()
            except (TypeError, ValueError):
                raise ReportError(f"{path}, line {i}: index must be an integer, got {row.get('index')!r}") from None
        return table
    for i, line in enumerate(rows, start=1):
        parts = line.split()
        if len(parts) < 2:
            raise ReportError(f"{path}, line {i}: expected '<index> <name>', got {line!r}")
        try:
            table[int(parts[0])] = parts[1]
        except ValueError:
            raise ReportError(
                f"{path}, line {i}: the first column must be an integer label, got {parts[0]!r} "
                "(or give a TSV with a header 'index<TAB>name')"
            ) from None
    return table


def load_atlas(image_path: str | Path, regions: Sequence[str], labels_path: str | Path | None = None) -> Atlas:
    """Load a labelled atlas and locate the run's ``regions`` in it.

    Parameters
    ----------
    image_path : 3-D NIfTI of integer labels in MNI space (e.g. AAL2).
    regions : the run's region names.
    labels_path : label table (see :func:`read_label_table`), optional.

    Raises
    ------
    ReportError
        When a file is missing or unreadable, the image is not a 3-D label image, or no
        region of the run is found in it.
    """
    from nilearn.plotting import find_parcellation_cut_coords

    image_path = Path(image_path)
    if not image_path.is_file():
        raise ReportError(f"atlas image {image_path} does not exist (give a 3-D NIfTI of integer region labels)")
    try:
        image = nib.load(image_path)
        data = np.asarray(image.dataobj)
    except Exception as exc:
        raise ReportError(f"atlas image {image_path} cannot be read as NIfTI ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        image = nib.Nifti1Image(data[..., 0], image.affine)
        data = data[..., 0]
    if data.ndim != 3 or not np.allclose(data, np.round(data)):
        raise ReportError(
            f"atlas image {image_path} must be a 3-D image of integer labels, got shape {data.shape} "
            f"and {'integer' if np.allclose(data, np.round(data)) else 'non-integer'} values"
        )
    image = nib.Nifti1Image(np.round(data).astype(np.int32), image.affine)
    present = set(np.unique(image.get_fdata()).astype(int).tolist()) - {0}
    if labels_path is not None:
        names = read_label_table(labels_path)
        by_name = {name: index for index, name in names.items()}
        label_of = {r: by_name[r] for r in regions if r in by_name and by_name[r] in present}
    else:
        label_of = {r: i + 1 for i, r in enumerate(regions) if i + 1 in present}
    if not label_of:
        raise ReportError(
            f"none of the run's regions ({', '.join(list(regions)[:3])}, ...) was found in atlas {image_path}"
            + (f" with labels {labels_path}" if labels_path else "; give --atlas-labels to name its labels")
        )
    coords, values = find_parcellation_cut_coords(image, return_label_names=True)
    centre_of_label = {int(v): tuple(float(c) for c in xyz) for v, xyz in zip(values, coords)}
    centre_mm = {r: centre_of_label[label] for r, label in label_of.items() if label in centre_of_label}
    source = str(image_path) + (f" with labels {labels_path}" if labels_path else " (labels 1..N in run order)")
    return Atlas(image=image, label_of=label_of, centre_mm=centre_mm, source=source)
