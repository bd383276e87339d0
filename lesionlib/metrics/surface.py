"""Surface distances: Hausdorff distance (max and 95th percentile) and ASSD, in mm.

Definitions (identical to MONAI 1.6.1 ``HausdorffDistanceMetric`` /
``SurfaceDistanceMetric(symmetric=True)`` with ``distance_metric="euclidean"``)
-------------------------------------------------------------------------------------
* The *surface* (edge) of a mask is ``mask & ~binary_erosion(mask)`` with scipy's default
  structuring element (face connectivity: 6 neighbours in 3D) and voxels outside the
  array counted as background, as in ``monai.metrics.utils.get_mask_edges``.
* Directed surface distances: for every surface voxel of A, the Euclidean distance in mm
  (voxel index differences scaled by ``spacing_mm``) to the nearest surface voxel of B, as
  in ``monai.metrics.utils.get_surface_distance``.
* Hausdorff distance: ``max(max(d(P->G)), max(d(G->P)))``. HD95: the larger of the two
  directed 95th percentiles (linear interpolation, as ``torch.quantile``/``numpy.percentile``),
  *not* the 95th percentile of the pooled distances.
* ASSD: the mean of the pooled distances ``concat(d(P->G), d(G->P))``.

Empty masks
-----------
* Both empty: HD, HD95 and ASSD are 0.0 (nothing to disagree about). MONAI returns NaN here.
* Exactly one empty: all three are NaN (undefined; MONAI gives inf for HD and NaN for HD95).
  Tables count such cases instead of silently averaging over the rest (see
  :func:`lesionlib.metrics.summarise_table`).

Computation
-----------
On CPU, both masks are cropped to the bounding box of their union, surfaces are found by
erosion, and nearest surface voxels come from a k-d tree over the scaled surface-voxel
coordinates (exact; faster than a dense distance transform for lesion-sized surfaces).
The torch path in :mod:`lesionlib.metrics.surface_torch` computes the same distances with
an exact separable distance transform on any torch device (used for CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

from lesionlib.metrics._masks import as_bool_mask, check_pair, check_spacing, union_bbox

__all__ = [
    "SurfaceDistances",
    "mask_edges",
    "surface_distances",
    "hausdorff",
    "hausdorff95",
    "assd",
]


class SurfaceDistances(NamedTuple):
    """Directed surface distances of one case, in mm (1D float64 arrays).

    ``pred_to_gt[i]``: distance from the i-th prediction surface voxel (C order) to the
    nearest ground-truth surface voxel; ``gt_to_pred`` the other way round. Both arrays are
    empty when both masks are empty; when exactly one mask is empty the distances are
    undefined and every statistic is NaN.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray
    pred_empty: bool
    gt_empty: bool

    @property
    def defined(self) -> bool:
        """False when exactly one of the masks is empty."""
        return self.pred_empty == self.gt_empty

    def hausdorff(self, percentile: float | None = None) -> float:
        """Maximum over both directions of the directed max (``percentile=None``) or percentile, in mm."""
        if not self.defined:
            return float("nan")
        if self.pred_empty:  # both empty
            return 0.0
        if percentile is None:
            return float(max(self.pred_to_gt.max(), self.gt_to_pred.max()))
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        return float(max(np.percentile(self.pred_to_gt, percentile), np.percentile(self.gt_to_pred, percentile)))

    def assd(self) -> float:
        """Average symmetric surface distance (mean of both directions' distances pooled), in mm."""
        if not self.defined:
            return float("nan")
        if self.pred_empty:
            return 0.0
        total = float(self.pred_to_gt.sum()) + float(self.gt_to_pred.sum())
        return total / (self.pred_to_gt.size + self.gt_to_pred.size)


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: ``mask & ~binary_erosion(mask)`` (face connectivity, outside = 0)."""
    mask = as_bool_mask(mask)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _nearest_distances(from_edges: np.ndarray, to_edges: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    tree = KDTree(np.argwhere(to_edges) * spacing, leafsize=32)
    return tree.query(np.argwhere(from_edges) * spacing, k=1)[0].astype(np.float64, copy=False)


def surface_distances_cropped(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> SurfaceDistances:
    """Like :func:`surface_distances` for boolean masks already cropped and validated (internal fast path)."""
    pred_empty, gt_empty = not pred.any(), not gt.any()
    empty = np.empty(0, dtype=np.float64)
    if pred_empty or gt_empty:
        return SurfaceDistances(empty, empty, pred_empty, gt_empty)
    sp = np.asarray(spacing, dtype=np.float64)
    edges_pred, edges_gt = mask_edges(pred), mask_edges(gt)
    return SurfaceDistances(
        _nearest_distances(edges_pred, edges_gt, sp), _nearest_distances(edges_gt, edges_pred, sp), False, False
    )


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | float) -> SurfaceDistances:
    """Directed surface distances (mm) between two masks of equal shape on a grid of voxel size ``spacing_mm``.

    ``spacing_mm`` is the voxel size along each array axis (e.g. from
    :func:`lesionlib.io.spacing_mm`); a scalar means isotropic voxels.
    """
    p, g = as_bool_mask(pred, "pred"), as_bool_mask(gt, "gt")
    check_pair(p, g)
    spacing = check_spacing(spacing_mm, p.ndim)
    box = union_bbox(p, g)
    if box is None:
        empty = np.empty(0, dtype=np.float64)
        return SurfaceDistances(empty, empty, True, True)
    return surface_distances_cropped(p[box], g[box], spacing)


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | float) -> float:
    """Symmetric Hausdorff distance (maximum) in mm; 0 if both masks are empty, NaN if one is."""
    return surface_distances(pred, gt, spacing_mm).hausdorff()


def hausdorff95(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | float) -> float:
    """MONAI's 95th-percentile Hausdorff distance in mm; 0 if both masks are empty, NaN if one is."""
    return surface_distances(pred, gt, spacing_mm).hausdorff(95.0)


def assd(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | float) -> float:
    """Average symmetric surface distance in mm; 0 if both masks are empty, NaN if one is."""
    return surface_distances(pred, gt, spacing_mm).assd()
