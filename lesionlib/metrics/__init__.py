"""Segmentation metrics: overlap, surface distances and ATLAS R2.0 lesion-wise detection.

============================  ===========================================================
:func:`case_metrics`          every metric of one case, sharing crop/surfaces/distances
:func:`evaluate_files`        predicted vs true NIfTI masks -> one table row per case (CSV)
:func:`summarise_table`       mean/SD/median per metric, with the count of undefined cases
:func:`resolution_ceiling`    Dice of each mask seen on blocks k x the working voxel
:func:`dice`, ...             single metrics: ``dice, precision, recall, volume_ml,
                              volume_difference_ml, hausdorff, hausdorff95, assd,
                              lesion_wise_f1, lesion_count_difference``
============================  ===========================================================

Conventions: masks are voxel arrays (any non-zero voxel is lesion), ``spacing_mm`` is the
voxel size per array axis in mm, distances are in mm and volumes in mL. Both masks empty:
Dice/precision/recall/lesion-wise F1 = 1 and distances = 0. Exactly one empty: those = 0
and distances NaN (undefined, counted by :func:`summarise_table`). Hausdorff distance, HD95 and
ASSD follow MONAI 1.6.1 exactly (:mod:`lesionlib.metrics.surface`); lesion-wise metrics
follow the ATLAS R2.0 challenge (:mod:`lesionlib.metrics.lesionwise`).
"""

from lesionlib.metrics.case import DISTANCE_METRICS, METRIC_COLUMNS, case_metrics, metric_device
from lesionlib.metrics.evaluate import (
    evaluate_files,
    evaluate_records,
    load_mask_pair,
    resolution_ceiling,
    summarise_table,
)
from lesionlib.metrics.lesionwise import LesionCounts, lesion_count_difference, lesion_counts, lesion_wise_f1
from lesionlib.metrics.overlap import (
    block_majority_dice,
    block_voxels_for,
    dice,
    precision,
    recall,
    volume_difference_ml,
    volume_ml,
)
from lesionlib.metrics.surface import SurfaceDistances, assd, hausdorff, hausdorff95, mask_edges, surface_distances

__all__ = [
    "METRIC_COLUMNS",
    "DISTANCE_METRICS",
    "case_metrics",
    "metric_device",
    "evaluate_files",
    "evaluate_records",
    "load_mask_pair",
    "summarise_table",
    "resolution_ceiling",
    "dice",
    "precision",
    "recall",
    "volume_ml",
    "volume_difference_ml",
    "block_majority_dice",
    "block_voxels_for",
    "SurfaceDistances",
    "mask_edges",
    "surface_distances",
    "hausdorff",
    "hausdorff95",
    "assd",
    "LesionCounts",
    "lesion_counts",
    "lesion_wise_f1",
    "lesion_count_difference",
    "distance_transform_edt_torch",
    "surface_distances_torch",
]


def __getattr__(name: str):
    """The torch path's functions, imported on first use: the metric tables, reports and the book never load torch."""
    if name in ("distance_transform_edt_torch", "surface_distances_torch"):
        from lesionlib.metrics import surface_torch

        return getattr(surface_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
