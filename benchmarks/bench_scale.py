"""Memory, disk and time of the data steps at the paper's scale, projected from n = 1, 2, 4 subjects.

    ~/.cache/lesionlib/venv/bin/python benchmarks/bench_scale.py [--n 1 2 4] [--target 655] [--nnunet]

The paper trains on 655 ATLAS v2.0 cases of 197x233x189 voxels at 1 mm. This script generates a few
synthetic adults at 1 mm (``lesionlib.synth.generate_adult_cohort``: the same grid), then, for each n, in
a fresh Python process (so that its peak memory is its own), runs the steps whose cost grows with the
number of cases, on the first n subjects:

* ``discover_validate``: discovery of the ATLAS layout with lesion volumes, then ``require_valid``
  (every file read and checked);
* ``memory_cache``: ``lesionlib.train``'s memory cache, a MONAI ``CacheDataset`` of ``preprocessing`` at
  1 mm with the paper's 128^3 patch (load, reorient, resample, crop, z-score, pad), 1 worker thread; its
  bytes are those of the cached tensors' storage (``CacheDataset`` keeps contiguous copies of the crops);
* ``disk_cache``: the same volumes written by the disk cache (``PersistentDataset``, one ``.pt`` per case;
  the crop is a view and ``torch.save`` writes its whole storage: the full resampled grid);
* ``nnunet`` (with ``--nnunet``; about a minute per n on 2 cores, mostly nnU-Net's fixed start-up): nnU-Net
  v2's export, plan and preprocess (``NnUNetRun``, 3d_fullres, 2 processes, dataset integrity checked).

Per step: wall and CPU seconds (this process and its waited-for children), the peak RSS of the process
during the step (``VmHWM`` reset before each step through ``/proc/self/clear_refs``; for nnU-Net, which runs
in subprocesses, the largest child's ``ru_maxrss``), the memory it keeps (RSS after minus before), and the
bytes it writes. A line ``y = a + b n`` is fitted to each figure over the n values and evaluated at
``--target`` (655): the projection is a rate measured in this run times the number of cases, nothing more.

What it does not say. Every figure is measured on this machine's CPUs; the wall times are those of the
data steps only, on ``n_cpus`` cores, with 1 preprocessing thread (``CacheDataset`` and nnU-Net divide the
work over more workers on a larger host). GPU training time is not projected from these CPU figures. The
synthetic heads are zero outside the head, so the crop to the nonzero bounding box (which shrinks the memory
cache, not the disk cache) saves what it saves on them; ``lesionlib.resources.estimate_cache_bytes`` (the
full resampled grid, what ``cache: auto`` decides on) is printed beside the measured bytes.

Writes the whole result as JSON (``--json``; default ``<results>/benchmarks/bench_scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

MIB = 2**20
GIB = 2**30
PATCH = (128, 128, 128)
STEPS = ("discover_validate", "memory_cache", "disk_cache", "nnunet")


# ---------------------------------------------------------------------------------------------
# measuring one step (in the worker process)
# ---------------------------------------------------------------------------------------------

def _status_mib(key: str) -> float:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _measure(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn``; its own figures plus wall, CPU, peak and kept RSS (MiB) of the step."""
    reset = _reset_peak()
    rss0 = _status_mib("VmRSS")
    self0, child0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    extra = fn()
    wall = time.perf_counter() - t0
    self1, child1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(a, f) - getattr(b, f) for a, b in ((self1, self0), (child1, child0))
              for f in ("ru_utime", "ru_stime"))
    return {"wall_s": wall, "cpu_s": cpu, "rss_before_mib": rss0, "rss_after_mib": _status_mib("VmRSS"),
            "kept_rss_mib": _status_mib("VmRSS") - rss0,
            "peak_rss_mib": _status_mib("VmHWM") if reset else self1.ru_maxrss / 1024,
            "peak_rss_children_mib": child1.ru_maxrss / 1024, **extra}


def _subset(cohort: Path, n: int, out: Path) -> Path:
    """An ATLAS tree holding the first ``n`` subjects of ``cohort`` (symbolic links)."""
    subjects = sorted(cohort.glob("Training/R*/sub-*"))[:n]
    for subject in subjects:
        target = out / "Training" / subject.parent.name / subject.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(subject.resolve(), target_is_directory=True)
    return out


