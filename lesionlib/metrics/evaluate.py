"""Evaluate predicted NIfTI masks against ground truth, and summarise metric tables."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lesionlib.io import DataValidationError, atomic_path, load_nifti, spacing_mm
from lesionlib.metrics.case import DISTANCE_METRICS, METRIC_COLUMNS, case_metrics
from lesionlib.metrics.overlap import block_majority_dice, block_voxels_for, volume_ml
from lesionlib.space import grid_mismatch

if TYPE_CHECKING:
    import torch

__all__ = ["evaluate_files", "evaluate_records", "load_mask_pair", "resolution_ceiling", "summarise_table"]

log = logging.getLogger(__name__)



def load_mask_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Load a predicted and a true mask that must lie on the same voxel grid.

    Returns
    -------
    pred, gt
        Boolean arrays ``(X, Y, Z)`` in the files' own voxel order (no reorientation is
        needed, or done, since both share one grid); any non-zero voxel is lesion.
    spacing_mm
        Voxel size per array axis in mm, from the affine.

    Raises
    ------
    DataValidationError
        Unreadable files, NaN voxels, or different shapes/affines (the message names both files).
        Masks on different grids are never resampled silently.
    """
    pred_img, gt_img = load_nifti(pred_path), load_nifti(gt_path)
    mismatch = grid_mismatch(pred_img, gt_img)
    if mismatch:
        raise DataValidationError(
            pred_path,
            f"grid differs from ground truth {gt_path}: {mismatch} "
            f"(prediction {nib.aff2axcodes(pred_img.affine)} {np.round(pred_img.affine, 3).tolist()}, "
            f"ground truth {nib.aff2axcodes(gt_img.affine)} {np.round(gt_img.affine, 3).tolist()})",
        )
    masks = []
    for path, img in ((pred_path, pred_img), (gt_path, gt_img)):
        data = np.asanyarray(img.dataobj)
        if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
            raise DataValidationError(path, "mask contains NaN voxels")
        masks.append(data != 0)
    return masks[0], masks[1], spacing_mm(gt_img)


