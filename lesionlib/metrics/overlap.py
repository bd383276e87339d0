"""Voxel-overlap metrics: Dice, precision, recall, volumes.

Conventions (shared with :func:`lesionlib.metrics.case_metrics`)
---------------------------------------------------------------
* Masks are arrays of any shape (normally 3D ``(X, Y, Z)`` voxel grids); any non-zero
  voxel is lesion.
* Both masks empty: Dice, precision and recall are 1 (a correct "no lesion").
* Exactly one mask empty: Dice, precision and recall are 0 (a complete miss, or a lesion
  predicted where there is none). None of these metrics is ever NaN.
* Volumes are in millilitres: voxel count x product of ``spacing_mm`` / 1000.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionlib.metrics._masks import as_bool_mask, check_pair, check_spacing

__all__ = [
    "dice",
    "precision",
    "recall",
    "volume_ml",
    "volume_difference_ml",
    "dice_from_counts",
    "precision_from_counts",
    "recall_from_counts",
]


def dice_from_counts(n_pred: int, n_gt: int, n_both: int) -> float:
    """Dice = 2|P∩G| / (|P| + |G|) from voxel counts; 1.0 when both masks are empty."""
    if n_pred + n_gt == 0:
        return 1.0
    return 2.0 * n_both / (n_pred + n_gt)


def precision_from_counts(n_pred: int, n_gt: int, n_both: int) -> float:
    """Precision = |P∩G| / |P|; 1.0 when both are empty, 0.0 when only the prediction is empty."""
    if n_pred == 0:
        return 1.0 if n_gt == 0 else 0.0
    return n_both / n_pred


def recall_from_counts(n_pred: int, n_gt: int, n_both: int) -> float:
    """Recall (sensitivity) = |P∩G| / |G|; 1.0 when both are empty, 0.0 when only the ground truth is empty."""
    if n_gt == 0:
        return 1.0 if n_pred == 0 else 0.0
    return n_both / n_gt


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    p, g = as_bool_mask(pred, "pred"), as_bool_mask(gt, "gt")
    check_pair(p, g)
    return int(np.count_nonzero(p)), int(np.count_nonzero(g)), int(np.count_nonzero(p & g))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient of two masks of equal shape (see module conventions)."""
    return dice_from_counts(*_counts(pred, gt))


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """Voxel-wise precision (positive predictive value) of ``pred`` against ``gt``."""
    return precision_from_counts(*_counts(pred, gt))


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    """Voxel-wise recall (sensitivity) of ``pred`` against ``gt``."""
    return recall_from_counts(*_counts(pred, gt))


def volume_ml(mask: np.ndarray, spacing_mm: Sequence[float] | float) -> float:
    """Volume of the non-zero voxels of ``mask`` in mL (``spacing_mm``: voxel size per axis, mm)."""
    m = as_bool_mask(mask)
    spacing = check_spacing(spacing_mm, m.ndim)
    return int(np.count_nonzero(m)) * float(np.prod(spacing)) / 1000.0


def volume_difference_ml(
    pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | float, *, absolute: bool = False
) -> float:
    """Predicted minus true lesion volume in mL (positive: over-segmentation); ``absolute=True`` gives its size."""
    p, g = as_bool_mask(pred, "pred"), as_bool_mask(gt, "gt")
    check_pair(p, g)
    spacing = check_spacing(spacing_mm, p.ndim)
    diff = (int(np.count_nonzero(p)) - int(np.count_nonzero(g))) * float(np.prod(spacing)) / 1000.0
    return abs(diff) if absolute else diff
