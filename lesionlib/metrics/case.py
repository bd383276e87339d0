"""All metrics of one case in one call, sharing the crop, surfaces and distances."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from lesionlib.metrics._masks import as_bool_mask, check_pair, check_spacing, union_bbox
from lesionlib.metrics.lesionwise import LesionCounts, lesion_counts_cropped
from lesionlib.metrics.overlap import dice_from_counts, precision_from_counts, recall_from_counts
from lesionlib.metrics.surface import SurfaceDistances, surface_distances_cropped

if TYPE_CHECKING:  # torch is imported where a torch path runs: tables, reports and the book never load it
    import torch

__all__ = ["METRIC_COLUMNS", "DISTANCE_METRICS", "case_metrics", "metric_device"]

#: Keys of :func:`case_metrics`, in table order.
METRIC_COLUMNS: tuple[str, ...] = (
    "dice",
    "hausdorff_mm",
    "hausdorff_penalised_mm",
    "hausdorff95_mm",
    "assd_mm",
    "volume_difference_ml",
    "abs_volume_difference_ml",
    "lesion_wise_f1",
    "lesion_count_difference",
    "precision",
    "recall",
    "pred_volume_ml",
    "gt_volume_ml",
    "pred_lesion_count",
    "gt_lesion_count",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
)

#: The metrics that are undefined (NaN) when exactly one mask is empty.
DISTANCE_METRICS: tuple[str, ...] = ("hausdorff_mm", "hausdorff95_mm", "assd_mm")

ArrayLike = Union[np.ndarray, "torch.Tensor"]


def _is_tensor(x: object) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (no tensor exists before torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def metric_device(pred: ArrayLike, gt: ArrayLike, device: str | torch.device | None) -> torch.device | None:
    """The torch device of the GPU/torch path, or ``None`` for the NumPy/k-d tree path.

    ``device=None``: the torch path on the tensors' device when ``pred`` or ``gt`` is a
    CUDA tensor, else the NumPy path (CPU tensors are converted: the k-d tree is faster
    on CPU). ``device='auto'``: CUDA when available, else the NumPy path. Anything else is
    passed to :class:`torch.device` and selects the torch path there (``'cuda'``,
    ``'cuda:1'``; ``'cpu'`` runs the torch path on CPU, which is slow but serves to check
    that both paths agree).
    """
    if device is None:
        for x in (pred, gt):
            if _is_tensor(x) and x.device.type != "cpu":
                return x.device
        return None
    import torch

    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device(device)


def _assemble(
    n_pred: int, n_gt: int, n_both: int, spacing: Sequence[float], dist: SurfaceDistances, lesions: LesionCounts
) -> dict[str, float]:
    voxel_ml = math.prod(spacing) / 1000.0
    pred_ml, gt_ml = n_pred * voxel_ml, n_gt * voxel_ml
    return {
        "dice": dice_from_counts(n_pred, n_gt, n_both),
        "hausdorff_mm": dist.hausdorff(),
        "hausdorff95_mm": dist.hausdorff(95.0),
        "assd_mm": dist.assd(),
        "volume_difference_ml": (n_pred - n_gt) * voxel_ml,
        "abs_volume_difference_ml": abs(n_pred - n_gt) * voxel_ml,
        "lesion_wise_f1": lesions.f1,
        "lesion_count_difference": lesions.count_difference,
        "precision": precision_from_counts(n_pred, n_gt, n_both),
        "recall": recall_from_counts(n_pred, n_gt, n_both),
        "pred_volume_ml": pred_ml,
        "gt_volume_ml": gt_ml,
        "pred_lesion_count": lesions.n_pred,
        "gt_lesion_count": lesions.n_gt,
        "lesion_tp": lesions.tp,
        "lesion_fp": lesions.fp,
        "lesion_fn": lesions.fn,
    }


def _empty_case(spacing: Sequence[float]) -> dict[str, float]:
    empty = np.empty(0, dtype=np.float64)
    return _assemble(0, 0, 0, spacing, SurfaceDistances(empty, empty, True, True), LesionCounts(0, 0, 0, 0, 0))


def case_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing_mm: Sequence[float] | float,
    *,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Every metric of one case: prediction ``pred`` against ground truth ``gt``.

    Parameters
    ----------
    pred, gt
        Masks of the same shape, normally ``(X, Y, Z)`` on one voxel grid; any non-zero voxel
        is lesion. NumPy arrays or torch tensors (a CUDA tensor selects the GPU path).
    spacing_mm
        Voxel size in mm along each array axis (anisotropic allowed; a scalar: isotropic).
    device
        ``None`` (default): NumPy path, or the GPU path for CUDA tensors; ``'auto'``: CUDA if available;
        or a torch device for the torch path (see :func:`metric_device`). All paths give the
        same numbers (distances agree to float64 rounding).

    Returns
    -------
    dict
        Keys :data:`METRIC_COLUMNS`: ``dice``, ``precision``, ``recall`` (voxel-wise);
        ``hausdorff_mm`` (maximum), ``hausdorff95_mm``, ``assd_mm`` (MONAI definitions, see
        :mod:`lesionlib.metrics.surface`); ``pred_volume_ml``, ``gt_volume_ml``,
        ``volume_difference_ml`` (pred - gt) and ``abs_volume_difference_ml``;
        ``lesion_wise_f1``, ``lesion_count_difference`` and the counts ``pred_lesion_count``,
        ``gt_lesion_count``, ``lesion_tp``, ``lesion_fp``, ``lesion_fn`` (ATLAS R2.0, see
        :mod:`lesionlib.metrics.lesionwise`); ``hausdorff_penalised_mm``: the Hausdorff distance,
        or the diagonal of the image (mm) where it is undefined, so that a method predicting
        nothing is not flattered by dropping its cases from the mean.

    Empty masks
    -----------
    Both empty: Dice, precision, recall and lesion-wise F1 are 1; distances are 0.
    Exactly one empty: Dice, precision, recall and lesion-wise F1 are 0; distances are NaN
    (undefined; count them, do not drop them — :func:`lesionlib.metrics.summarise_table` does).
    """
    torch_device = metric_device(pred, gt, device)
    if torch_device is not None:
        out = _case_metrics_torch(pred, gt, spacing_mm, torch_device)
    else:
        out = _case_metrics_numpy(pred, gt, spacing_mm)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (len(pred.shape),))
    diagonal_mm = float(np.linalg.norm(np.asarray(pred.shape, dtype=float) * spacing))
    hd = out["hausdorff_mm"]
    out["hausdorff_penalised_mm"] = diagonal_mm if math.isnan(hd) else hd
    return {k: out[k] for k in METRIC_COLUMNS}


