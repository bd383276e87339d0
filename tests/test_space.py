"""lesionlib.space: one MNI grid, one template loader and one same-grid test, used by every module."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lesionlib.space import (GRID_TOL_MM, grid_mismatch, mni_grid, mni_volumes, same_grid, voxel_displacement_mm,
                             voxel_volume_ml)


@pytest.mark.parametrize("resolution", [1, 2])
def test_mni_grid_is_nilearns_template_grid(resolution):
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=resolution)
    shape, affine = mni_grid(float(resolution))
    assert shape == template.shape
    np.testing.assert_allclose(affine, template.affine, atol=1e-9)


@pytest.mark.parametrize("resolution", [1.0, 1.5, 2.0, 3.0])
def test_mni_grid_is_symmetric_about_the_midline(resolution):
    shape, affine = mni_grid(resolution)
    x = affine[0, 0] * np.arange(shape[0]) + affine[0, 3]
    np.testing.assert_allclose(x, -x[::-1], atol=1e-9)
    np.testing.assert_allclose(np.diag(affine)[:3], resolution)
    # y and z start at the template's origin
    np.testing.assert_allclose(affine[1:3, 3], [-134.0, -72.0])


def test_mni_grid_at_3mm():
    shape, affine = mni_grid(3.0)
    assert shape == (65, 78, 63)
    np.testing.assert_allclose(affine[:3, 3], [-96.0, -134.0, -72.0])
    with pytest.raises(ValueError):
        mni_grid(0.0)
    with pytest.raises(ValueError):
        mni_grid(float("nan"))


@pytest.mark.parametrize("resolution", [1.0, 2.0, 3.0])
def test_every_mni_consumer_uses_the_one_grid(resolution):
    """Synthetic cohorts, registration templates and LesionGnb's tissue priors share mni_grid."""
    from lesionlib.baselines.tissue import template_tissue_priors
    from lesionlib.register import mni_template

    grid = mni_grid(resolution)
    vols = mni_volumes(resolution)
    assert same_grid((vols.shape, vols.affine), grid)
    assert same_grid(mni_template(resolution, "t1"), grid)
    assert template_tissue_priors(resolution)[0].gm.shape == grid[0]


def test_resampled_templates_keep_brain_volume_and_tissue_order():
    full, coarse = mni_volumes(1.0), mni_volumes(3.0)
    volume_1mm = full.brain.sum() * voxel_volume_ml(full.affine)
    volume_3mm = coarse.brain.sum() * voxel_volume_ml(coarse.affine)
    assert volume_1mm == pytest.approx(1883.0, rel=0.01)
    assert volume_3mm == pytest.approx(volume_1mm, rel=0.02)
    for v in (full, coarse):
        assert np.all(v.gm + v.wm <= v.brain + 1e-6)
        assert not v.gm.flags.writeable
    # the 2009a symmetric template is mirror-symmetric on the symmetric grid
    assert np.corrcoef(coarse.t1.ravel(), coarse.t1[::-1].ravel())[0, 1] > 0.999


def test_same_grid_tolerance_and_inputs():
    affine = np.diag([3.0, 3.0, 3.6, 1.0])
    a = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    nudged = affine.copy()
    nudged[:3, 3] += 0.5 * GRID_TOL_MM / np.sqrt(3)
    b = nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), nudged)
    assert same_grid(a, b)  # a trailing singleton axis and sub-tolerance differences are the same grid
    shifted = affine.copy()
    shifted[0, 3] += 2 * GRID_TOL_MM
    assert not same_grid(a, ((4, 5, 6), shifted))
    assert "place voxels up to 0.002 mm apart" in grid_mismatch(a, ((4, 5, 6), shifted))
    rotated = affine.copy()
    rotated[:3, :3] = affine[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(1e-3), -np.sin(1e-3)], [0, np.sin(1e-3), np.cos(1e-3)]])
    # a 1 mrad rotation about x moves the far corner (12 mm, 18 mm away) by ~0.021 mm
    assert voxel_displacement_mm(affine, rotated, (4, 5, 6)) == pytest.approx(0.0208, rel=0.02)
    assert not same_grid(a, ((4, 5, 6), rotated))
    assert "shape" in grid_mismatch(a, ((4, 5, 7), affine))
    nan_affine = affine.copy()
    nan_affine[0, 0] = np.nan
    assert not same_grid(a, ((4, 5, 6), nan_affine))
    with pytest.raises(TypeError):
        same_grid(a, "not an image")