def worker(n: int, cohort: Path, work: Path, nnunet: bool) -> dict[str, Any]:
    """The steps on the first ``n`` subjects of ``cohort``, in this (fresh) process."""
    os.environ["LESIONLIB_RESULTS"] = str(work / "results")
    t0 = time.perf_counter()
    from monai.data import CacheDataset, PersistentDataset

    from lesionlib.data.discovery import discover_atlas
    from lesionlib.data.validate import require_valid
    from lesionlib.resources import estimate_cache_bytes
    from lesionlib.train import _items
    from lesionlib.transforms import preprocessing

    out: dict[str, Any] = {"n": n, "import_s": time.perf_counter() - t0, "rss_after_imports_mib": _status_mib("VmRSS")}
    root = _subset(cohort, n, work / f"atlas_{n}")
    records: list = []
    cache: list = []

    def discover_validate() -> dict[str, Any]:
        records.extend(discover_atlas(root, volumes=True))
        require_valid(records, purpose="train")
        return {"n_records": len(records)}

    def memory_cache() -> dict[str, Any]:
        ds = CacheDataset(_items(records), transform=preprocessing((1.0, 1.0, 1.0), PATCH), num_workers=1,
                          progress=False, copy_cache=False)
        cache.append(ds)
        tensors = [ds[i][k] for i in range(len(ds)) for k in ("image", "label")]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return {"cache_bytes": sum(storages.values()),  # the storage the cached tensors hold
                "shapes": [list(ds[i]["image"].shape[1:]) for i in range(len(ds))],
                "estimate_bytes": estimate_cache_bytes([r.image_path for r in records], (1.0, 1.0, 1.0), PATCH)}

    def disk_cache() -> dict[str, Any]:
        folder = work / f"disk_{n}"
        ds = PersistentDataset(_items(records), transform=preprocessing((1.0, 1.0, 1.0), PATCH), cache_dir=folder)
        for i in range(len(ds)):
            ds[i]
        return {"disk_bytes": _folder_bytes(folder)}

    def nnunet_prepare() -> dict[str, Any]:
        from lesionlib.nnunet import NnUNetRun

        run = NnUNetRun(work / f"nnunet_{n}", 501, "Adult", configuration="3d_fullres", device="cpu", num_processes=2)
        run.export(records, progress=False)
        run.plan_and_preprocess()
        return {"disk_bytes": _folder_bytes(run.preprocessed_dir), "raw_bytes": _folder_bytes(run.raw_dir),
                "stages_s": dict(run.timings_s)}

    out["discover_validate"] = _measure(discover_validate)
    out["memory_cache"] = _measure(memory_cache)
    cache.clear()
    out["disk_cache"] = _measure(disk_cache)
    if nnunet:
        out["nnunet"] = _measure(nnunet_prepare)
    return out


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

def _fit(ns: list[int], ys: list[float], target: int) -> dict[str, float]:
    import numpy as np

    slope, intercept = np.polyfit(np.asarray(ns, float), np.asarray(ys, float), 1)
    pred = intercept + slope * np.asarray(ns, float)
    resid = float(np.max(np.abs(pred - np.asarray(ys, float))))
    return {"per_case": float(slope), "intercept": float(intercept), "at_target": float(intercept + slope * target),
            "max_residual": resid}


def _host() -> dict[str, Any]:
    from lesionlib.resources import available_memory, host_info

    available, source = available_memory()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {**host_info(), "python": sys.version.split()[0], "available_memory_gib": (available or 0) / GIB,
            "memory_source": source, "load_average_1min": load}


def _projection(per_n: list[dict[str, Any]], target: int) -> dict[str, Any]:
    ns = [r["n"] for r in per_n]
    steps = [s for s in STEPS if all(s in r for r in per_n)]
    fits: dict[str, Any] = {}
    for step in steps:
        figures = ["wall_s", "cpu_s", "peak_rss_mib", "kept_rss_mib", "peak_rss_children_mib"]
        figures += [k for k in ("cache_bytes", "estimate_bytes", "disk_bytes") if k in per_n[0][step]]
        fits[step] = {f: _fit(ns, [r[step][f] for r in per_n], target) for f in figures}
    return fits


