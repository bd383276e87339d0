"""Tests of lesionlib.metrics: brute-force references, MONAI agreement, ATLAS definitions, files."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from lesionlib.io import DataValidationError, save_nifti_atomic
from lesionlib.metrics import (
    DISTANCE_METRICS,
    METRIC_COLUMNS,
    assd,
    case_metrics,
    dice,
    distance_transform_edt_torch,
    evaluate_files,
    hausdorff,
    hausdorff95,
    lesion_count_difference,
    lesion_counts,
    lesion_wise_f1,
    precision,
    recall,
    summarise_table,
    volume_difference_ml,
)

MNI_SHAPE = (197, 233, 189)


# ----------------------------------------------------------------------------- references
def reference_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels written out longhand: in the mask with a face neighbour outside it (or off the grid)."""
    padded = np.pad(mask, 1, constant_values=False)
    surface = np.zeros_like(mask)
    for idx in np.argwhere(mask):
        i, j, k = idx + 1
        neighbours = [
            padded[i - 1, j, k], padded[i + 1, j, k],
            padded[i, j - 1, k], padded[i, j + 1, k],
            padded[i, j, k - 1], padded[i, j, k + 1],
        ]  # fmt: skip
        surface[tuple(idx)] = not all(neighbours)
    return surface


def reference_distances(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """HD, HD95, ASSD from the full matrix of pairwise surface-voxel distances (mm)."""
    if not pred.any() and not gt.any():
        return {"hausdorff_mm": 0.0, "hausdorff95_mm": 0.0, "assd_mm": 0.0}
    if not pred.any() or not gt.any():
        return {"hausdorff_mm": np.nan, "hausdorff95_mm": np.nan, "assd_mm": np.nan}
    sp = np.asarray(spacing)
    a = np.argwhere(reference_surface(pred)) * sp
    b = np.argwhere(reference_surface(gt)) * sp
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    d_ab, d_ba = pairwise.min(axis=1), pairwise.min(axis=0)
    return {
        "hausdorff_mm": max(d_ab.max(), d_ba.max()),
        "hausdorff95_mm": max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)),
        "assd_mm": np.concatenate([d_ab, d_ba]).mean(),
    }


