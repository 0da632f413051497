"""The anatomy stage measures the subject, not the template: GM volume in the subject's native space
(Jacobian-modulated), the subject's brain mask, deep grey nuclei from the template's tissue prior, and
bitwise repeatable outputs (seeded HMRF background; any OpenMP thread count).

Ground truth from the phantom (dtb.phantom.anatomy): its T1w, GM map and brain mask are nilearn's MNI152
2009a ones; a "native" phantom subject is the same voxels with an affine scaled by 0.9 (and shifted), so its
brain is 0.9^3 = 0.729 of the template's and its true native GM volume is the phantom's GM x the native
voxel volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dtb.io.bids import find_subject_inputs, validate_subject
from dtb.phantom.anatomy import REGION_CENTRES_MM, make_anatomy
from dtb.phantom.settings import PhantomSettings
from dtb.preproc.anat import AnatSettings, Registration, run_anatomy, target_grid, template_brain_mask
from dtb.preproc.tissue import deep_grey_weight, nucleus_masks, segment_grey_matter, template_grey_matter
from tests.imaging_data import bids_with_t1w

SCALE = 0.9  # native phantom: world coordinates x 0.9 -> volumes x 0.729
ROOT = Path(__file__).resolve().parents[2]


def _phantom(grid_mm: int):
    return make_anatomy(PhantomSettings(grid_mm=grid_mm))


def _native_affine(affine: np.ndarray) -> np.ndarray:
    native = affine.copy()
    native[:3, :3] *= SCALE
    native[:3, 3] = native[:3, 3] * SCALE + np.array([3.0, -5.0, 4.0])
    return native


def _write_native_phantom(root: Path, grid_mm: int):
    anatomy = _phantom(grid_mm)
    native = nib.Nifti1Image(np.asarray(anatomy.t1w.dataobj, dtype=np.float32), _native_affine(anatomy.affine))
    native.header.set_xyzt_units("mm")
    bids_with_t1w(root, native)
    return anatomy, native


def _template_phantom(grid_mm: float = 4.0):
    """The phantom's T1w and brain mask are nilearn's MNI152 template and mask (dtb.phantom.anatomy); the
    fast tests take them from the stage's per-process cache instead of building the whole phantom."""
    grid = target_grid(grid_mm)
    t1 = nib.Nifti1Image(np.asarray(grid.dataobj, dtype=np.float32) * 1000.0, grid.affine)
    return t1, np.asarray(template_brain_mask(grid).dataobj) > 0


def test_hmrf_segmentation_is_bitwise_repeatable():
    """dipy draws the classifier's background noise from an unseeded generator; the stage seeds it."""
    t1, brain = _template_phantom()
    mask = nib.Nifti1Image(brain.astype(np.uint8), t1.affine)
    first = segment_grey_matter(t1, mask, max_iter=10, deep_grey_prior=False).get_fdata()
    second = segment_grey_matter(t1, mask, max_iter=10, deep_grey_prior=False).get_fdata()
    assert np.array_equal(first, second)
    assert 0.3 < first[brain].mean() < 0.7  # a GM map, not an empty class


def test_jacobian_of_an_affine_map_is_its_determinant():
    from dipy.align.imaffine import AffineMap

    t1, brain = _template_phantom()
    moving = nib.Nifti1Image(np.asarray(t1.dataobj), _native_affine(t1.affine))
    template = target_grid(4.0)
    # template world -> native world: the inverse of the native phantom's scaling about the world origin
    to_native = _native_affine(np.eye(4))
    transform = AffineMap(
        to_native,
        domain_grid_shape=template.shape,
        domain_grid2world=template.affine,
        codomain_grid_shape=moving.shape,
        codomain_grid2world=moving.affine,
    )
    registration = Registration.from_transform(transform, moving, template, "affine")
    jacobian = registration.jacobian(moving).get_fdata()
    inner = brain & (np.asarray(registration.warp(moving).dataobj) > 0)
    np.testing.assert_allclose(jacobian[inner], SCALE**3, rtol=1e-4)
    # the warp brings the phantom back onto the template: same voxels up to interpolation
    warped = registration.warped.get_fdata()
    assert np.corrcoef(warped[brain], np.asarray(t1.dataobj)[brain])[0, 1] > 0.99


def test_deep_grey_weight_covers_the_nuclei_and_spares_the_cortex():
    grid = target_grid(4.0)
    weight = deep_grey_weight(grid).get_fdata()
    prior = template_grey_matter(grid).get_fdata()
    for name, mask in nucleus_masks(grid, 0.6).items():
        assert weight[mask].min() == 1.0, name
        assert prior[mask].mean() > 0.25, name  # the template's prior reads them as (partly) grey
    inverse = np.linalg.inv(grid.affine)
    for name, *xyz in REGION_CENTRES_MM:
        i, j, k = np.rint(nib.affines.apply_affine(inverse, xyz)).astype(int)
        assert weight[i, j, k] == 0.0, name


