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
    "block_majority_dice",
    "block_voxels_for",
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


def block_majority_dice(mask: np.ndarray, block_voxels: int | Sequence[int]) -> float:
    """Dice of ``mask`` against itself seen on a grid of blocks: how much of its Dice rests on finer detail.

    The mask is cut into blocks of ``block_voxels`` voxels per axis (aligned at index 0; the last block
    of an axis may be partial), each block is labelled lesion when at least half of its voxels are,
    and the block labels are painted back onto the voxels. The result is the Dice that a labelling
    constant on those blocks reaches (by majority vote, close to the best such labelling). A network
    whose finest features lie ``k`` times coarser than its input (a ResNet encoder's stride-2 stem:
    ``k = 2``) must rebuild everything beyond ``block_majority_dice(mask, k)`` from its feature
    channels; small lesions lose most.

    Parameters
    ----------
    mask
        Lesion mask (any non-zero voxel is lesion), 1D to 3D.
    block_voxels
        Block size in voxels, one integer for every axis or one per axis (>= 1; 1 gives Dice 1).

    Returns
    -------
    float
        Dice in [0, 1]; 1.0 for an empty mask (an empty block labelling is exact).
    """
    m = as_bool_mask(mask)
    blocks = (block_voxels,) * m.ndim if np.isscalar(block_voxels) else tuple(block_voxels)
    if len(blocks) != m.ndim or any(int(b) != b or b < 1 for b in blocks):
        raise ValueError(f"block_voxels must be one positive integer or one per axis ({m.ndim}), got {block_voxels!r}")
    blocks = tuple(int(b) for b in blocks)
    padded_shape = tuple(-(-n // b) * b for n, b in zip(m.shape, blocks))
    padded = np.zeros(padded_shape, dtype=np.float32)
    padded[tuple(slice(0, n) for n in m.shape)] = m
    valid = np.zeros(padded_shape, dtype=np.float32)
    valid[tuple(slice(0, n) for n in m.shape)] = 1.0
    grouped = tuple(x for n, b in zip(padded_shape, blocks) for x in (n // b, b))
    block_axes = tuple(range(1, 2 * m.ndim, 2))
    lesion = padded.reshape(grouped).sum(axis=block_axes)
    inside = valid.reshape(grouped).sum(axis=block_axes)
    painted = lesion >= 0.5 * inside  # one label per block, painted back onto its voxels below
    for axis, b in enumerate(blocks):
        painted = np.repeat(painted, b, axis=axis)
    painted = painted[tuple(slice(0, n) for n in m.shape)]
    return dice(painted, m)


def block_voxels_for(block_mm: float, spacing_mm: Sequence[float] | float, ndim: int = 3) -> tuple[int, ...]:
    """Voxels per axis of a block ``block_mm`` wide on a grid of ``spacing_mm`` (at least 1 per axis)."""
    spacing = check_spacing(spacing_mm, ndim)
    if not block_mm > 0:
        raise ValueError(f"block_mm must be positive, got {block_mm!r}")
    return tuple(max(1, int(round(block_mm / s))) for s in spacing)
