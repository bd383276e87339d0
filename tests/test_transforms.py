"""Preprocessing (RAS, spacing, crop, z-score) and augmentation (seeded, label-safe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError
from lesionlib.training_settings import AugmentationSettings
from lesionlib.transforms import RandMotiond, augmentation, check_record_files, preprocessing


@pytest.fixture
def lps_volume(write_nifti, make_affine):
    """LPS, 2 x 2.5 x 4 mm image: a box 'brain' (values 100 +- noise) with a bright lesion cube."""
    shape = (30, 24, 14)
    affine = make_affine((2.0, 2.5, 4.0), "LPS", origin_mm=(30.0, 30.0, -28.0))
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[4:26, 3:21, 2:12] = 100 + rng.normal(0, 5, (22, 18, 10))
    lesion = np.zeros(shape, np.uint8)
    lesion[8:12, 6:10, 4:7] = 1
    image[lesion > 0] += 60
    img = write_nifti("t1.nii.gz", image, affine)
    mask = write_nifti("mask.nii.gz", lesion, affine, dtype=np.uint8)
    return img, mask, affine, lesion


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.array(np.nonzero(mask), float).mean(axis=1)
    return (affine @ np.r_[ijk, 1.0])[:3]


def test_preprocessing_reorients_resamples_normalises_and_pads(lps_volume):
    img, mask, affine, lesion = lps_volume
    out = preprocessing((2.0, 2.0, 2.0), patch_size=(32, 32, 32))({"image": str(img), "label": str(mask)})
    image, label = out["image"], out["label"]
    a = np.asarray(image.affine)
    np.testing.assert_allclose(np.diag(a)[:3], [2.0, 2.0, 2.0], atol=1e-6)  # RAS, 2 mm
    np.testing.assert_allclose(a[:3, :3], np.diag([2.0, 2.0, 2.0]), atol=1e-6)
    assert image.shape[0] == 1 and all(s >= 32 for s in image.shape[1:]) and label.shape == image.shape
    assert image.dtype == torch.float32
    assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
    brain = image[0][image[0] != 0]
    assert abs(float(brain.mean())) < 0.05 and abs(float(brain.std()) - 1.0) < 0.05
    # the lesion stays at the same world position (within a voxel)
    moved = _world_centroid(label[0].numpy() > 0, a)
    np.testing.assert_allclose(moved, _world_centroid(lesion, affine), atol=2.0)
    # the crop removed most of the empty border (the box brain is 44 x 45 x 40 mm)
    assert image.shape[1:] == (32, 32, 32)


def test_preprocessing_without_label_and_native_spacing(lps_volume):
    img, *_ = lps_volume
    out = preprocessing(None, crop_foreground=False)({"image": str(img), "label": None})
    assert "label" not in out
    assert tuple(out["image"].shape[1:]) == (30, 24, 14)
    np.testing.assert_allclose(np.abs(np.diag(np.asarray(out["image"].affine))[:3]), [2.0, 2.5, 4.0])
    assert (np.diag(np.asarray(out["image"].affine))[:3] > 0).all()


def test_mask_on_another_grid_is_a_clear_error(lps_volume, write_nifti, make_affine):
    img, _, _, lesion = lps_volume
    other = write_nifti("other_mask.nii.gz", lesion, make_affine((2.0, 2.5, 4.0), "RAS"), dtype=np.uint8)
    record = ImageRecord(dataset="toy", subject="01", session="1", image_path=img, mask_path=other)
    with pytest.raises(DataValidationError, match="other_mask.nii.gz: mask is not on the grid of its image .*place voxels up to"):
        check_record_files([record])
    # inside the pipeline MONAI wraps the error; the cause still names the file
    with pytest.raises(RuntimeError) as err:
        preprocessing((2.0, 2.0, 2.0))({"image": str(img), "label": str(other)})
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, DataValidationError) and cause.path == other
    with pytest.raises(DataValidationError, match="no lesion mask"):
        check_record_files([ImageRecord(dataset="toy", subject="01", session="1", image_path=img, mask_path=None)])
    check_record_files([ImageRecord(dataset="toy", subject="01", session="1", image_path=img, mask_path=None)],
                       need_mask=False)


def _patch(seed=0):
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.normal(size=(1, 24, 24, 24)).astype(np.float32))
    label = torch.zeros(1, 24, 24, 24)
    label[:, 8:14, 9:15, 10:16] = 1
    return {"image": MetaTensor(image), "label": MetaTensor(label)}


ALL_ON = AugmentationSettings(p_flip=1.0, p_affine=1.0, p_elastic=1.0, p_bias_field=1.0, p_noise=1.0, p_motion=1.0,
                              extra_spatial=True)


def test_augmentation_is_seeded_and_keeps_labels_binary():
    aug = augmentation(ALL_ON)
    outs = []
    for _ in range(2):
        aug.set_random_state(seed=11)
        outs.append(aug(_patch()))
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and torch.equal(outs[0]["label"], outs[1]["label"])
    aug.set_random_state(seed=12)
    other = aug(_patch())
    assert not torch.equal(outs[0]["image"], other["image"])
    for out in (outs[0], other):
        assert out["image"].shape == (1, 24, 24, 24)
        assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
        assert out["label"].sum() > 0


@pytest.mark.parametrize("name", ["p_bias_field", "p_noise", "p_motion"])
def test_intensity_augmentations_change_the_image_only(name):
    off = {k: 0.0 for k in ("p_flip", "p_affine", "p_elastic", "p_bias_field", "p_noise", "p_motion")}
    aug = augmentation(AugmentationSettings(**{**off, name: 1.0}, extra_spatial=True))
    aug.set_random_state(seed=3)
    before = _patch()
    after = aug(_patch())
    assert not torch.allclose(after["image"], before["image"])
    assert torch.equal(after["label"], before["label"])


def test_paper_augmentation_has_the_four_transforms_and_no_flips():
    """The paper's augmentation: elastic, bias field, noise, motion; flips and affine only as extras."""
    paper = [type(t).__name__ for t in augmentation(AugmentationSettings()).transforms]
    assert paper == ["RandApplyd", "RandBiasFieldd", "RandGaussianNoised", "RandMotiond"]
    assert type(augmentation(AugmentationSettings()).transforms[0].transform).__name__ == "Rand3DElasticd"
    extra = [type(t).__name__ for t in augmentation(AugmentationSettings(extra_spatial=True)).transforms]
    assert extra[:4] == ["RandFlipd", "RandFlipd", "RandFlipd", "RandAffined"] and extra[4:] == paper