def _case_metrics_numpy(pred: ArrayLike, gt: ArrayLike, spacing_mm: Sequence[float] | float) -> dict[str, float]:
    p, g = as_bool_mask(_to_numpy(pred), "pred"), as_bool_mask(_to_numpy(gt), "gt")
    check_pair(p, g)
    spacing = check_spacing(spacing_mm, p.ndim)
    box = union_bbox(p, g)
    if box is None:
        return _empty_case(spacing)
    p, g = p[box], g[box]
    n_pred, n_gt, n_both = int(np.count_nonzero(p)), int(np.count_nonzero(g)), int(np.count_nonzero(p & g))
    dist = surface_distances_cropped(p, g, spacing)
    return _assemble(n_pred, n_gt, n_both, spacing, dist, lesion_counts_cropped(p, g))


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x)


def _as_bool_tensor(x: ArrayLike, device: torch.device, name: str) -> torch.Tensor:
    import torch

    if isinstance(x, torch.Tensor):
        t = x.to(device)
    else:
        t = torch.as_tensor(np.ascontiguousarray(x), device=device)
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} contains NaN values")
    return t != 0


def _case_metrics_torch(
    pred: ArrayLike, gt: ArrayLike, spacing_mm: Sequence[float] | float, device: torch.device
) -> dict[str, float]:
    import torch

    from lesionlib.metrics.surface_torch import surface_distances_torch, union_bbox_torch

    p, g = _as_bool_tensor(pred, device, "pred"), _as_bool_tensor(gt, device, "gt")
    check_pair(p, g)
    spacing = check_spacing(spacing_mm, p.ndim)
    box = union_bbox_torch(p, g)
    if box is None:
        return _empty_case(spacing)
    p, g = p[box], g[box]
    n_pred, n_gt, n_both = (int(torch.count_nonzero(x)) for x in (p, g, p & g))
    dist = surface_distances_torch(p, g, spacing)
    lesions = lesion_counts_cropped(p.cpu().numpy(), g.cpu().numpy())  # no connected components in torch
    return _assemble(n_pred, n_gt, n_both, spacing, dist, lesions)
