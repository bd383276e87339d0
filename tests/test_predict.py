"""Inference: masks land on the input's own grid (shape, affine) with the lesion where it was."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from lesionlib import bids
from lesionlib.data.records import ImageRecord
from lesionlib.predict import postprocess_mask, predict_records


class BrightVoxelNet(nn.Module):
    """Two-class logits marking z-scored voxels above 2 as lesion (a stand-in for a trained model).

    The test lesion is twice as bright as the brain, about 4 standard deviations above its mean (half-way is about 2)
    after the z-score; partial-volume voxels at the brain's edge stay below the brain's mean.
    """

    size_divisor = 1
    encoder_pretrained = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), (x - 2.0) * 20.0], dim=1)


def _brain_with_lesion(shape, lesion_center, lesion_radius_mm, spacing):
    """Ellipsoid 'brain' of intensity 1 with a bright ball (2) of radius ``lesion_radius_mm`` mm."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    brain = (((grid - centre[:, None, None, None]) / (0.45 * np.array(shape))[:, None, None, None]) ** 2).sum(0) < 1
    dist2 = (((grid - np.array(lesion_center, float)[:, None, None, None])
              * np.array(spacing)[:, None, None, None]) ** 2).sum(0)
    lesion = (dist2 <= lesion_radius_mm ** 2) & brain
    image = np.where(brain, 1.0, 0.0) + 1.0 * lesion
    return image.astype(np.float32), lesion


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def lps_case(tmp_path, make_affine, write_nifti):
    spacing = (1.5, 2.0, 3.0)
    shape = (40, 34, 22)
    affine = make_affine(spacing, "LPS", origin_mm=(30.0, 35.0, -30.0))
    image, lesion = _brain_with_lesion(shape, lesion_center=(12, 20, 12), lesion_radius_mm=7.0, spacing=spacing)
    root = tmp_path / "child"
    img_path = write_nifti(bids.child_t1w_path(root, "07", "2"), image, affine)
    mask_path = write_nifti(bids.child_mask_path(root, "07", "2"), lesion.astype(np.uint8), affine)
    record = ImageRecord(dataset="toy_child", subject="07", session="2", image_path=img_path, mask_path=mask_path,
                         domain="child")
    return record, affine, lesion


def test_prediction_on_lps_anisotropic_grid_keeps_shape_affine_and_lesion_position(tmp_path, lps_case):
    record, affine, lesion = lps_case
    out = tmp_path / "out"
    [path] = predict_records(BrightVoxelNet(), [record], out, spacing_mm=(2.0, 2.0, 2.0), patch_size=(16, 16, 16),
                             device="cpu", progress=False)
    assert path == out / "toy_child" / "sub-07" / "ses-2" / "anat" / "sub-07_ses-2_desc-lesion_mask.nii.gz"
    assert path == bids.prediction_mask_path(out, record)
    pred = nib.load(path)
    assert pred.shape == lesion.shape
    np.testing.assert_allclose(pred.affine, affine, atol=1e-5)
    assert pred.get_data_dtype() == np.uint8
    mask = np.asarray(pred.dataobj) > 0
    # resampling to 2 mm and back blurs the border only
    assert _dice(mask, lesion) > 0.8
    com_pred = np.array(np.nonzero(mask)).mean(axis=1)
    com_true = np.array(np.nonzero(lesion)).mean(axis=1)
    assert np.all(np.abs(com_pred - com_true) < 1.0)  # voxels of the input grid
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["encoder_pretrained"] is False and sidecar["spacing_mm"] == [2.0, 2.0, 2.0]
    assert sidecar["Sources"] == ["bids:source:sub-07/ses-2/anat/sub-07_ses-2_T1w.nii.gz"]
    assert sidecar["Type"] == "Lesion"


def test_space_entity_comes_from_the_input_name(tmp_path, make_affine, write_nifti):
    shape = (20, 20, 20)
    affine = make_affine(3.0, "RAS", origin_mm=(-30, -30, -30))
    image, lesion = _brain_with_lesion(shape, (10, 10, 10), 9.0, (3.0, 3.0, 3.0))
    root = tmp_path / "atlas"
    img_path = write_nifti(bids.atlas_t1w_path(root, "r001s001"), image, affine)
    rec = ImageRecord(dataset="toy", subject="r001s001", session="1", image_path=img_path, mask_path=None)
    [path] = predict_records(BrightVoxelNet(), [rec], tmp_path / "out", spacing_mm=(3.0, 3.0, 3.0),
                             patch_size=(16, 16, 16), device="cpu", progress=False)
    assert "_space-MNI152NLin2009aSym_desc-lesion_mask.nii.gz" in path.name
    assert _dice(np.asarray(nib.load(path).dataobj) > 0, lesion) > 0.9


def test_postprocessing_removes_small_components_and_keeps_largest():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:8, 2:8, 2:8] = True        # 216 voxels
    mask[12:15, 12:15, 12:15] = True  # 27 voxels
    mask[18, 18, 18] = True           # 1 voxel
    assert postprocess_mask(mask).sum() == 244
    assert postprocess_mask(mask, min_size_voxels=2).sum() == 243
    assert postprocess_mask(mask, min_size_voxels=28).sum() == 216
    only = postprocess_mask(mask, largest_component=True)
    assert only.sum() == 216 and only[2:8, 2:8, 2:8].all()
    assert postprocess_mask(mask, min_size_voxels=500, largest_component=True).sum() == 0


def test_predict_from_checkpoint_uses_its_spacing(tmp_path, lps_case):
    from lesionlib.train import TrainConfig, train
    from lesionlib.training_settings import AugmentationSettings

    record, affine, lesion = lps_case
    cfg = TrainConfig(model_kwargs={"channels": (4, 8, 8, 8, 8), "num_res_units": 0}, epochs=1,
                      iterations_per_epoch=1, batch_size=1, patch_size=(32, 32, 32), spacing_mm=(3.0, 3.0, 3.0),
                      augmentation=AugmentationSettings(enabled=False), device="cpu", progress=False)
    run = train(cfg, [record], [], tmp_path / "run")
    [path] = predict_records(run.checkpoint_best, [record], tmp_path / "out", overlap=0.25, device="cpu",
                             progress=False)
    pred = nib.load(path)
    assert pred.shape == lesion.shape
    np.testing.assert_allclose(pred.affine, affine, atol=1e-5)
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["spacing_mm"] == [3.0, 3.0, 3.0] and sidecar["model"] == "unet"
    assert Path(sidecar["checkpoint"]) == run.checkpoint_best.resolve()


def test_model_without_geometry_is_refused(tmp_path, lps_case):
    with pytest.raises(ValueError, match="spacing_mm and patch_size"):
        predict_records(BrightVoxelNet(), [lps_case[0]], tmp_path, device="cpu")
