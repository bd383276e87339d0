"""Memory and time (issue #22, item 5): the peak RSS a job records, the memory available, ``cache: auto``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from lesionlib.resources import (
    GIB,
    MIB,
    available_memory,
    cache_copies,
    decide_cache,
    estimate_cache_bytes,
    read_resources,
    resampled_shape,
    resolve_cache,
    write_resources,
)


def _fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter (no earlier children, a small own peak); it prints one JSON line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# peak RSS of a job
# ---------------------------------------------------------------------------------------------

def test_meter_records_the_peak_of_a_child_that_allocates_200_mib():
    out = _fresh_python("""
        import json, subprocess, sys
        from lesionlib.resources import ResourceMeter
        with ResourceMeter() as small:
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        with ResourceMeter() as big:
            subprocess.run([sys.executable, "-c", "b = b'x' * (200 * 2**20)"], check=True)
        print(json.dumps({"small": small.usage.record(), "big": big.usage.record()}))
    """)
    small, big = out["small"], out["big"]
    assert small["children_peak_before_mib"] == 0 and small["peak_rss_children_mib"] < 100
    assert big["peak_rss_children_mib"] >= 200 and big["peak_rss_mib"] >= 200
    assert big["cpu_s"] > 0 and big["wall_s"] > 0
    assert {"hostname", "cpu_model", "n_cpus"} <= set(big) and big["n_cpus"] >= 1


def test_notebook_runner_records_the_kernels_peak(tmp_path):
    """The kernel is a child of the runner: its 300 MiB count once papermill has shut it down."""
    nb = tmp_path / "alloc.py"
    nb.write_text('# %% tags=["parameters"]\nout_dir = "."\nmib = 0\n\n# %%\nblock = b"x" * (mib * 2**20)\n')
    out = _fresh_python(f"""
        import json
        from pathlib import Path
        from lesionlib.notebook_runner import run_notebook
        run_notebook(Path({str(nb)!r}), Path({str(tmp_path / 'run')!r}), stage="cell",
                     parameters=lambda d: {{"out_dir": str(d), "mib": 300}}, resources_file="resources.json")
        print(json.dumps(json.loads(Path({str(tmp_path / 'run' / 'resources.json')!r}).read_text())))
    """)
    assert out["status"] == "complete" and out["stage"] == "cell"
    assert out["children_peak_before_mib"] < 300 <= out["peak_rss_children_mib"] <= out["peak_rss_mib"]
    assert out["wall_s"] > 0 and out["cpu_s"] > 0
    assert read_resources(tmp_path / "run" / "resources.json")["peak_rss_mib"] == out["peak_rss_mib"]


def test_resources_files_are_written_atomically_and_read_back(tmp_path):
    path = write_resources(tmp_path / "r" / "resources.json", {"wall_s": 1.5, "cpu_s": 2.0, "peak_rss_mib": 300.0})
    assert read_resources(path) == {"wall_s": 1.5, "cpu_s": 2.0, "peak_rss_mib": 300.0}
    assert not [p for p in path.parent.iterdir() if p.name != "resources.json"]  # no temporary left
    (tmp_path / "bad.json").write_text('{"wall_s": "soon"}')
    assert read_resources(tmp_path / "bad.json") is None and read_resources(tmp_path / "absent.json") is None


def test_grid_timings_prefer_the_jobs_own_figures(tmp_path, capsys):
    import argparse

    from lesionlib.experiments import job_timings, register_cli

    profile = tmp_path / "quick"
    folder = profile / "_logs" / "benchmarks"
    folder.mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (folder / "data.tsv").write_text(header + "35.0\t0:00:35\t900.5\t1\t1\t1\t0\t0\t95\t33.0\n")
    (folder / "unet_adult-full_seed0.tsv").write_text(header + "258.0\t0:04:18\t2000\t1\t1\t1\t0\t0\t90\t129.0\n")
    (folder / "prepare_nnunet.tsv").write_text(header + "40.0\t0:00:40\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t3.0\n")
    (folder / "report.tsv").write_text(header + "20.0\t0:00:20\t700\t1\t1\t1\t0\t0\t90\t15.0\n")
    write_resources(profile / "unet_adult-full_seed0" / "resources.json",
                    {"wall_s": 250.0, "cpu_s": 480.0, "peak_rss_mib": 3100.0, "hostname": "h"})
    write_resources(profile / "_shared" / "nnunet" / "resources.json", {"wall_s": 38, "cpu_s": 70, "peak_rss_mib": 900})
    write_resources(profile / "_report" / "resources-tables.json", {"wall_s": 8, "cpu_s": 9, "peak_rss_mib": 400})
    write_resources(profile / "_report" / "resources-figures.json", {"wall_s": 9, "cpu_s": 10, "peak_rss_mib": 600})
    table = job_timings("quick", tmp_path).set_index("job")
    assert list(table.index) == ["unet_adult-full_seed0", "prepare_nnunet", "data", "report"]
    cell = table.loc["unet_adult-full_seed0"]
    assert (cell.wall_s, cell.cpu_s, cell.peak_rss_mib, cell.sampled_rss_mib, cell.exact) == (258.0, 480.0, 3100.0,
                                                                                          2000.0, True)
    data = table.loc["data"]  # no resources-data.json: Snakemake's sampled figures
    assert (data.cpu_s, data.peak_rss_mib, data.exact) == (33.0, 900.5, False)
    report = table.loc["report"]  # tables + figures: seconds added, the larger peak
    assert (report.cpu_s, report.peak_rss_mib, report.exact) == (19.0, 600.0, True)
    prepare = table.loc["prepare_nnunet"]  # Snakemake recorded no sample; the preparation measured itself
    assert np.isnan(prepare.sampled_rss_mib) and (prepare.cpu_s, prepare.peak_rss_mib) == (70.0, 900.0)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="top"))
    args = parser.parse_args(["grid", "timings", "--profile", "quick", "--results", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "peak_rss_mib" in out and "sampled_rss_mib" in out
    assert "total: 353 job-s wall over 4 jobs (602 CPU-s; 3 of 4 jobs measured by themselves, the others" in out
    assert "largest peak RSS: 3100 MiB (unet_adult-full_seed0; one process, exact)" in out


# ---------------------------------------------------------------------------------------------
# cache: auto
# ---------------------------------------------------------------------------------------------

def test_decide_cache_from_given_sizes():
    d = decide_cache(int(48.2 * GIB), int(20.1 * GIB), n_images=655)
    assert d.cache == "disk" and d.message() == "cache: disk — 655 images need 48.2 GiB, 20.1 GiB available"
    assert decide_cache(int(48.2 * GIB), int(20.1 * GIB), n_images=655, disk_free_bytes=100 * GIB).cache == "disk"
    assert decide_cache(int(48.2 * GIB), int(20.1 * GIB), n_images=655, disk_free_bytes=50 * GIB).cache == "none"
    assert decide_cache(int(48.2 * GIB), 200 * GIB, n_images=655).cache == "memory"  # a large GPU host
    # the safety factor: at most half the available memory
    assert decide_cache(10 * GIB, 20 * GIB, n_images=10).cache == "memory"
    assert decide_cache(10 * GIB + 1, 20 * GIB, n_images=10).cache == "disk"
    # workers that do not fork hold their own copy each
    assert decide_cache(3 * GIB, 20 * GIB, n_images=10, copies=1).cache == "memory"
    spawned = decide_cache(3 * GIB, 20 * GIB, n_images=10, copies=5)
    assert spawned.cache == "disk" and "15.0 GiB (5 copies" in spawned.reason
    assert decide_cache(10 * GIB, None, n_images=10).cache == "memory"  # unknown: the old default
    record = d.to_dict()
    assert record["cache"] == "disk" and record["need_gib"] == pytest.approx(48.2, abs=1e-3)
    assert record["available_gib"] == pytest.approx(20.1, abs=1e-3) and record["n_images"] == 655


def test_cache_copies_follow_the_start_method():
    assert cache_copies(0, "spawn") == 1
    assert cache_copies(8, "fork") == 1
    assert cache_copies(8, "spawn") == 9 and cache_copies(2, "forkserver") == 3


def test_available_memory_respects_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683664 kB\nMemAvailable:   20971520 kB\n")  # 20 GiB
    none = tmp_path / "no-cgroup"
    assert available_memory(meminfo, none, tmp_path / "absent") == (20 * GIB, f"MemAvailable ({meminfo})")
    # cgroup v2, limit on the job's folder: 8 GiB, 3 GiB used of which 1 GiB inactive page cache -> 6 GiB left
    root = tmp_path / "cg2"
    job = root / "slurm" / "job_1"
    job.mkdir(parents=True)
    (root / "memory.max").write_text("max\n")
    (job / "memory.max").write_text(f"{8 * GIB}\n")
    (job / "memory.current").write_text(f"{3 * GIB}\n")
    (job / "memory.stat").write_text(f"anon 123\ninactive_file {GIB}\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/slurm/job_1\n")
    available, source = available_memory(meminfo, root, proc)
    assert available == 6 * GIB and "cgroup limit 8.0 GiB" in source
    # a generous limit does not raise the figure above MemAvailable
    (job / "memory.max").write_text(f"{64 * GIB}\n")
    assert available_memory(meminfo, root, proc)[0] == 20 * GIB
    # cgroup v1 (limit 'unlimited' = a huge number at the root, 4 GiB on the process's own group)
    root1 = tmp_path / "cg1"
    (root1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (root1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (root1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    (root1 / "memory" / "docker" / "abc" / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    proc.write_text("4:memory:/docker/abc\n0::/\n")
    assert available_memory(meminfo, root1, proc)[0] == 3 * GIB


def test_cache_estimate_from_headers_matches_preprocessing(tmp_path, make_affine):
    """The header-only estimate is the grid ``preprocessing`` makes (before its crop), in any orientation."""
    from lesionlib.transforms import preprocessing

    data = np.zeros((20, 17, 11), np.float32)
    data[3:15, 2:14, 2:9] = 1.0
    affine = make_affine((1.0, 1.5, 2.0), orientation="LPS")
    image = tmp_path / "img.nii.gz"
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), image)
    nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), affine), mask)
    spacing, patch = (3.0, 3.0, 3.0), (8, 8, 8)
    out = preprocessing(spacing, patch, crop_foreground=False)({"image": str(image), "label": str(mask),
                                                                "case_id": "c"})
    expected = tuple(out["image"].shape[1:])
    assert resampled_shape((20, 17, 11), (1.0, 1.5, 2.0), spacing, patch) == expected
    assert estimate_cache_bytes([image, image], spacing, patch) == 2 * 8 * int(np.prod(expected))
    assert resampled_shape((197, 233, 189), (1, 1, 1), (1, 1, 1), (128, 128, 128)) == (197, 233, 189)


def test_a_tiny_dataset_gets_the_memory_cache(tmp_path, make_affine):
    image = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), make_affine((3.0, 3.0, 3.0))), image)
    decision = resolve_cache("auto", [image] * 3, spacing_mm=(3.0, 3.0, 3.0), patch_size=(16, 16, 16),
                             num_workers=2, cache_dir=tmp_path / "cache")
    assert decision.cache == "memory" and decision.need_bytes == 3 * 8 * 16**3
    assert decision.message().startswith("cache: memory — 3 images need 0 MiB")
    explicit = resolve_cache("disk", [image], spacing_mm=(3.0, 3.0, 3.0), patch_size=(16, 16, 16), num_workers=0,
                             cache_dir=tmp_path / "cache")
    assert explicit.cache == "disk" and explicit.reason.startswith("set explicitly; 1 image needs")
    assert MIB * 1024 == GIB