def random_blobs(shape: tuple[int, ...], seed: int, fraction: float = 0.08, sigma: float = 2.0) -> np.ndarray:
    """Lesion-like masks: thresholded smoothed noise (several blobs of irregular shape)."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def monai_values(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    g = torch.from_numpy(gt.astype(np.float32))[None, None]
    sp = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": DiceMetric(include_background=True)(p, g).item(),
            "hausdorff_mm": HausdorffDistanceMetric(include_background=True)(p, g, spacing=sp).item(),
            "hausdorff95_mm": HausdorffDistanceMetric(include_background=True, percentile=95)(p, g, spacing=sp).item(),
            "assd_mm": SurfaceDistanceMetric(include_background=True, symmetric=True)(p, g, spacing=sp).item(),
        }


# ----------------------------------------------------------------------------- strategies
small_masks = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)).flatmap(
    lambda shape: st.tuples(arrays(bool, shape), arrays(bool, shape))
)
spacings = st.tuples(*[st.floats(0.3, 3.0, allow_nan=False) for _ in range(3)])


# ----------------------------------------------------------------------------- properties
@settings(max_examples=80, deadline=None)
@given(masks=small_masks, spacing=spacings)
def test_distances_match_brute_force_reference(masks, spacing):
    pred, gt = masks
    ours = case_metrics(pred, gt, spacing)
    ref = reference_distances(pred, gt, spacing)
    for key, value in ref.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(hausdorff(pred, gt, spacing), ref["hausdorff_mm"], rtol=1e-9)
    np.testing.assert_allclose(hausdorff95(pred, gt, spacing), ref["hausdorff95_mm"], rtol=1e-9)
    np.testing.assert_allclose(assd(pred, gt, spacing), ref["assd_mm"], rtol=1e-9)


@settings(max_examples=80, deadline=None)
@given(masks=small_masks, spacing=spacings)
def test_overlap_and_volumes_match_definitions(masks, spacing):
    pred, gt = masks
    m = case_metrics(pred, gt, spacing)
    n_p, n_g, n_pg = pred.sum(), gt.sum(), (pred & gt).sum()
    voxel_ml = np.prod(spacing) / 1000
    expected_dice = 1.0 if n_p + n_g == 0 else 2 * n_pg / (n_p + n_g)
    assert m["dice"] == pytest.approx(expected_dice) == dice(pred, gt)
    if n_p and n_g:
        assert m["precision"] == pytest.approx(n_pg / n_p) == precision(pred, gt)
        assert m["recall"] == pytest.approx(n_pg / n_g) == recall(pred, gt)
    assert m["pred_volume_ml"] == pytest.approx(n_p * voxel_ml)
    assert m["volume_difference_ml"] == pytest.approx((n_p - n_g) * voxel_ml)
    assert m["volume_difference_ml"] == pytest.approx(volume_difference_ml(pred, gt, spacing))
    assert m["abs_volume_difference_ml"] == pytest.approx(volume_difference_ml(pred, gt, spacing, absolute=True))
    assert set(m) == set(METRIC_COLUMNS)


@settings(max_examples=60, deadline=None)
@given(masks=small_masks, spacing=spacings)
def test_metrics_are_symmetric_where_they_should_be(masks, spacing):
    pred, gt = masks
    a, b = case_metrics(pred, gt, spacing), case_metrics(gt, pred, spacing)
    for key in ("dice", "hausdorff_mm", "hausdorff95_mm", "assd_mm", "abs_volume_difference_ml"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)
    assert a["volume_difference_ml"] == pytest.approx(-b["volume_difference_ml"])
    assert a["precision"] == b["recall"]


@settings(max_examples=40, deadline=None)
@given(masks=small_masks, spacing=spacings)
def test_torch_path_equals_numpy_path(masks, spacing):
    pred, gt = masks
    a = case_metrics(pred, gt, spacing)
    b = case_metrics(torch.from_numpy(pred), torch.from_numpy(gt), spacing, device="cpu")  # torch path on CPU
    c = case_metrics(torch.from_numpy(pred), torch.from_numpy(gt), spacing)  # CPU tensors: NumPy path
    assert c == a or all(np.isnan(a[k]) and np.isnan(c[k]) for k in a if a[k] != c[k])
    for key in METRIC_COLUMNS:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_torch_distance_transform_equals_scipy():
    rng = np.random.default_rng(3)
    features = rng.random((2, 13, 9, 11)) < 0.02
    spacing = (0.8, 1.7, 3.0)
    ours = distance_transform_edt_torch(torch.from_numpy(features), spacing).numpy()
    for b in range(2):
        ref = ndimage.distance_transform_edt(~features[b], sampling=spacing)
        np.testing.assert_allclose(ours[b], ref, rtol=1e-12)


def test_shifted_cube_has_known_distances():
    gt = np.zeros((20, 20, 20), bool)
    gt[5:12, 5:12, 5:12] = True
    pred = np.roll(gt, 3, axis=2)
    spacing = (1.0, 1.0, 2.5)
    m = case_metrics(pred, gt, spacing)
    assert m["hausdorff_mm"] == pytest.approx(3 * 2.5)  # each face moved by 3 voxels of 2.5 mm
    assert m["dice"] == pytest.approx(2 * 7 * 7 * 4 / (2 * 343))


def test_masks_at_the_grid_border_count_as_surface():
    gt = np.zeros((6, 6, 6), bool)
    gt[:, :, :3] = True  # fills the grid along two axes: border voxels must be surface
    pred = np.zeros_like(gt)
    pred[:, :, :2] = True
    spacing = (1.0, 1.0, 1.0)
    ref = reference_distances(pred, gt, spacing)
    m = case_metrics(pred, gt, spacing)
    for key in DISTANCE_METRICS:
        assert m[key] == pytest.approx(ref[key])
    expected = monai_values(pred, gt, spacing)
    for key in ("hausdorff_mm", "hausdorff95_mm", "assd_mm"):
        assert m[key] == pytest.approx(expected[key], rel=1e-6)


# ----------------------------------------------------------------------------- MONAI agreement
@pytest.mark.parametrize(
    "seed, shape, spacing",
    [
        (0, (24, 24, 24), (1.0, 1.0, 1.0)),
        (1, (20, 28, 16), (0.8, 0.8, 3.0)),
        (2, (32, 18, 25), (1.3, 0.55, 2.2)),
        (3, (24, 24, 24), (2.0, 2.0, 2.0)),
    ],
)
def test_agrees_with_monai(seed, shape, spacing):
    gt = random_blobs(shape, seed)
    pred = random_blobs(shape, seed + 100, fraction=0.1) | ndimage.binary_erosion(gt)
    ours = case_metrics(pred, gt, spacing)
    theirs = monai_values(pred, gt, spacing)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


def test_agrees_with_monai_on_the_mni_grid():
    """One pair on the full 197x233x189 grid: a small and a large lesion, the prediction shifted."""
    idx = np.ogrid[tuple(slice(0, s) for s in MNI_SHAPE)]
    big = sum(((i - c) / r) ** 2 for i, c, r in zip(idx, (80, 120, 90), (25, 30, 20))) < 1
    small = sum(((i - c) / 4.0) ** 2 for i, c in zip(idx, (150, 60, 40))) < 1
    gt = big | small
    pred = np.roll(big, (3, -2, 1), axis=(0, 1, 2)) | ndimage.binary_dilation(small)
    pred[100:104, 200:203, 150:152] = True  # a false positive far away
    spacing = (1.0, 1.0, 1.0)
    ours = case_metrics(pred, gt, spacing)
    theirs = monai_values(pred, gt, spacing)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
    assert ours["lesion_tp"] == 2 and ours["lesion_fp"] == 1 and ours["lesion_fn"] == 0


# ----------------------------------------------------------------------------- ATLAS lesion-wise
def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: int) -> None:
    mask[tuple(slice(c, c + size) for c in corner)] = True


def test_atlas_two_lesions_one_missed_one_false_positive():
    gt = np.zeros((30, 30, 30), bool)
    _cube(gt, (2, 2, 2), 5)  # lesion A: detected
    _cube(gt, (20, 20, 20), 4)  # lesion B: missed
    pred = np.zeros_like(gt)
    _cube(pred, (4, 4, 4), 5)  # overlaps A partly
    _cube(pred, (2, 20, 2), 3)  # touches no ground truth: FP
    counts = lesion_counts(pred, gt)
    assert (counts.tp, counts.fp, counts.fn, counts.n_pred, counts.n_gt) == (1, 1, 1, 2, 2)
    assert lesion_wise_f1(pred, gt) == pytest.approx(1 / (1 + (1 + 1) / 2)) == 0.5
    assert lesion_count_difference(pred, gt) == 0
    m = case_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert m["lesion_wise_f1"] == 0.5 and m["lesion_count_difference"] == 0


def test_atlas_uses_26_connectivity_and_counts_true_lesions():
    gt = np.zeros((12, 12, 12), bool)
    gt[2, 2, 2] = gt[3, 3, 3] = True  # corner-touching voxels: ONE lesion under 26-connectivity
    gt[8:10, 8:10, 8:10] = True
    pred = np.zeros_like(gt)
    pred[3, 3, 3] = True  # one voxel of the first lesion is enough for a TP
    counts = lesion_counts(pred, gt)
    assert (counts.tp, counts.fn, counts.fp, counts.n_gt) == (1, 1, 0, 2)
    assert lesion_count_difference(pred, gt) == 1
    # one prediction bridging two true lesions: two TPs, no FP
    pred2 = np.zeros_like(gt)
    pred2[3:10, 3, 3] = True
    pred2[9, 3:10, 3] = True
    pred2[9, 9, 3:10] = True
    counts2 = lesion_counts(pred2, gt)
    assert (counts2.tp, counts2.fp, counts2.fn) == (2, 0, 0)
    assert lesion_wise_f1(pred2, gt) == 1.0


def test_atlas_perfect_and_empty_cases():
    gt = random_blobs((20, 20, 20), 7)
    assert lesion_wise_f1(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert lesion_wise_f1(empty, empty) == 1.0
    assert lesion_wise_f1(empty, gt) == 0.0
    assert lesion_wise_f1(gt, empty) == 0.0
    assert lesion_count_difference(gt, empty) == ndimage.label(gt, np.ones((3, 3, 3)))[1]


# ----------------------------------------------------------------------------- empty conventions
def test_both_empty_is_a_perfect_score():
    empty = np.zeros((8, 8, 8), np.uint8)
    m = case_metrics(empty, empty, (1.0, 2.0, 3.0))
    assert m["dice"] == m["precision"] == m["recall"] == m["lesion_wise_f1"] == 1.0
    assert m["hausdorff_mm"] == m["hausdorff95_mm"] == m["assd_mm"] == 0.0
    assert m["volume_difference_ml"] == 0.0 and m["lesion_count_difference"] == 0


@pytest.mark.parametrize("empty_side", ["pred", "gt"])
def test_one_empty_gives_zero_overlap_and_undefined_distances(empty_side):
    lesion = np.zeros((8, 8, 8), bool)
    lesion[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(lesion)
    pred, gt = (empty, lesion) if empty_side == "pred" else (lesion, empty)
    m = case_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert m["dice"] == m["precision"] == m["recall"] == m["lesion_wise_f1"] == 0.0
    assert all(np.isnan(m[k]) for k in DISTANCE_METRICS)
    assert abs(m["volume_difference_ml"]) == pytest.approx(27 / 1000)
    assert np.isnan(hausdorff(pred, gt, 1.0)) and np.isnan(hausdorff95(pred, gt, 1.0)) and np.isnan(assd(pred, gt, 1.0))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 1.0)
    with pytest.raises(ValueError, match="spacing_mm"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        case_metrics(np.full((4, 4, 4), np.nan), np.zeros((4, 4, 4)), 1.0)


# ----------------------------------------------------------------------------- files and tables
def _write_mask(path: Path, mask: np.ndarray, affine: np.ndarray) -> Path:
    return save_nifti_atomic(nib.Nifti1Image(mask.astype(np.uint8), affine), path)


def test_evaluate_files_reads_spacing_from_headers(tmp_path):
    affine = np.diag([0.8, 1.2, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    rotated = np.array([[0.0, -0.9, 0.0, 0.0], [1.1, 0.0, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    pairs, expected = [], []
    for i, aff in enumerate([affine, rotated, affine]):
        gt = random_blobs((16, 14, 10), seed=10 + i)
        pred = random_blobs((16, 14, 10), seed=20 + i) if i < 2 else np.zeros_like(gt)
        pred_path = _write_mask(tmp_path / f"pred_{i}.nii.gz", pred, aff)
        gt_path = _write_mask(tmp_path / f"gt_{i}.nii.gz", gt, aff)
        pairs.append((f"sub-{i:02d}_ses-1", pred_path, gt_path))
        stored_affine = nib.load(gt_path).affine  # float32 in the header, not our float64 matrix
        expected.append(case_metrics(pred, gt, np.sqrt((stored_affine[:3, :3] ** 2).sum(0))))
    out_csv = tmp_path / "out" / "metrics.csv"
    table = evaluate_files(pairs, out_csv=out_csv, progress=False)
    assert list(table["case_id"]) == [p[0] for p in pairs]
    assert table.loc[1, "spacing_mm"] == "1.1*0.9*2.5"
    for row, exp in zip(table.to_dict("records"), expected):
        for key in METRIC_COLUMNS:
            np.testing.assert_allclose(row[key], exp[key], rtol=1e-12, err_msg=key)
    reread = pd.read_csv(out_csv)
    assert len(reread) == 3 and np.isnan(reread.loc[2, "hausdorff_mm"])
    assert not [p for p in out_csv.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_evaluate_files_rejects_different_grids(tmp_path):
    gt = random_blobs((10, 10, 10), 1)
    gt_path = _write_mask(tmp_path / "gt.nii.gz", gt, np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    pred_path = _write_mask(tmp_path / "pred.nii.gz", gt, shifted)
    with pytest.raises(DataValidationError, match="grid differs") as info:
        evaluate_files([("c", pred_path, gt_path)], progress=False)
    assert str(pred_path) in str(info.value) and str(gt_path) in str(info.value)
    small_path = _write_mask(tmp_path / "small.nii.gz", gt[:9], np.eye(4))
    with pytest.raises(DataValidationError, match="shape"):
        evaluate_files([("c", small_path, gt_path)], progress=False)
    with pytest.raises(DataValidationError, match="does not exist"):
        evaluate_files([("c", tmp_path / "missing.nii.gz", gt_path)], progress=False)


def test_summarise_counts_undefined_cases_instead_of_dropping_them():
    df = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b"],
            "dice": [0.5, 0.7, 0.0, 1.0],
            "hausdorff_mm": [2.0, 4.0, np.nan, 0.0],
        }
    )
    s = summarise_table(df)
    assert s.loc["hausdorff_mm", "n"] == 4
    assert s.loc["hausdorff_mm", "n_undefined"] == 1 and s.loc["hausdorff_mm", "n_defined"] == 3
    assert s.loc["hausdorff_mm", "mean"] == pytest.approx(2.0)
    assert s.loc["dice", "sd"] == pytest.approx(np.std([0.5, 0.7, 0.0, 1.0], ddof=1))
    by = summarise_table(df, by="method")
    assert by.loc[("a", "hausdorff_mm"), "n_undefined"] == 1
    assert by.loc[("b", "dice"), "mean"] == 1.0


@settings(max_examples=50, deadline=None)
@given(masks=small_masks)
def test_union_bbox_is_the_tightest_box(masks):
    from lesionlib.metrics._masks import union_bbox

    pred, gt = masks
    box = union_bbox(pred, gt)
    union = pred | gt
    if not union.any():
        assert box is None
        return
    coords = np.argwhere(union)
    assert [(s.start, s.stop) for s in box] == list(zip(coords.min(0), coords.max(0) + 1))


def test_evaluate_records_labels_rows_and_refuses_missing_inputs(tmp_path):
    """One row per record, in order, with the record's fields and the metadata; clear errors otherwise."""
    import nibabel as nib

    from lesionlib.data.records import ImageRecord
    from lesionlib.io import DataValidationError
    from lesionlib.metrics import evaluate_records

    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[3:7, 3:7, 3:7] = 1
    records, preds = [], []
    for subject, pred in (("02", gt), ("01", np.zeros_like(gt))):
        mask = tmp_path / f"sub-{subject}_mask.nii.gz"
        nib.save(nib.Nifti1Image(gt, affine), mask)
        nib.save(nib.Nifti1Image(gt * 0.5 + 1.0, affine), tmp_path / f"sub-{subject}_T1w.nii.gz")
        out = tmp_path / "run" / f"sub-{subject}_pred.nii.gz"
        out.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(pred, affine), out)
        records.append(ImageRecord("toy", subject, "1", tmp_path / f"sub-{subject}_T1w.nii.gz", mask,
                                   lesion_volume_ml=None if subject == "01" else 0.768))
        preds.append(out)
    table = evaluate_records(records, preds, metadata={"method": "unet", "eval_set": "child_test"},
                             relative_to=tmp_path / "run", out_csv=tmp_path / "m.csv")
    assert table["subject"].tolist() == ["02", "01"]
    assert table["dice"].tolist() == [1.0, 0.0]
    assert table["lesion_volume_ml"].iloc[0] == pytest.approx(0.768) and np.isnan(table["lesion_volume_ml"].iloc[1])
    assert (table["method"] == "unet").all() and (table["eval_set"] == "child_test").all()
    assert table["pred_path"].tolist() == ["sub-02_pred.nii.gz", "sub-01_pred.nii.gz"]
    assert (tmp_path / "m.csv").is_file()
    with pytest.raises(ValueError, match="2 records but 1 predictions"):
        evaluate_records(records, preds[:1])
    with pytest.raises(DataValidationError, match="missing"):
        evaluate_records(records[:1], [tmp_path / "nowhere.nii.gz"])
    unlabelled = ImageRecord("toy", "03", "1", tmp_path / "sub-03_T1w.nii.gz", None)
    with pytest.raises(DataValidationError, match="no lesion mask"):
        evaluate_records([unlabelled], preds[:1])