def test_elastic_deformation_runs_only_when_drawn():
    """A wrapped transform that is not drawn costs nothing and leaves the patch untouched; drawn, it deforms."""
    from monai.transforms import Rand3DElasticd

    from lesionlib.transforms import RandApplyd

    calls = []

    class Counting(Rand3DElasticd):
        def __call__(self, data, *args, **kwargs):
            calls.append(1)
            return super().__call__(data, *args, **kwargs)

    elastic = Counting(keys=("image", "label"), prob=1.0, sigma_range=(5, 7), magnitude_range=(50, 100),
                       mode=("bilinear", "nearest"))
    never, always = RandApplyd(elastic, prob=0.0), RandApplyd(elastic, prob=1.0)
    before = _patch()
    assert torch.equal(never(_patch())["image"], before["image"]) and not calls
    always.set_random_state(seed=5)
    first = always(_patch())["image"]
    always.set_random_state(seed=5)
    assert torch.equal(always(_patch())["image"], first) and len(calls) == 2  # seeded through the wrapper
    assert not torch.equal(first, before["image"])


def test_disabled_augmentation_is_identity():
    before = _patch()
    after = augmentation(AugmentationSettings(enabled=False))(_patch())
    assert torch.equal(after["image"], before["image"])
    motion = RandMotiond(keys="image", prob=0.0)
    assert torch.equal(motion(_patch())["image"], before["image"])
