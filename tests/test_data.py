"""Discovery (ATLAS and child BIDS layouts, lesion volumes and their cache), validation of bad
inputs (each with its own message, nothing written), RAS loading, and the two CLI commands."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lesionlib import bids, config
from lesionlib.data import cli as data_cli
from lesionlib.data import discovery
from lesionlib.data.discovery import VolumeCache, discover, discover_atlas, discover_child_bids, records_table
from lesionlib.data.manifest import ManifestError
from lesionlib.data.records import ImageRecord
from lesionlib.data.validate import (
    DataValidationErrors,
    check_record,
    load_case,
    validate_records,
)
from lesionlib.space import voxel_displacement_mm
from lesionlib.io import DataValidationError


@pytest.fixture(autouse=True)
def isolate(monkeypatch: pytest.MonkeyPatch, isolated_roots: dict[str, Path]) -> dict[str, Path]:
    for var in ("ATLAS_V2_ROOT", "CHILD_BIDS_ROOT", "LESIONLIB_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    return isolated_roots


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and mtime: equal snapshots mean nothing was written."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


# ================================================================ discovery: ATLAS layout

def test_discover_atlas_records(make_atlas_tree):
    lesions = {"r002s001": 1, "r001s002": 27, "r001s001": 8, "r010s003": 64}
    root = make_atlas_tree(lesion_voxels=lesions, spacing_mm=3.0)
    records = discover_atlas(root)
    assert [r.subject for r in records] == ["r001s001", "r001s002", "r002s001", "r010s003"]
    assert [r.site for r in records] == ["R001", "R001", "R002", "R010"]
    for r in records:
        assert r.dataset == "atlas_v2" and r.domain == "adult" and r.session == "1"
        assert r.image_path == bids.atlas_t1w_path(root, r.subject).absolute()
        assert r.mask_path == bids.atlas_mask_path(root, r.subject).absolute()
        assert r.lesion_volume_ml == pytest.approx(lesions[r.subject] * 27 / 1000)
        assert r.case_id == f"sub-{r.subject}_ses-1"
    # the Training folder itself is accepted as root, with identical records
    assert discover_atlas(root / "Training") == records


def test_atlas_volumes_in_ml_for_anisotropic_voxels(make_atlas_tree):
    root = make_atlas_tree(lesion_voxels={"r001s001": 50}, spacing_mm=(0.5, 2.0, 3.5))
    (record,) = discover_atlas(root)
    assert record.lesion_volume_ml == pytest.approx(50 * 0.5 * 2.0 * 3.5 / 1000)


def test_atlas_subject_in_wrong_site_folder(make_atlas_tree):
    root = make_atlas_tree(lesion_voxels={"r001s001": 3})
    src = root / "Training" / "R001" / "sub-r001s001"
    dst = root / "Training" / "R002" / "sub-r001s001"
    dst.parent.mkdir(parents=True)
    src.rename(dst)
    with pytest.raises(DataValidationError, match="belongs in site folder R001"):
        discover_atlas(root)


def test_atlas_unexpected_t1w_name_is_an_error(make_atlas_tree):
    root = make_atlas_tree(lesion_voxels={"r001s001": 3})
    image = bids.atlas_t1w_path(root, "r001s001")
    image.rename(image.with_name("sub-r001s001_ses-1_space-MNI152NLin6Asym_T1w.nii.gz"))
    with pytest.raises(DataValidationError, match="unexpected T1w file name"):
        discover_atlas(root)


def test_atlas_missing_training_or_empty(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        discover_atlas(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="no Training/ folder"):
        discover_atlas(tmp_path / "empty")
    (tmp_path / "empty" / "Training").mkdir()
    with pytest.raises(DataValidationError, match="no T1w images found"):
        discover_atlas(tmp_path / "empty")


# ================================================================ discovery: child BIDS

def test_discover_child_bids(make_child_tree):
    lesions = {("01", "1"): 20, ("01", "2"): 21, ("02", "1"): 5, ("02", "2"): 6, ("10", "1"): 9}
    participants = [("01", 14, "F", "A"), ("02", 30.5, "M", "B"), ("10", 47, "F", "A")]
    root = make_child_tree(lesion_voxels=lesions, spacing_mm=(3.0, 3.0, 3.6), orientation="LPS",
                           participants=participants)
    records = discover_child_bids(root)
    # natural order: sub-10 after sub-02
    assert [(r.subject, r.session) for r in records] == [("01", "1"), ("01", "2"), ("02", "1"), ("02", "2"), ("10", "1")]
    info = {s: (age, sex, site) for s, age, sex, site in participants}
    for r in records:
        assert r.dataset == "child_cohort" and r.domain == "child"
        assert r.image_path == bids.child_t1w_path(root, r.subject, r.session).absolute()
        assert r.mask_path == bids.child_mask_path(root, r.subject, r.session).absolute()
        assert (r.age_months, r.sex, r.site) == info[r.subject]
        assert r.lesion_volume_ml == pytest.approx(lesions[(r.subject, r.session)] * 3.0 * 3.0 * 3.6 / 1000)


def test_child_bids_without_participants_and_with_age_in_years(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 4})
    (root / "participants.tsv").unlink()
    (record,) = discover_child_bids(root)
    assert (record.age_months, record.sex, record.site) == (None, None, None)
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t2.5\tM\n")
    (record,) = discover_child_bids(root)
    assert record.age_months == pytest.approx(30.0) and record.sex == "M" and record.site is None


def test_child_bids_bad_participants_table(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 4})
    (root / "participants.tsv").write_text("participant_id\tage_months\nsub-01\ttwelve\n")
    with pytest.raises(DataValidationError, match="age_months of sub-01 is not a number"):
        discover_child_bids(root)


def test_child_bids_skips_noncanonical_names(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 4})
    extra = root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_acq-fast_T1w.nii.gz"
    extra.write_bytes(bids.child_t1w_path(root, "01", "1").read_bytes())
    assert [r.image_path.name for r in discover_child_bids(root)] == ["sub-01_ses-1_T1w.nii.gz"]


def test_missing_mask_is_recorded_then_reported_by_validation(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 4, ("01", "2"): 5})
    mask = bids.child_mask_path(root, "01", "2")
    mask.unlink()
    records = discover_child_bids(root)
    assert records[1].mask_path == mask.absolute() and records[1].lesion_volume_ml is None
    assert records[0].lesion_volume_ml is not None
    with pytest.raises(DataValidationErrors) as info:
        validate_records(records, progress=False)
    assert [e.path for e in info.value.errors] == [mask.absolute()]
    assert "lesion mask missing" in info.value.errors[0].problem


# ================================================================ discover() by manifest name

def test_discover_synthetic_by_profile(make_atlas_tree, make_child_tree):
    roots = config.synthetic_roots("quick")
    make_atlas_tree(root=roots["adult"], lesion_voxels={"r001s001": 2, "r002s001": 3})
    make_child_tree(root=roots["child"], lesion_voxels={("01", "1"): 4, ("01", "2"): 4})
    adult = discover("synthetic_adult", profile="quick", progress=False)
    child = discover("synthetic_child", profile="quick", progress=False)
    assert {r.dataset for r in adult} == {"synthetic_adult"} and len(adult) == 2
    assert {r.dataset for r in child} == {"synthetic_child"} and {r.domain for r in child} == {"child"}
    with pytest.raises(DataValidationError, match=r"lesionlib synth --profile gpu"):
        discover("synthetic_adult", profile="gpu")


def test_discover_real_from_env_and_override(monkeypatch, make_atlas_tree, tmp_path):
    with pytest.raises(ManifestError, match="ATLAS_V2_ROOT"):
        discover("atlas_v2")
    env_root = make_atlas_tree(root=tmp_path / "env_atlas", lesion_voxels={"r001s001": 2})
    cli_root = make_atlas_tree(root=tmp_path / "cli_atlas", lesion_voxels={"r001s001": 2, "r001s002": 2})
    monkeypatch.setenv("ATLAS_V2_ROOT", str(env_root))
    from_env = discover("atlas_v2", progress=False)
    assert len(from_env) == 1 and from_env[0].image_path.is_relative_to(env_root)
    assert from_env[0].dataset == "atlas_v2"
    assert len(discover("atlas_v2", root=cli_root, progress=False)) == 2
    monkeypatch.setenv("ATLAS_V2_ROOT", str(tmp_path / "typo"))
    with pytest.raises(DataValidationError, match="check the environment variable ATLAS_V2_ROOT"):
        discover("atlas_v2")


def test_discovery_leaves_dataset_untouched(make_child_tree):
    root = make_child_tree()
    before = snapshot(root)
    discover_child_bids(root)
    assert snapshot(root) == before


# ================================================================ lesion volume cache

def test_volume_cache_hit_and_invalidation(monkeypatch, make_atlas_tree, write_nifti, blob_mask, isolate):
    root = make_atlas_tree(lesion_voxels={"r001s001": 8, "r001s002": 27}, spacing_mm=3.0)
    calls: list[Path] = []
    real = discovery.mask_volume_ml

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(discovery, "mask_volume_ml", counting)
    first = discover_atlas(root)
    assert len(calls) == 2
    cache_file = isolate["results"] / "cache" / "lesion_volumes.json"
    assert cache_file.is_file()

    calls.clear()
    assert discover_atlas(root) == first       # same volumes...
    assert calls == []                         # ...without reading any mask

    mask = bids.atlas_mask_path(root, "r001s002")
    affine = nib.load(mask).affine
    write_nifti(mask, blob_mask((12, 12, 12), 30), affine, dtype=np.uint8)
    bump_mtime(mask)
    calls.clear()
    third = discover_atlas(root)
    assert calls == [mask.absolute()]          # only the changed mask is re-read
    assert third[1].lesion_volume_ml == pytest.approx(30 * 27 / 1000)
    assert third[0].lesion_volume_ml == first[0].lesion_volume_ml


def test_volume_cache_same_size_new_mtime_is_recomputed(tmp_path, write_nifti, blob_mask):
    mask = write_nifti("m.nii", blob_mask((6, 6, 6), 5), np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    cache = VolumeCache(tmp_path / "c.json")
    assert cache.volume_ml(mask) == pytest.approx(5 * 8 / 1000)
    write_nifti(mask, blob_mask((6, 6, 6), 7), np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)  # .nii: same size
    bump_mtime(mask)
    assert cache.volume_ml(mask) == pytest.approx(7 * 8 / 1000)
    assert (cache.hits, cache.misses) == (0, 2)
    cache.save()
    reopened = VolumeCache(tmp_path / "c.json")
    assert reopened.volume_ml(mask) == pytest.approx(7 * 8 / 1000) and reopened.hits == 1


def test_corrupt_volume_cache_is_rebuilt(make_atlas_tree, isolate):
    root = make_atlas_tree(lesion_voxels={"r001s001": 8})
    cache_file = isolate["results"] / "cache" / "lesion_volumes.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{not json")
    (record,) = discover_atlas(root)
    assert record.lesion_volume_ml == pytest.approx(8 * 27 / 1000)
    assert VolumeCache(cache_file).volume_ml(record.mask_path) == record.lesion_volume_ml


# ================================================================ validation: bad inputs

SHAPE = (8, 9, 10)
AFFINE = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 12], [0, 0, 2.5, -8], [0, 0, 0, 1]])


@pytest.fixture
def case(tmp_path, write_nifti, blob_mask):
    """One valid case (image + mask) in its own folder; returns (record, image path, mask path)."""
    image = write_nifti("case/img_T1w.nii.gz", np.random.default_rng(0).random(SHAPE, dtype=np.float32), AFFINE)
    mask = write_nifti("case/img_mask.nii.gz", blob_mask(SHAPE, 12), AFFINE, dtype=np.uint8)
    record = ImageRecord(dataset="toy", subject="01", session="1", image_path=image, mask_path=mask)
    return record, image, mask


def corrupt(kind: str, image: Path, mask: Path, write_nifti, blob_mask) -> Path:
    """Damage the case in one way; returns the file the error must name."""
    if kind == "truncated":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return image
    if kind == "empty":
        image.write_bytes(b"")
        return image
    if kind == "not_nifti":
        with gzip.open(image, "wb") as fh:
            fh.write(b"hello, I am not an image" * 20)
        return image
    if kind == "4d":
        write_nifti(image, np.ones(SHAPE + (2,), np.float32), AFFINE)
        return image
    if kind == "nan":
        data = np.ones(SHAPE, np.float32)
        data[1, 2, 3] = data[4, 4, 4] = np.nan
        data[0, 0, 0] = np.inf
        write_nifti(image, data, AFFINE)
        return image
    if kind == "no_orientation":
        img = nib.Nifti1Image(np.random.default_rng(1).random(SHAPE, dtype=np.float32), None)
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
        nib.save(img, image)
        return image
    if kind == "mask_shape":
        write_nifti(mask, blob_mask((8, 9, 11), 12), AFFINE, dtype=np.uint8)
        return mask
    if kind == "mask_nonbinary":
        data = blob_mask(SHAPE, 12).astype(np.float32)
        data[0, 0, 0] = 0.5
        data[1, 1, 1] = 2.0
        write_nifti(mask, data, AFFINE)
        return mask
    if kind == "mask_missing":
        mask.unlink()
        return mask
    if kind == "mask_affine":
        shifted = AFFINE.copy()
        shifted[0, 3] += 2.0
        write_nifti(mask, blob_mask(SHAPE, 12), shifted, dtype=np.uint8)
        return mask
    if kind == "mask_4d":
        write_nifti(mask, np.zeros(SHAPE + (3,), np.uint8), AFFINE)
        return mask
    if kind == "mask_nan":
        data = blob_mask(SHAPE, 12).astype(np.float32)
        data[2, 2, 2] = np.nan
        write_nifti(mask, data, AFFINE)
        return mask
    if kind == "complex":
        write_nifti(image, np.random.default_rng(2).random(SHAPE).astype(np.complex64), AFFINE)
        return image
    if kind == "rgb":
        rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        rgb["G"] = 7
        write_nifti(image, rgb, AFFINE)
        return image
    if kind == "huge_voxels":
        write_nifti(image, np.random.default_rng(3).random(SHAPE, dtype=np.float32), np.diag([1e6, 1e6, 1e6, 1.0]))
        return image
    if kind == "constant":
        write_nifti(image, np.zeros(SHAPE, np.int16), AFFINE)
        return image
    if kind == "mask_255":
        write_nifti(mask, blob_mask(SHAPE, 12) * 255, AFFINE, dtype=np.uint8)
        return mask
    if kind == "mask_labels":
        data = blob_mask(SHAPE, 12)
        data[0, 0, 0] = 2
        write_nifti(mask, data, AFFINE, dtype=np.int16)
        return mask
    if kind == "mask_all_lesion":
        write_nifti(mask, np.ones(SHAPE, np.uint8), AFFINE, dtype=np.uint8)
        return mask
    raise AssertionError(kind)


BAD_INPUTS = {
    "truncated": r"truncated or corrupt",
    "empty": r"file is empty \(0 bytes\)",
    "not_nifti": r"not a readable NIfTI image|could not read|truncated or corrupt",
    "4d": r"expected a 3D image, found 4D with shape \(8, 9, 10, 2\)",
    "nan": r"image has 3 non-finite voxels \(2 NaN, 1 inf\)",
    "no_orientation": r"no orientation: sform_code and qform_code are both 0",
    "mask_shape": r"mask is not on the grid of its image img_T1w\.nii\.gz \(shape \(8, 9, 11\) vs \(8, 9, 10\)\)",
    "mask_nonbinary": r"mask is not binary: 2 voxels have values other than 0 and 1 \(0\.5, 2\); "
                      r"values found: 0, 0\.5, 1, 2\. .*fslmaths MASK -bin MASK",
    "mask_missing": r"lesion mask missing: file does not exist",
    "mask_affine": r"mask is not on the grid of its image img_T1w\.nii\.gz .*up to 2 mm apart \(tolerance 0\.001 mm\)",
    "mask_4d": r"expected a 3D mask, found 4D",
    "mask_nan": r"mask has 1 non-finite voxels \(1 NaN, 0 inf\)",
    "complex": r"unsupported voxel data type complex64 \(NIfTI datatype code 32\)",
    "rgb": r"unsupported voxel data type RGB",
    "huge_voxels": r"implausible voxel size 1e\+06 x 1e\+06 x 1e\+06 mm \(expected 0\.1-10 mm per axis\)",
    "constant": r"image is constant \(every voxel is 0\)",
    "mask_255": r"mask is not binary: 12 voxels have values other than 0 and 1 \(255\); values found: 0, 255\.",
    "mask_labels": r"mask is not binary: 1 voxels have values other than 0 and 1 \(2\); values found: 0, 1, 2\.",
    "mask_all_lesion": r"every voxel of the mask is lesion",
}


def test_valid_case_passes_and_nothing_is_written(case, tmp_path):
    record, image, mask = case
    before = snapshot(tmp_path)
    validate_records([record], progress=False)
    report = check_record(record)
    assert report.ok and report.orientation == "LPS" and report.shape == SHAPE
    assert report.spacing_mm == pytest.approx((2.0, 2.0, 2.5)) and report.mask_voxels == 12
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_each_bad_input_gets_its_own_error_and_nothing_is_written(kind, case, tmp_path, write_nifti, blob_mask):
    record, image, mask = case
    bad_file = corrupt(kind, image, mask, write_nifti, blob_mask)
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationErrors) as info:
        validate_records([record], progress=False)
    errors = info.value.errors
    assert len(errors) == 1, [str(e) for e in errors]
    assert errors[0].path == bad_file
    assert re.search(BAD_INPUTS[kind], errors[0].problem), errors[0].problem
    assert str(info.value).startswith(str(bad_file))
    assert isinstance(info.value, DataValidationError)
    with pytest.raises(DataValidationError, match=BAD_INPUTS[kind]):
        load_case(record)
    assert snapshot(tmp_path) == before


def test_affine_within_tolerance_passes(case, write_nifti, blob_mask):
    record, image, mask = case
    nudged = AFFINE.copy()
    nudged[:3, 3] += 1e-5
    write_nifti(mask, blob_mask(SHAPE, 12), nudged, dtype=np.uint8)
    validate_records([record], progress=False)


def test_grid_mismatch_measures_millimetres():
    a = np.diag([1.0, 1.0, 1.0, 1.0])
    b = a.copy()
    b[:3, 3] = [3.0, 4.0, 0.0]
    assert voxel_displacement_mm(a, b, (10, 10, 10)) == pytest.approx(5.0)
    c = np.diag([1.0, 1.0, 1.1, 1.0])  # 10% longer z voxels: far corner moves 0.9 mm
    assert voxel_displacement_mm(a, c, (10, 10, 10)) == pytest.approx(0.9)


def test_all_failures_are_listed(tmp_path, write_nifti, blob_mask):
    records = []
    for sub in ("01", "02", "03"):
        image = write_nifti(f"{sub}/t1.nii.gz", np.random.default_rng(int(sub)).random(SHAPE, dtype=np.float32), AFFINE)
        mask = write_nifti(f"{sub}/mask.nii.gz", blob_mask(SHAPE, 3), AFFINE, dtype=np.uint8)
        records.append(ImageRecord(dataset="toy", subject=sub, session="1", image_path=image, mask_path=mask))
    records[0].image_path.write_bytes(b"")
    records[2].mask_path.unlink()
    with pytest.raises(DataValidationErrors) as info:
        validate_records(records, progress=False, n_jobs=2)
    assert [e.path for e in info.value.errors] == [records[0].image_path, records[2].mask_path]
    message = str(info.value)
    assert message.startswith(str(records[0].image_path))
    assert "2 problem(s) in 2 file(s)" in message and str(records[2].mask_path) in message


def test_unlabelled_and_duplicate_records(case):
    record, image, mask = case
    unlabelled = ImageRecord(dataset="toy", subject="01", session="1", image_path=image, mask_path=None)
    with pytest.raises(DataValidationErrors, match="no lesion mask recorded"):
        validate_records([unlabelled], progress=False)
    validate_records([unlabelled], progress=False, require_masks=False)
    img, no_mask = load_case(unlabelled)
    assert no_mask is None and img.shape == (8, 9, 10)
    with pytest.raises(DataValidationErrors, match="appears 2 times in dataset toy"):
        validate_records([record, record], progress=False)


def test_require_valid_purposes(case, write_nifti, caplog):
    from lesionlib.data.validate import require_valid

    record, image, mask = case
    write_nifti(mask, np.zeros(SHAPE, np.uint8), AFFINE, dtype=np.uint8)
    with pytest.raises(DataValidationErrors, match="lesion mask is empty .*training case needs a lesion"):
        require_valid([record], purpose="train")
    caplog.set_level("WARNING")
    [report] = require_valid([record], purpose="evaluate")
    assert report.ok and report.mask_voxels == 0 and "kept for evaluation" in caplog.text
    mask.unlink()  # prediction does not read masks
    [report] = require_valid([record], purpose="predict")
    assert report.ok and report.mask_voxels is None
    with pytest.raises(ValueError, match="purpose must be one of"):
        require_valid([record], purpose="fit")
    # the same record twice (a case in both training and validation) is one case, not a duplicate subject
    assert len(require_valid([record, record], purpose="predict")) == 1
    twin = dataclasses.replace(record, image_path=mask)
    with pytest.raises(DataValidationErrors, match="appears 2 times"):
        require_valid([record, twin], purpose="predict")


def test_passed_records_are_cached_by_file_identity(case, write_nifti, blob_mask, monkeypatch):
    from lesionlib.data import validate

    record, image, mask = case
    reads = []
    real_load = validate.load_nifti
    monkeypatch.setattr(validate, "load_nifti", lambda path, **kw: reads.append(Path(path)) or real_load(path, **kw))
    validate.check_record(record)
    validate.check_record(record)
    assert len(reads) == 4  # files written just now are always read again (racy mtime)
    monkeypatch.setattr(validate, "_RACY_NS", 0)
    validate.check_record(record)
    reads.clear()
    assert validate.check_record(record).ok and validate.check_record(record, purpose="evaluate").ok and not reads
    write_nifti(mask, blob_mask(SHAPE, 12) * 255, AFFINE, dtype=np.uint8)  # same size, new content
    assert not validate.check_record(record).ok and reads == [image, mask]


# ================================================================ load_case: RAS reorientation

def test_load_case_reorients_lps_to_ras_keeping_world_coordinates(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 15}, shape=(10, 12, 8),
                           spacing_mm=(3.0, 2.0, 3.6), orientation="LPS")
    (record,) = discover_child_bids(root)
    raw_img, raw_mask = nib.load(record.image_path), nib.load(record.mask_path)
    assert nib.aff2axcodes(raw_img.affine) == ("L", "P", "S")
    image, mask = load_case(record)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S") == nib.aff2axcodes(mask.affine)
    assert np.allclose(image.affine, mask.affine) and image.shape == mask.shape == (10, 12, 8)
    assert mask.get_data_dtype() == np.uint8

    raw = np.asarray(raw_img.dataobj)
    ras = np.asarray(image.dataobj)
    ijk = np.indices(raw.shape).reshape(3, -1)
    world = raw_img.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    ijk_ras = np.rint(np.linalg.inv(image.affine) @ world)[:3].astype(int)
    # every voxel: same value at the same world point
    assert np.array_equal(ras[tuple(ijk_ras)], raw[tuple(ijk)])

    def lesion_world(img: nib.Nifti1Image) -> set[tuple[float, ...]]:
        idx = np.argwhere(np.asarray(img.dataobj) > 0)
        pts = nib.affines.apply_affine(img.affine, idx)
        return {tuple(np.round(p, 3)) for p in pts}

    assert lesion_world(mask) == lesion_world(raw_mask) and len(lesion_world(mask)) == 15
    # voxel sizes follow their axes (no resampling)
    assert nib.affines.voxel_sizes(image.affine) == pytest.approx((3.0, 2.0, 3.6))


def test_load_case_of_ras_image_is_unchanged(make_atlas_tree):
    root = make_atlas_tree(lesion_voxels={"r001s001": 8})
    (record,) = discover_atlas(root)
    image, mask = load_case(record)
    raw = nib.load(record.image_path)
    assert np.array_equal(image.affine, raw.affine)
    assert np.array_equal(np.asarray(image.dataobj), np.asarray(raw.dataobj))
    assert int(np.asarray(mask.dataobj).sum()) == 8


# ================================================================ records table and CLI

def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lesionlib")
    data_cli.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_records_table(make_child_tree):
    records = discover_child_bids(make_child_tree())
    table = records_table(records)
    assert len(table) == 4 and list(table["case_id"]) == [r.case_id for r in records]
    assert {"image_path", "mask_path", "lesion_volume_ml", "age_months", "site"} <= set(table.columns)


def test_cli_validate_default_synthetic_datasets(make_atlas_tree, make_child_tree, caplog):
    roots = config.synthetic_roots("quick")
    make_atlas_tree(root=roots["adult"], lesion_voxels={"r001s001": 2, "r002s001": 30})
    make_child_tree(root=roots["child"])
    caplog.set_level("INFO")
    assert run_cli(["validate", "--no-progress"]) == 0
    text = caplog.text
    assert "synthetic_adult: 2 records, 2 valid; lesion volume 0.054-0.81 mL" in text
    assert "synthetic_child: 4 records, 4 valid" in text and "orientation LPS x4" in text


def test_cli_validate_fails_with_exit_code_1(make_atlas_tree, capsys, isolate):
    from lesionlib.cli import main

    root = make_atlas_tree(lesion_voxels={"r001s001": 2, "r001s002": 3})
    bad = bids.atlas_mask_path(root, "r001s001")
    bad.write_bytes(b"")
    before = snapshot(root, isolate["results"])
    assert main(["validate", "--dataset", "atlas_v2", "--root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: file is empty (0 bytes)" in err.splitlines() and "Traceback" not in err
    assert snapshot(root, isolate["results"]) == before  # not even the lesion-volume cache
    assert main(["validate", "--dataset", "atlas_v2", "--dataset", "child_cohort", "--root", str(root)]) == 2
    assert main(["validate", "--dataset", "atlas_v2"]) == 1  # no ATLAS_V2_ROOT: one line, no traceback
    err = capsys.readouterr().err
    assert "ATLAS_V2_ROOT" in err and "Traceback" not in err
    # once valid, the volume cache is written
    make_atlas_tree(root=root, lesion_voxels={"r001s001": 2, "r001s002": 3})
    assert main(["validate", "--dataset", "atlas_v2", "--root", str(root), "--no-progress"]) == 0
    assert discovery.default_volume_cache_path().is_file()


def test_cli_validate_purpose_decides_about_empty_masks(make_child_tree, capsys):
    from lesionlib.cli import main

    root = make_child_tree(lesion_voxels={("01", "1"): 0, ("01", "2"): 4, ("02", "1"): 5})
    empty = bids.child_mask_path(root, "01", "1")
    assert main(["validate", "--dataset", "child_cohort", "--root", str(root), "--no-progress"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if str(empty) in line] == [
        f"{empty}: lesion mask is empty (no voxel is 1): a training case needs a lesion to learn from; "
        "fix the mask or leave the case out of the training set"]
    assert main(["validate", "--dataset", "child_cohort", "--root", str(root), "--no-progress",
                 "--purpose", "evaluate"]) == 0


def test_cli_discover_writes_csv(make_child_tree, tmp_path, capsys):
    root = make_child_tree()
    out = tmp_path / "out" / "records.csv"
    assert run_cli(["discover", "--dataset", "child_cohort", "--root", str(root), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"subject": str, "session": str})
    assert list(table["subject"]) == ["01", "01", "02", "02"]
    assert table["lesion_volume_ml"].notna().all()
    assert run_cli(["discover", "--dataset", "child_cohort", "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("case_id,dataset,subject")


def test_participants_lesion_hemisphere_reaches_the_records(make_child_tree):
    root = make_child_tree(lesion_voxels={("01", "1"): 5, ("02", "1"): 6})
    (root / "participants.tsv").write_text("participant_id\tage_months\tsex\tsite\tlesion_hemisphere\n"
                                           "sub-01\t20\tF\tC01\tLeft\nsub-02\t30\tM\tC02\tn/a\n")
    records = {r.subject: r for r in discover_child_bids(root)}
    assert records["01"].extra == {"lesion_hemisphere": "left"} and records["02"].extra == {}
    (root / "participants.tsv").write_text("participant_id\tlesion_hemisphere\nsub-01\tboth\nsub-02\tright\n")
    with pytest.raises(DataValidationError, match="lesion_hemisphere of sub-01 must be 'left' or 'right'"):
        discover_child_bids(root)