def evaluate_files(
    pairs: Iterable[tuple[str, Path, Path]],
    out_csv: Path | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Metrics of predicted NIfTI masks against ground truth, one row per case.

    Parameters
    ----------
    pairs
        ``(case_id, pred_path, gt_path)`` triples; the two files must share shape and affine.
    out_csv
        If given, the table is also written there as CSV (atomically: temporary file + rename).
    device
        Passed to :func:`lesionlib.metrics.case_metrics` (``'auto'`` uses CUDA when present).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        Columns ``case_id, pred_path, gt_path, spacing_mm`` (``'x*y*z'`` in mm) and the
        :data:`~lesionlib.metrics.METRIC_COLUMNS`.

    Raises
    ------
    DataValidationError
        A file is unreadable or prediction and ground truth lie on different grids.
    """
    pairs = list(pairs)
    rows = []
    for case_id, pred_path, gt_path in tqdm(pairs, desc="metrics", unit="case", disable=not progress):
        pred, gt, spacing = load_mask_pair(Path(pred_path), Path(gt_path))
        metrics = case_metrics(pred, gt, spacing, device=device)
        rows.append(
            {
                "case_id": case_id,
                "pred_path": str(pred_path),
                "gt_path": str(gt_path),
                "spacing_mm": "*".join(f"{s:.6g}" for s in spacing),
                **metrics,
            }
        )
        log.debug("%s: dice %.4f, HD %.2f mm", case_id, metrics["dice"], metrics["hausdorff_mm"])
    columns = ["case_id", "pred_path", "gt_path", "spacing_mm", *METRIC_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    n_undefined = int(table[list(DISTANCE_METRICS)].isna().any(axis=1).sum()) if len(table) else 0
    if n_undefined:
        log.warning("%d of %d cases have undefined surface distances (exactly one mask empty)", n_undefined, len(table))
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
        log.info("wrote %d rows to %s", len(table), out_csv)
    return table


def evaluate_records(
    records: Sequence[Any],
    pred_paths: Sequence[Path],
    *,
    metadata: Mapping[str, Any] | None = None,
    out_csv: Path | None = None,
    relative_to: Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Metrics of one prediction per :class:`~lesionlib.data.records.ImageRecord` against its mask.

    The table of :func:`evaluate_files` (one row per record, in order) with the record's
    ``subject``, ``session``, ``lesion_volume_ml`` (NaN when unknown) and ``image_path`` added,
    plus every ``metadata`` item as a constant column (e.g. ``method``, ``eval_set``, ``seed``).
    ``pred_path`` is written relative to ``relative_to`` when the prediction lies inside it, so a
    run folder can move. Written atomically to ``out_csv`` when given. ``device`` selects the
    metric backend (:func:`lesionlib.metrics.case.metric_device`: ``None`` NumPy, ``'auto'`` CUDA
    when available).

    Raises
    ------
    ValueError
        ``records`` and ``pred_paths`` differ in length.
    DataValidationError
        A record has no mask, a prediction is missing, or a pair lies on different grids.
    """
    from lesionlib.data.validate import require_valid

    records, pred_paths = list(records), [Path(p) for p in pred_paths]
    if len(records) != len(pred_paths):
        raise ValueError(f"{len(records)} records but {len(pred_paths)} predictions")
    require_valid(records, purpose="evaluate")  # e.g. a {0, 255} ground truth is an error, not "lesion"
    for rec, pred in zip(records, pred_paths):
        if rec.mask_path is None:
            raise DataValidationError(rec.image_path, "cannot evaluate: the record has no lesion mask")
        if not pred.is_file():
            raise DataValidationError(pred, f"prediction for {rec.case_id} is missing")
    table = evaluate_files([(r.case_id, p, Path(r.mask_path)) for r, p in zip(records, pred_paths)],
                           device=device, progress=progress)
    table.insert(1, "subject", [r.subject for r in records])
    table.insert(2, "session", [r.session for r in records])
    table["lesion_volume_ml"] = [np.nan if r.lesion_volume_ml is None else r.lesion_volume_ml for r in records]
    table["image_path"] = [str(r.image_path) for r in records]
    for key, value in (metadata or {}).items():
        table[key] = [value] * len(table)
    if relative_to is not None:
        base = Path(relative_to).resolve()
        table["pred_path"] = [str(p.resolve().relative_to(base)) if p.resolve().is_relative_to(base) else str(p)
                              for p in pred_paths]
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    return table


def summarise_table(
    df: pd.DataFrame, metrics: Sequence[str] | None = None, by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean, SD, median and the count of undefined (NaN) values of each metric.

    Undefined values (surface distances when exactly one mask is empty) are left out of
    mean/SD/median but reported in ``n_undefined`` next to ``n`` (all cases) and
    ``n_defined``, so that no case disappears from a table unnoticed.

    Parameters
    ----------
    df
        A table with one row per case, e.g. from :func:`evaluate_files` or a run's ``metrics.csv``.
    metrics
        Columns to summarise; default: those of :data:`METRIC_COLUMNS` present in ``df``.
    by
        Optional grouping column(s) (e.g. ``['method', 'eval_set']``).

    Returns
    -------
    pandas.DataFrame
        One row per metric (per group and metric with ``by``), columns
        ``n, n_defined, n_undefined, mean, sd, median`` (SD with ``ddof=1``; NaN for fewer than 2 values).
    """
    metrics = [m for m in (metrics or METRIC_COLUMNS) if m in df.columns]
    if not metrics:
        raise ValueError(f"none of the metric columns found in the table (columns: {list(df.columns)})")

    def one(frame: pd.DataFrame) -> pd.DataFrame:
        values = frame[metrics].apply(pd.to_numeric, errors="coerce")
        out = pd.DataFrame(
            {
                "n": len(values),
                "n_defined": values.notna().sum(),
                "n_undefined": values.isna().sum(),
                "mean": values.mean(),
                "sd": values.std(ddof=1),
                "median": values.median(),
            }
        )
        out.index.name = "metric"
        return out

    if by is None:
        return one(df)
    by = [by] if isinstance(by, str) else list(by)
    parts = {key: one(group) for key, group in df.groupby(by, sort=True, dropna=False)}
    result = pd.concat(parts, names=[*by, "metric"])
    return result


def resolution_ceiling(records: Sequence[Any], working_resolution_mm: float, factors: Sequence[int] = (2, 4),
                       *, progress: bool = False) -> pd.DataFrame:
    """Per mask, the Dice it keeps when seen on grids ``factors`` times coarser than the working grid.

    For each record's lesion mask (on its own grid, any orientation and spacing): the
    :func:`~lesionlib.metrics.overlap.block_majority_dice` with blocks ``factor x working_resolution_mm``
    wide (in voxels of the mask's own spacing, per axis): the Dice of a labelling constant on such
    blocks. What a network scores above it, it owes to detail rebuilt from features that lie that
    much coarser than its input (a ResNet encoder's stride-2 stem: factor 2; its first residual
    stage: 4).

    Returns
    -------
    pandas.DataFrame
        One row per record: ``case_id``, ``lesion_volume_ml`` (from the mask) and ``ceiling_<f>x``
        for each factor.

    Raises
    ------
    DataValidationError
        A mask that cannot be read (see :func:`lesionlib.io.load_nifti`).
    """
    rows = []
    for rec in tqdm(records, desc="resolution ceiling", disable=not progress):
        img = load_nifti(rec.mask_path, role="mask")
        mask = np.asarray(img.dataobj) > 0
        spacing = spacing_mm(img)
        row: dict[str, Any] = {"case_id": rec.case_id, "lesion_volume_ml": volume_ml(mask, spacing)}
        for factor in factors:
            blocks = block_voxels_for(factor * float(working_resolution_mm), spacing, mask.ndim)
            row[f"ceiling_{factor}x"] = block_majority_dice(mask, blocks)
        rows.append(row)
    return pd.DataFrame(rows)