def _print(result: dict[str, Any]) -> None:
    host, target, fits = result["host"], result["target_cases"], result["fits"]
    print(f"host: {host['cpu_model']}, {host['n_cpus']} CPUs, {host['available_memory_gib']:.1f} GiB available "
          f"({host['memory_source']}), load average {host['load_average_1min']}")
    print(f"cohort: {result['n_generated']} synthetic adults at {result['resolution_mm']:g} mm generated in "
          f"{result['generate_s']:.1f} s; per n a fresh process (imports {result['per_n'][0]['import_s']:.1f} s)")
    print()
    print(f"{'step':<18}{'n':>3}{'wall s':>9}{'CPU s':>9}{'peak MiB':>10}{'kept MiB':>10}{'written MiB':>13}")
    for r in result["per_n"]:
        for step in STEPS:
            if step not in r:
                continue
            m = r[step]
            peak = m["peak_rss_children_mib"] if step == "nnunet" else m["peak_rss_mib"]
            written = m.get("cache_bytes", m.get("disk_bytes", 0)) / MIB
            print(f"{step:<18}{r['n']:>3}{m['wall_s']:>9.2f}{m['cpu_s']:>9.2f}{peak:>10.0f}{m['kept_rss_mib']:>10.0f}"
                  f"{written:>13.1f}")
    print()
    print(f"fitted per case (slope over n = {[r['n'] for r in result['per_n']]}) and projected to {target} cases:")
    for step, f in fits.items():
        print(f"  {step:<18} wall {f['wall_s']['per_case']:6.2f} s/case -> {f['wall_s']['at_target'] / 60:7.1f} min; "
              f"CPU {f['cpu_s']['per_case']:6.2f} s/case -> {f['cpu_s']['at_target'] / 3600:5.2f} CPU-h")
    p = result["projection"]
    print(f"  memory cache: tensors {p['cache_mib_per_case']:.1f} MiB/case (header estimate "
          f"{p['estimate_mib_per_case']:.1f}, ratio {p['cache_over_estimate']:.3f}) -> {p['memory_cache_gib']:.1f} GiB "
          f"for {target} cases; kept RSS {p['kept_rss_mib_per_case']:.1f} MiB/case -> {p['memory_cache_rss_gib']:.1f} GiB; "
          f"the process's peak {p['peak_rss_mib_per_case']:.1f} MiB/case -> {p['memory_cache_peak_rss_gib']:.1f} GiB "
          f"(imports included)")
    print(f"  disk cache: {p['disk_mib_per_case']:.1f} MiB/case (ratio to the estimate {p['disk_over_estimate']:.3f}) "
          f"-> {p['disk_cache_gib']:.1f} GiB on disk")
    if "nnunet_disk_gib" in p:
        print(f"  nnU-Net preprocessed: {p['nnunet_mib_per_case']:.1f} MiB/case -> {p['nnunet_disk_gib']:.1f} GiB; "
              f"its largest process peaked at {p['nnunet_peak_rss_mib_max_n']:.0f} MiB for n = {p['max_n']}")
    print(f"  data steps of one training (discovery+validation, then memory cache), 1 preprocessing thread: "
          f"{p['data_steps_min']:.1f} min wall on this box ({p['data_steps_cpu_min']:.1f} CPU-min)")
    print(f"  cache: auto here would choose {p['auto_choice']!r}: {p['auto_reason']}")
    print("  (CPU figures of this machine; GPU training time is not projected)")