# --------------------------------------------------------------------------- resolution ceiling
def _block_majority_reference(mask: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Loop-by-loop block labelling (independent of the vectorised implementation)."""
    out = np.zeros(mask.shape, dtype=bool)
    for i in range(0, mask.shape[0], blocks[0]):
        for j in range(0, mask.shape[1], blocks[1]):
            for k in range(0, mask.shape[2], blocks[2]):
                block = mask[i:i + blocks[0], j:j + blocks[1], k:k + blocks[2]]
                out[i:i + blocks[0], j:j + blocks[1], k:k + blocks[2]] = block.mean() >= 0.5
    return out


def test_block_majority_dice_matches_a_loop_reference_with_partial_and_anisotropic_blocks():
    from lesionlib.metrics import block_majority_dice, dice

    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((13, 11, 9)) > 0.93, iterations=1)
    for blocks in [(2, 2, 2), (3, 2, 4), (5, 5, 5), (1, 1, 1)]:
        expected = dice(_block_majority_reference(mask, blocks), mask)
        assert block_majority_dice(mask, blocks) == pytest.approx(expected)
    assert block_majority_dice(mask, 1) == 1.0


def test_block_majority_dice_edge_cases():
    from lesionlib.metrics import block_majority_dice, block_voxels_for

    cube = np.zeros((16, 16, 16), bool)
    cube[4:8, 8:12, 0:4] = True  # aligned with 2- and 4-voxel blocks
    assert block_majority_dice(cube, 2) == 1.0 and block_majority_dice(cube, 4) == 1.0
    single = np.zeros((8, 8, 8), bool)
    single[3, 3, 3] = True
    assert block_majority_dice(single, 2) == 0.0  # a lesion smaller than a block is lost
    assert block_majority_dice(np.zeros((4, 4, 4)), 2) == 1.0
    for bad in (0, 1.5, (2, 2)):
        with pytest.raises(ValueError):
            block_majority_dice(cube, bad)
    assert block_voxels_for(6.0, (1.0, 1.0, 1.5)) == (6, 6, 4)
    assert block_voxels_for(6.0, 3.0) == (2, 2, 2)


def test_resolution_ceiling_uses_blocks_in_mm_on_each_masks_own_grid(tmp_path):
    from lesionlib.data.records import ImageRecord
    from lesionlib.metrics import block_majority_dice, resolution_ceiling

    grid = np.indices((30, 24, 20)).astype(float)
    mask = ((grid[0] - 14.3) ** 2 + (grid[1] - 11.6) ** 2 + ((grid[2] - 9.2) * 1.5) ** 2) < 8.0 ** 2  # 8 mm ball
    affine = np.diag([1.0, 1.0, 1.5, 1.0])  # anisotropic: 6 mm blocks are 6 x 6 x 4 voxels
    path = tmp_path / "sub-01_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), path)
    rec = ImageRecord("toy", "01", "1", tmp_path / "sub-01_T1w.nii.gz", path)
    table = resolution_ceiling([rec], working_resolution_mm=3.0, factors=(2, 4))
    assert list(table.columns) == ["case_id", "lesion_volume_ml", "ceiling_2x", "ceiling_4x"]
    assert table.loc[0, "lesion_volume_ml"] == pytest.approx(mask.sum() * 1.5 / 1000)
    assert table.loc[0, "ceiling_2x"] == pytest.approx(block_majority_dice(mask, (6, 6, 4)))
    assert table.loc[0, "ceiling_4x"] == pytest.approx(block_majority_dice(mask, (12, 12, 8)))
    assert table.loc[0, "ceiling_4x"] < table.loc[0, "ceiling_2x"] < 1.0
