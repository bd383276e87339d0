"""ATLAS subset rules, subject-level splits, few-shot selection, lesion-oversampled patches."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from lesionlib.data.records import ImageRecord
from lesionlib.io import save_nifti_atomic
from lesionlib.samplers import (
    PatchDataset,
    atlas_subset,
    few_shot_split,
    lesion_volume_ml,
    train_val_split,
)

# 3 mm grid, 20^3, world origin so that voxel (i, j, k) sits at (-30 + 3i, -60 + 3j, -40 + 3k) mm:
# the posterior-fossa box (y < -40, z < -20) is j <= 6 and k <= 6.
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = (-30.0, -60.0, -40.0)
VOXEL_ML = 0.027
SHAPE = (20, 20, 20)


def _ball(center, n_voxels):
    grid = np.indices(SHAPE).reshape(3, -1).T
    order = np.argsort(((grid - np.asarray(center, float)) ** 2).sum(axis=1), kind="stable")
    mask = np.zeros(int(np.prod(SHAPE)), np.uint8)
    mask[order[:n_voxels]] = 1
    return mask.reshape(SHAPE)


def _record(tmp_path, subject, mask, lesion_volume_ml=None, session="1", dataset="toy"):
    mp = save_nifti_atomic(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), tmp_path / f"{subject}_{session}_mask.nii.gz")
    return ImageRecord(dataset=dataset, subject=subject, session=session, image_path=tmp_path / "unused.nii.gz",
                       mask_path=mp, lesion_volume_ml=lesion_volume_ml)


@pytest.fixture
def atlas_like(tmp_path):
    big, small = 150, 40  # 4.05 mL and 1.08 mL
    cortex, fossa = (10, 15, 15), (10, 3, 3)
    two_parts = np.maximum(_ball(cortex, big), _ball(fossa, 20))  # a cortical lesion plus a small cerebellar one
    return [
        _record(tmp_path, "keep", _ball(cortex, big)),
        _record(tmp_path, "small", _ball(cortex, small)),
        _record(tmp_path, "cereb", _ball(fossa, big)),
        _record(tmp_path, "smallcereb", _ball(fossa, small)),
        _record(tmp_path, "twoparts", two_parts),
        _record(tmp_path, "keep2", _ball((5, 12, 14), 100)),
    ]


def test_lesion_volume_from_mask_or_record(tmp_path):
    rec = _record(tmp_path, "a", _ball((10, 10, 10), 100))
    assert lesion_volume_ml(rec) == pytest.approx(100 * VOXEL_ML)
    rec_with = _record(tmp_path, "b", _ball((10, 10, 10), 100), lesion_volume_ml=7.5)
    assert lesion_volume_ml(rec_with) == 7.5


def test_atlas_subset_counts_each_rule(atlas_like):
    kept, report = atlas_subset(atlas_like, progress=False)
    assert [r.subject for r in kept] == ["keep", "keep2"]
    assert report.n_input == 6 and report.n_kept == 2
    assert report.failed_volume == 2            # small, smallcereb
    assert report.failed_cerebellum == 3        # cereb, smallcereb, twoparts
    assert report.failed_both == 1
    assert report.removed["toy/sub-smallcereb_ses-1"] == ["lesion volume < 2.5 mL", "cerebellar lesion"]
    d = report.to_dict()
    assert d["n_removed"] == 4 and "box (y < -40 mm" in d["cerebellum_definition"]
    yaml.safe_dump(d)  # serialisable


def test_atlas_subset_rules_can_be_switched(atlas_like):
    kept, report = atlas_subset(atlas_like, exclude_cerebellum=False, progress=False)
    assert {r.subject for r in kept} == {"keep", "cereb", "twoparts", "keep2"}
    assert report.failed_cerebellum == 0
    kept, _ = atlas_subset(atlas_like, min_volume_ml=0.0, progress=False)
    assert {r.subject for r in kept} == {"keep", "small", "keep2"}


def test_atlas_subset_uses_a_given_cerebellum_atlas(tmp_path, atlas_like):
    # an "atlas" whose cerebellum is where the cortical lesions are (at 1.5 mm: resampled to the mask grid)
    fine = np.diag([1.5, 1.5, 1.5, 1.0])
    fine[:3, 3] = AFFINE[:3, 3]
    region = np.zeros((40, 40, 40), np.float32)
    region[14:28, 24:36, 24:36] = 1.0  # around voxel (10, 15, 15) of the 3 mm grid
    atlas = save_nifti_atomic(nib.Nifti1Image(region, fine), tmp_path / "cerebellum.nii.gz")
    kept, report = atlas_subset(atlas_like, cerebellum_mask=atlas, progress=False)
    # the paper's "no cerebellum involvement": keep2 only grazes the atlas region, and is excluded too
    assert {r.subject for r in kept} == {"cereb"}
    assert "cerebellum.nii.gz" in report.cerebellum_definition and "any lesion voxel" in report.cerebellum_definition
    # the box rule ignores the atlas and needs half a component inside the box
    kept, report = atlas_subset(atlas_like, cerebellum_mask=atlas, rule="box", progress=False)
    assert {r.subject for r in kept} == {"keep", "keep2"} and "box" in report.cerebellum_definition


def test_atlas_rule_without_an_atlas_is_an_error(atlas_like, monkeypatch):
    monkeypatch.delenv("LESIONLIB_CEREBELLUM_ATLAS", raising=False)
    with pytest.raises(ValueError, match="cerebellum_atlas"):
        atlas_subset(atlas_like, rule="atlas", progress=False)
    _, report = atlas_subset(atlas_like, rule="auto", progress=False)
    assert "no atlas configured" in report.cerebellum_definition


def _children(n_children=20, sessions=("1", "2"), seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for c in range(n_children):
        volume = float(rng.uniform(2.5, 172))
        for s in sessions:
            recs.append(ImageRecord(dataset="child", subject=f"{c + 1:02d}", session=s, image_path=f"/x/{c}_{s}.nii.gz",
                                    mask_path=f"/x/{c}_{s}_mask.nii.gz", domain="child",
                                    lesion_volume_ml=volume * (1.0 if s == "1" else 0.9)))
    return recs


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_images=st.integers(1, 10))
def test_few_shot_split_never_puts_a_child_on_both_sides(seed, n_images):
    records = _children()
    split = few_shot_split(records, n_images=n_images, seed=seed)
    train_subjects = {r.subject for r in split.train}
    test_subjects = {r.subject for r in split.test}
    assert len(split.train) == n_images == len(train_subjects)  # distinct children
    assert not train_subjects & test_subjects
    assert not {r.subject for r in split.excluded} & test_subjects
    assert len(split.train) + len(split.test) + len(split.excluded) == len(records)
    assert all(r.session == "1" for r in split.train)
    # one child from each lesion-size stratum
    volumes = sorted({r.lesion_volume_ml for r in records if r.session == "1"})
    strata = np.array_split(np.array(volumes), n_images)
    picked = sorted(r.lesion_volume_ml for r in split.train)
    for stratum, v in zip(strata, picked):
        assert stratum.min() <= v <= stratum.max()


def test_few_shot_split_is_seeded_and_serialisable():
    records = _children()
    a = few_shot_split(records, n_images=5, seed=7)
    b = few_shot_split(records, n_images=5, seed=7)
    assert a.selection == b.selection
    seeds = {tuple(few_shot_split(records, n_images=5, seed=s).selection["train"]) for s in range(10)}
    assert len(seeds) > 1
    json.loads(json.dumps(a.to_dict()))
    assert len(a.selection["strata"]) == 5 and a.selection["seed"] == 7
    assert len(few_shot_split(records, n_images=5, seed=7, session="random").train) == 5
    with pytest.raises(ValueError, match="only 20 children"):
        few_shot_split(records, n_images=21)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n_subjects=st.integers(2, 30))
def test_train_val_split_is_subject_level(seed, n_subjects):
    records = _children(n_subjects)
    train, val = train_val_split(records, val_fraction=0.2, seed=seed)
    assert not {r.subject for r in train} & {r.subject for r in val}
    assert len(train) + len(val) == len(records)
    assert len({r.subject for r in val}) == min(max(round(0.2 * n_subjects), 1), n_subjects - 1)
    assert train_val_split(records, 0.2, seed) == (train, val)


def _volume(shape=(40, 40, 40), lesion_center=(25, 17, 20), radius=2):
    grid = np.indices(shape)
    lesion = ((grid - np.array(lesion_center)[:, None, None, None]) ** 2).sum(0) <= radius ** 2
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return {"image": MetaTensor(torch.as_tensor(image)[None]),
            "label": MetaTensor(torch.as_tensor(lesion.astype(np.float32))[None])}


def test_patches_oversample_lesions_and_are_reproducible():
    volume = _volume()
    ds = PatchDataset([volume], patch_size=(10, 10, 10), samples_per_epoch=300, n_epochs=2, seed=5)
    with_lesion = [float(ds[i]["label"].sum() > 0) for i in range(300)]
    # 1/3 centred on lesion + about 4% of random patches that happen to contain the tiny lesion
    assert 0.25 < np.mean(with_lesion) < 0.45
    first = ds[17]
    assert first["image"].shape == (1, 10, 10, 10) and first["label"].shape == (1, 10, 10, 10)
    assert torch.equal(first["image"], ds[17]["image"])
    assert not torch.equal(ds[17]["image"], ds[317]["image"])  # same slot, next epoch: a new patch
    none = PatchDataset([volume], (10, 10, 10), 150, 1, seed=5, foreground_fraction=0.0)
    assert np.mean([float(none[i]["label"].sum() > 0) for i in range(150)]) < 0.12


def test_lesion_oversampling_matches_monai_rand_crop_by_pos_neg():
    """Our crop and MONAI's RandCropByPosNegLabeld(pos=1, neg=2) show lesions equally often."""
    from monai.transforms import RandCropByPosNegLabeld

    from lesionlib.samplers import lesion_centred_crop

    volume = _volume(shape=(30, 30, 30), lesion_center=(20, 10, 15), radius=2)
    image = torch.as_tensor(volume["image"]).as_subclass(torch.Tensor)
    label = torch.as_tensor(volume["label"]).as_subclass(torch.Tensor)
    monai_crop = RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=(8, 8, 8),
                                        pos=1, neg=2, num_samples=1)
    monai_crop.set_random_state(0)
    n = 150
    theirs = np.mean([float(monai_crop(volume)[0]["label"].sum() > 0) for _ in range(n)])
    rng = np.random.default_rng(0)
    ours, centred = [], []
    for _ in range(n):
        img, lab, on = lesion_centred_crop(image, label, (8, 8, 8), rng, 1 / 3)
        assert img.shape == lab.shape == (1, 8, 8, 8)
        ours.append(float(lab.sum() > 0))
        centred.append(on)
        if on:
            assert lab[0, 4, 4, 4] == 1  # the centre voxel is a lesion voxel
    assert abs(np.mean(ours) - theirs) < 0.12
    assert abs(np.mean(centred) - 1 / 3) < 0.1
    with pytest.raises(ValueError, match="smaller than the patch"):
        lesion_centred_crop(image, label, (40, 8, 8), rng, 1 / 3)