def _summary(per_n: list[dict[str, Any]], fits: dict[str, Any], target: int) -> dict[str, Any]:
    from lesionlib.resources import available_memory, decide_cache

    mem = fits["memory_cache"]
    p = {"cache_mib_per_case": mem["cache_bytes"]["per_case"] / MIB,
         "estimate_mib_per_case": mem["estimate_bytes"]["per_case"] / MIB,
         "cache_over_estimate": mem["cache_bytes"]["per_case"] / mem["estimate_bytes"]["per_case"],
         "memory_cache_gib": mem["cache_bytes"]["per_case"] * target / GIB,
         "estimate_gib": mem["estimate_bytes"]["per_case"] * target / GIB,
         "kept_rss_mib_per_case": mem["kept_rss_mib"]["per_case"],
         "memory_cache_rss_gib": mem["kept_rss_mib"]["per_case"] * target / 1024,
         "disk_mib_per_case": fits["disk_cache"]["disk_bytes"]["per_case"] / MIB,
         "disk_cache_gib": fits["disk_cache"]["disk_bytes"]["per_case"] * target / GIB,
         "disk_over_estimate": fits["disk_cache"]["disk_bytes"]["per_case"] / mem["estimate_bytes"]["per_case"],
         "memory_cache_peak_rss_gib": mem["peak_rss_mib"]["at_target"] / 1024,
         "peak_rss_mib_per_case": mem["peak_rss_mib"]["per_case"],
         "data_steps_min": (fits["discover_validate"]["wall_s"]["at_target"] + mem["wall_s"]["at_target"]) / 60,
         "data_steps_cpu_min": (fits["discover_validate"]["cpu_s"]["at_target"] + mem["cpu_s"]["at_target"]) / 60,
         "max_n": per_n[-1]["n"]}
    if "nnunet" in fits:
        p["nnunet_mib_per_case"] = fits["nnunet"]["disk_bytes"]["per_case"] / MIB
        p["nnunet_disk_gib"] = fits["nnunet"]["disk_bytes"]["per_case"] * target / GIB
        p["nnunet_peak_rss_mib_max_n"] = per_n[-1]["nnunet"]["peak_rss_children_mib"]
    available, source = available_memory()
    decision = decide_cache(int(mem["estimate_bytes"]["per_case"] * target), available, n_images=target,
                            memory_source=source)
    p["auto_choice"], p["auto_reason"] = decision.cache, decision.reason
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="subject counts (default: 1 2 4)")
    parser.add_argument("--target", type=int, default=655, help="cases to project to (default: ATLAS v2.0's 655)")
    parser.add_argument("--resolution-mm", type=float, default=1.0)
    parser.add_argument("--nnunet", action="store_true",
                        help="also nnU-Net's export, plan and preprocess (about a minute per n on 2 cores)")
    parser.add_argument("--cohort", type=Path, help="reuse (or write) the synthetic cohort here instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="result file (default <results>/benchmarks/bench_scale.json)")
    parser.add_argument("--worker", nargs=3, metavar=("N", "COHORT", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        n, cohort, work = int(args.worker[0]), Path(args.worker[1]), Path(args.worker[2])
        print(json.dumps(worker(n, cohort, work, args.nnunet)))
        return 0

    from lesionlib import config
    from lesionlib.synth import generate_adult_cohort

    ns = sorted(set(args.n))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        cohort = args.cohort or Path(tmp) / "adult"
        t0 = time.perf_counter()
        generate_adult_cohort(cohort, max(ns), resolution_mm=args.resolution_mm, seed=2024, progress=False)
        generate_s = time.perf_counter() - t0
        per_n = []
        for n in ns:
            work = Path(tmp) / f"work_{n}"
            work.mkdir()
            cmd = [sys.executable, __file__, "--worker", str(n), str(cohort), str(work)]
            proc = subprocess.run(cmd + (["--nnunet"] if args.nnunet else []), capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"worker for n = {n} failed")
            per_n.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(work, ignore_errors=True)
    fits = _projection(per_n, args.target)
    result = {"benchmark": "bench_scale", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": _host(), "resolution_mm": args.resolution_mm, "patch_size": list(PATCH),
              "target_cases": args.target, "n_generated": max(ns), "generate_s": generate_s, "per_n": per_n,
              "fits": fits, "projection": _summary(per_n, fits, args.target),
              "total_s": time.perf_counter() - started,
              "notes": "CPU-measured data steps only; GPU training time is not projected from CPU figures"}
    _print(result)
    out = args.json or config.results_root() / "benchmarks" / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwhole script {result['total_s']:.0f} s; result: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
