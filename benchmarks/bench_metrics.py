"""Benchmark: all lesionlib metrics of a case against MONAI's Dice + HD + HD95, same run.

Run from the project root::

    ~/.cache/lesionlib/venv/bin/python benchmarks/bench_metrics.py [--repeats 7]

Cases are 197x233x189 masks at 1 mm (the MNI152 2009a grid of ATLAS v2.0): a small
(~1.5 mL) and a large (~110 mL) irregular lesion, each with a prediction that is shifted,
differently shaped and carries a small false positive; plus a "fragmented" prediction (a
lesion broken into speckles, much surface) as a harder case. For each case the script
reports the median wall time of

* ``ours``: :func:`lesionlib.metrics.case_metrics` (all 17 values: Dice, HD, HD95, ASSD,
  volumes, lesion-wise F1, counts, precision, recall) from NumPy boolean arrays;
* ``monai``: ``DiceMetric`` + ``HausdorffDistanceMetric()`` + ``HausdorffDistanceMetric(percentile=95)``
  from float tensors (tensor conversion not timed), and ``monai_hd95`` alone;

and the ratios. Goal: ``ours <= monai_hd95``. The values are checked to agree (1e-6).
When CUDA is available it also times the torch path on the GPU (``case_metrics`` with CUDA
tensors, and the distance metrics alone) and MONAI with CUDA tensors.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from lesionlib.metrics import case_metrics, surface_distances_torch
from lesionlib.metrics.surface_torch import union_bbox_torch

log = logging.getLogger("bench_metrics")

SHAPE = (197, 233, 189)
SPACING_MM = (1.0, 1.0, 1.0)


def irregular_blob(center: tuple[float, ...], radius_vox: float, seed: int, roughness: float = 0.35) -> np.ndarray:
    """An ellipsoid-like lesion with a bumpy border (distance field perturbed by smooth noise)."""
    rng = np.random.default_rng(seed)
    idx = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    dist2 = sum(((i - c) / radius_vox) ** 2 for i, c in zip(idx, center))
    box = tuple(slice(max(0, int(c - 2 * radius_vox)), int(c + 2 * radius_vox)) for c in center)
    noise = np.zeros(SHAPE, np.float32)
    local = ndimage.gaussian_filter(rng.standard_normal([b.stop - b.start for b in box]).astype(np.float32), 3)
    noise[box] = local / (local.std() + 1e-12)
    return dist2 + roughness * noise < 1.0


def make_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cases = {}
    for name, center, radius in (("small", (120, 90, 60), 7.0), ("large", (90, 120, 95), 30.0)):
        gt = irregular_blob(center, radius, seed=1)
        pred = irregular_blob(tuple(c + 2 for c in center), radius * 1.05, seed=2)
        pred[40:43, 180:184, 140:142] = True  # a small false positive far away
        cases[name] = (pred, gt)
    gt = cases["large"][1]
    speckles = np.random.default_rng(5).random(SHAPE) < 0.3
    cases["fragmented"] = (ndimage.binary_dilation(gt, iterations=2) & speckles, gt)
    return cases


def median_seconds(fn: Callable[[], object], repeats: int, sync: bool = False) -> float:
    fn()  # warm-up (imports, caches, CUDA kernels)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def monai_callables(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, Callable[[], float]]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    def dice() -> float:
        return DiceMetric(include_background=True)(pred, gt).item()

    def hd(percentile: float | None) -> float:
        metric = HausdorffDistanceMetric(include_background=True, percentile=percentile)
        return metric(pred, gt, spacing=list(SPACING_MM)).item()

    return {"dice": dice, "hd": lambda: hd(None), "hd95": lambda: hd(95.0)}


def bench_cpu(cases: dict[str, tuple[np.ndarray, np.ndarray]], repeats: int) -> None:
    log.info("CPU (%s, %d torch threads)", platform.processor() or platform.machine(), torch.get_num_threads())
    log.info(f"{'case':<11}{'pred mL':>8}{'gt mL':>8}{'ours ms':>9}{'MONAI D+HD+HD95 ms':>20}{'MONAI HD95 ms':>15}"
             f"{'ours/MONAI':>12}{'ours/HD95':>11}")
    for name, (pred, gt) in cases.items():
        p_t = torch.from_numpy(pred.astype(np.float32))[None, None]
        g_t = torch.from_numpy(gt.astype(np.float32))[None, None]
        monai = monai_callables(p_t, g_t)
        ours = case_metrics(pred, gt, SPACING_MM)
        theirs = {"dice": monai["dice"](), "hausdorff_mm": monai["hd"](), "hausdorff95_mm": monai["hd95"]()}
        for key, value in theirs.items():
            if not np.isclose(ours[key], value, rtol=1e-6, atol=1e-6):
                raise AssertionError(f"{name}: {key} ours {ours[key]} vs MONAI {value}")
        t_ours = median_seconds(lambda: case_metrics(pred, gt, SPACING_MM), repeats)
        t_monai = median_seconds(lambda: (monai["dice"](), monai["hd"](), monai["hd95"]()), repeats)
        t_hd95 = median_seconds(monai["hd95"], repeats)
        log.info(f"{name:<11}{ours['pred_volume_ml']:>8.1f}{ours['gt_volume_ml']:>8.1f}{1e3 * t_ours:>9.1f}"
                 f"{1e3 * t_monai:>20.1f}{1e3 * t_hd95:>15.1f}{t_ours / t_monai:>12.3f}{t_ours / t_hd95:>11.3f}")


def bench_gpu(cases: dict[str, tuple[np.ndarray, np.ndarray]], repeats: int) -> None:
    device = torch.device("cuda")
    log.info("GPU: %s", torch.cuda.get_device_name(device))
    log.info(f"{'case':<11}{'all ours ms':>12}{'distances ms':>14}{'MONAI D+HD+HD95 (CUDA) ms':>27}{'vs CPU ok':>10}")
    for name, (pred, gt) in cases.items():
        p, g = torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device)
        cpu = case_metrics(pred, gt, SPACING_MM)
        gpu = case_metrics(p, g, SPACING_MM)
        agree = all(np.isclose(cpu[k], gpu[k], rtol=1e-9, equal_nan=True) for k in cpu)

        def distances_only() -> None:
            box = union_bbox_torch(p, g)
            d = surface_distances_torch(p[box], g[box], SPACING_MM)
            d.hausdorff(), d.hausdorff(95.0), d.assd()

        t_all = median_seconds(lambda: case_metrics(p, g, SPACING_MM), repeats, sync=True)
        t_dist = median_seconds(distances_only, repeats, sync=True)
        monai = monai_callables(p.float()[None, None], g.float()[None, None])
        t_monai = median_seconds(lambda: (monai["dice"](), monai["hd"](), monai["hd95"]()), max(1, repeats // 2), sync=True)
        log.info(f"{name:<11}{1e3 * t_all:>12.1f}{1e3 * t_dist:>14.1f}{1e3 * t_monai:>27.1f}{str(agree):>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per measurement (median reported)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU part even if CUDA is available")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")
    log.info("grid %s, spacing %s mm, median of %d runs; torch %s", SHAPE, SPACING_MM, args.repeats, torch.__version__)
    cases = make_cases()
    bench_cpu(cases, args.repeats)
    if torch.cuda.is_available() and not args.no_gpu:
        bench_gpu(cases, args.repeats)
    else:
        log.info("no CUDA device: GPU path not timed")


if __name__ == "__main__":
    main()
