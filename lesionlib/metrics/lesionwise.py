"""Lesion-wise detection metrics with the ATLAS R2.0 challenge definitions.

Definitions (ATLAS R2.0 / ISLES'22 evaluation code)
---------------------------------------------------
* Lesions are the connected components of each mask with 26-connectivity in 3D (full
  connectivity, ``ndim``-connectivity in general).
* A ground-truth lesion touched by at least one predicted voxel is a true positive (TP),
  otherwise a false negative (FN).
* A predicted lesion that touches no ground-truth voxel is a false positive (FP).
* Lesion-wise F1 = TP / (TP + (FP + FN) / 2); 1.0 when both masks are empty.
* Lesion count difference ("simple lesion count") = |#predicted lesions - #true lesions|.

Note that TP counts ground-truth lesions: one predicted component covering two true
lesions gives two TPs, and two predicted fragments of one true lesion give one TP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionlib.metrics._masks import as_bool_mask, check_pair, union_bbox

__all__ = ["LesionCounts", "lesion_counts", "lesion_wise_f1", "lesion_count_difference"]


@dataclass(frozen=True)
class LesionCounts:
    """Connected-component detection counts of one case (see module docstring)."""

    tp: int
    fp: int
    fn: int
    n_pred: int
    n_gt: int

    @property
    def f1(self) -> float:
        """TP / (TP + (FP + FN) / 2); 1.0 when there is no lesion in either mask."""
        if self.tp + self.fp + self.fn == 0:
            return 1.0
        return self.tp / (self.tp + (self.fp + self.fn) / 2)

    @property
    def count_difference(self) -> int:
        """|#predicted lesions - #true lesions| (ATLAS "simple lesion count")."""
        return abs(self.n_pred - self.n_gt)


def lesion_counts_cropped(pred: np.ndarray, gt: np.ndarray) -> LesionCounts:
    """:func:`lesion_counts` for validated boolean masks (cropping does not change components)."""
    structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
    gt_labels, n_gt = ndimage.label(gt, structure=structure)
    pred_labels, n_pred = ndimage.label(pred, structure=structure)
    overlap = pred & gt
    tp = int(np.unique(gt_labels[overlap]).size)  # labels are >= 1 inside the overlap
    pred_hit = int(np.unique(pred_labels[overlap]).size)
    return LesionCounts(tp=tp, fp=n_pred - pred_hit, fn=n_gt - tp, n_pred=int(n_pred), n_gt=int(n_gt))


def lesion_counts(pred: np.ndarray, gt: np.ndarray) -> LesionCounts:
    """TP/FP/FN lesion counts of a predicted against a true mask of the same shape."""
    p, g = as_bool_mask(pred, "pred"), as_bool_mask(gt, "gt")
    check_pair(p, g)
    box = union_bbox(p, g)
    if box is None:
        return LesionCounts(0, 0, 0, 0, 0)
    return lesion_counts_cropped(p[box], g[box])


def lesion_wise_f1(pred: np.ndarray, gt: np.ndarray) -> float:
    """ATLAS R2.0 lesion-wise F1 score (26-connectivity); 1.0 when both masks are empty."""
    return lesion_counts(pred, gt).f1


def lesion_count_difference(pred: np.ndarray, gt: np.ndarray) -> int:
    """ATLAS R2.0 simple lesion count: absolute difference of the numbers of connected lesions."""
    return lesion_counts(pred, gt).count_difference