def test_brain_mask_is_the_subjects_not_the_templates(tmp_path):
    """A phantom with a resection cavity (zero signal): the cavity is outside the subject's mask and holds
    no grey matter, though the template's mask covers it."""
    t1, brain = _template_phantom()
    data = np.asarray(t1.dataobj, dtype=np.float32).copy()
    world = nib.affines.apply_affine(t1.affine, np.indices(data.shape).reshape(3, -1).T).reshape(*data.shape, 3)
    distance = np.linalg.norm(world - np.array([-40.0, 20.0, 30.0]), axis=-1)
    cavity = (distance <= 20.0) & brain
    core = distance <= 12.0  # median_otsu's median filter (radius 2 voxels) blurs the cavity's edge
    data[cavity] = 0.0
    bids_with_t1w(tmp_path, nib.Nifti1Image(data, t1.affine))
    subject = validate_subject(find_subject_inputs(tmp_path, "01"), require=("anat",))
    result = run_anatomy(subject, AnatSettings(grid_mm=4.0, work_mm=4.0, registration="none"))
    mask = result.brain_mask.get_fdata() > 0
    assert mask[core].mean() < 0.1 and brain[core].all()
    kept = brain & ~cavity
    assert mask[kept].mean() > 0.9
    assert result.gm_volume.get_fdata()[cavity].sum() < 0.02 * result.grey_matter_mm3
    assert result.volume_space == "template" and result.native_brain_mask is None


def _run_cli(bids: Path, out: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    argv = ["anat", "--bids", str(bids), "--participant-label", "01", "--out", str(out), "--work-mm", "4"]
    done = subprocess.run(
        [sys.executable, "-m", "dtb.cli", *argv, "--total-neurons", "100000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_native_phantom_gives_native_volumes_its_own_mask_deep_grey_and_the_same_bits(tmp_path):
    anatomy, native = _write_native_phantom(tmp_path / "bids", 2)
    voxel = abs(np.linalg.det(native.affine[:3, :3]))
    true_gm = float(anatomy.grey_matter.sum() * voxel)
    true_brain = float(anatomy.brain.sum() * voxel)
    template_gm = float(anatomy.grey_matter.sum() * 8.0)

    outs = [tmp_path / "one_thread", tmp_path / "two_threads"]
    for out, threads in zip(outs, (1, 2)):
        _run_cli(tmp_path / "bids", out, threads)
    folder = [out / "dtb" / "sub-01" / "anat" for out in outs]
    stem = "sub-01_space-MNI152NLin2009aSym_res-3mm"
    names = [
        f"{stem}_label-GM_probseg.nii.gz",
        f"{stem}_desc-brain_mask.nii.gz",
        f"{stem}_desc-neuroncount_stats.nii.gz",
        "sub-01_desc-brain_mask.nii.gz",
    ]
    for name in names:  # bitwise the same for 1 and 2 OpenMP threads, two processes
        a, b = (np.asarray(nib.load(f / name).dataobj) for f in folder)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    tsv = f"{stem}_desc-neuroncount_stats.tsv"
    assert (folder[0] / tsv).read_bytes() == (folder[1] / tsv).read_bytes()

    import pandas as pd

    sidecar = json.loads((folder[0] / tsv.replace(".tsv", ".json")).read_text())
    assert sidecar["GreyMatterVolumeSpace"] == "native"
    native_gm = float(sidecar["GreyMatterMM3"])  # the table leaves out voxels that got no neuron
    table = pd.read_csv(folder[0] / tsv, sep="\t")
    assert table["neuron_count"].sum() == 100000 and table["gm_volume_mm3"].sum() <= native_gm
    fraction = nib.load(folder[0] / f"{stem}_label-GM_probseg.nii.gz").get_fdata()
    template_space_gm = float(fraction.sum() * 27.0)
    print(
        f"native phantom: GM {native_gm / 1000:.1f} cm^3 (truth {true_gm / 1000:.1f}, template "
        f"{template_gm / 1000:.1f}); modulated / unmodulated {native_gm / template_space_gm:.3f} (0.729)"
    )
    # the Jacobian modulation turns the template-space volume into the native one (measured 0.716: SyN at
    # --work-mm 4 leaves the subject 0.6 % larger per axis than the template)
    assert native_gm / template_space_gm == pytest.approx(SCALE**3, rel=0.04)
    # the native GM volume (measured 0.86 of the truth: the HMRF finds about 0.87 of the template's GM prior
    # on the template's own T1), far from the template-space volume the stage reported before
    assert native_gm == pytest.approx(true_gm, rel=0.2)
    assert native_gm < 0.8 * template_space_gm

    mask = nib.load(folder[0] / "sub-01_desc-brain_mask.nii.gz")
    np.testing.assert_allclose(mask.affine, native.affine)
    inside = np.asarray(mask.dataobj) > 0
    dice = 2 * (inside & anatomy.brain).sum() / (inside.sum() + anatomy.brain.sum())
    brain = float(inside.sum() * voxel)
    print(
        f"native brain mask: Dice {dice:.3f} with the phantom's, {brain / 1000:.0f} cm^3 (truth {true_brain / 1000:.0f})"
    )
    assert dice > 0.95 and brain == pytest.approx(true_brain, rel=0.06)  # measured 0.954 of the truth

    grid = target_grid(3.0)
    truth = template_grey_matter(grid).get_fdata()
    for name, core in nucleus_masks(grid, 0.6).items():
        ratio = fraction[core].mean() / truth[core].mean()
        print(f"{name}: GM fraction {fraction[core].mean():.3f}, truth {truth[core].mean():.3f}")
        assert 0.85 < ratio < 1.15, name
