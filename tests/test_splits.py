"""make_splits: the one definition of what every cell trains and is evaluated on."""

from __future__ import annotations

import pytest

from lesionlib import bids
from lesionlib.io import DataValidationError
from lesionlib.profile import load_profile
from lesionlib.splits import make_splits, session2_root, with_propagated_masks

PROFILE = """profiles:
  tiny:
    seeds: [0, 1]
    data: {resolution_mm: 3.0, n_adult: 10, n_children: 4, child_session2_masks: %s}
    splits: {few_shot_n: 2, adult_val_fraction: 0.2, subset_min_volume_ml: 0.5, cerebellum_rule: box}
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch, isolated_roots, make_atlas_tree, make_child_tree):
    def make(session2: str = "dataset"):
        path = tmp_path / "experiments.yaml"
        path.write_text(PROFILE % session2)
        monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(path))
        base = isolated_roots["data"] / "synthetic" / "tiny"
        # lesion voxels of 27 uL: 8 voxels = 0.2 mL (below the subset's 0.5 mL), 40 voxels = 1.1 mL
        make_atlas_tree(base / "adult", lesion_voxels={f"r001s{i:03d}": (8 if i % 3 == 0 else 40) for i in range(1, 11)})
        make_child_tree(base / "child", lesion_voxels={(f"{c:02d}", s): 10 + 5 * c for c in range(1, 5)
                                                       for s in ("1", "2")})
        return load_profile("tiny")
    return make


def test_splits_are_nested_subject_level_and_shared_by_every_seed(tiny):
    prof = tiny()
    a, b = make_splits(prof, 0), make_splits(prof, 1)
    assert [r.case_id for r in a.adult_val] == [r.case_id for r in b.adult_val]  # fixed adult split
    assert len(a.adult_val) == 2 and len(a.adult_train) == 8
    assert {r.case_id for r in a.subset_train} <= {r.case_id for r in a.adult_train}
    assert all(r.lesion_volume_ml >= 0.5 for r in a.subset_train + a.subset_val)
    # few-shot: 2 images of 2 different children; their other sessions are in no test set
    train = a.few_shot.train
    assert len(train) == 2 and len({r.subject for r in train}) == 2
    test_subjects = {r.subject for r in a.few_shot.test}
    assert not test_subjects & {r.subject for r in train} and len(a.few_shot.test) == 4


def test_training_and_evaluation_sets_of_each_kind_of_cell(tiny):
    s = make_splits(tiny(), 0)
    assert s.training("adult_full") == (s.adult_train, s.adult_val)
    assert s.training("adult_subset") == (s.subset_train, s.subset_val)
    assert s.training("adult_subset", fine_tuned=True) == (s.few_shot.train, [])
    assert s.training("child5") == (s.few_shot.train, [])
    full = s.evaluation("adult_full")
    assert list(full) == ["adult_val", "child_test", "child_all"] and full["adult_val"] == s.adult_val
    assert s.evaluation("adult_subset")["adult_val"] == s.subset_val
    assert len(full["child_all"]) == 8
    # fine-tuned and child-only cells: the same child test images as the others, and nothing else
    assert s.evaluation("adult_full", fine_tuned=True) == {"child_test": s.few_shot.test}
    assert s.evaluation("child5") == {"child_test": s.few_shot.test}
    with pytest.raises(ValueError, match="unknown training set"):
        s.training("everything")


def test_propagated_session2_masks_replace_the_datasets_own(tiny, isolated_roots, write_nifti, blob_mask):
    prof = tiny("propagated")
    with pytest.raises(DataValidationError, match="not propagated yet") as err:
        make_splits(prof, 0)
    assert "ses-2" in str(err.value.path)
    import nibabel as nib

    root = session2_root("tiny")
    children = make_splits(load_profile("tiny", None).model_copy(
        update={"data": prof.data.model_copy(update={"child_session2_masks": "dataset"})}), 0).child
    for r in children:
        if r.session == "2":
            img = nib.load(r.mask_path)
            write_nifti(bids.prediction_path(root, r.subject, "2", desc="propagated"),
                        blob_mask(img.shape, 3), img.affine, dtype="uint8")
    s = make_splits(prof, 0)
    second = [r for r in s.child if r.session == "2"]
    assert all(str(r.mask_path).startswith(str(root)) for r in second)
    assert all(r.lesion_volume_ml == pytest.approx(3 * 0.0324, rel=1e-3) for r in second)
    assert all(not str(r.mask_path).startswith(str(root)) for r in s.child if r.session == "1")
    assert with_propagated_masks([], root) == []
