"""The experiment grid, the Snakemake dry run per profile, and the notebook runner's atomicity."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lesionlib import config
from lesionlib.experiments import expand_grid, grid_by_id, resolved_settings, run_id_for
from lesionlib.notebook_runner import StageFailed, py_to_ipynb, run_notebook
from lesionlib.profile import ProfileError, load_profile, profile_names

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
NETWORKS = ("unet", "resunet", "nnunet")


def _expected_counts(profile: str) -> dict[str, int]:
    from lesionlib.segmenters import get_segmenter

    prof = load_profile(profile)
    sets = len(prof.grid.adult_train_sets)
    # nnU-Net (and the Res-U-Net when it pretrains its encoder) prepare once; their adult and fine-tuning
    # cells run first, under their own rule name
    prepared = [m for m in prof.method_names if get_segmenter(m).needs_preparation_for(prof.method(m))]
    assert "nnunet" in prepared
    ablations = [m for m in prof.method_names if get_segmenter(m).ablation_of]  # on ATLAS full only
    # every network's adult cells and their fine-tuning run first (cell_chained); child-only and LesionGnb after
    chained = (3 * sets * 2 + len(ablations) * 2) * len(prof.seeds)
    cells = (3 + 1 + len(ablations)) * len(prof.seeds)
    return {"cell": cells, "cell_chained": chained, "prepare": len(prepared), "data": 1, "report": 1, "book": 1}


@pytest.mark.parametrize("profile", ["quick", "cpu", "gpu", "paper"])
def test_grid_is_the_papers(profile):
    runs = expand_grid(profile)
    prof = load_profile(profile)
    seeds, sets = prof.seeds, prof.grid.adult_train_sets
    assert set(sets) == ({"adult_full"} if profile == "quick" else {"adult_full", "adult_subset"})
    nets = [r for r in runs if r.method in NETWORKS]
    assert len(nets) == (3 * len(sets) * 2 + 3) * len(seeds)
    assert len({r.run_id for r in runs}) == len(runs)
    for seed in seeds:
        cells = {(r.method, r.train_set, r.fine_tuned) for r in nets if r.seed == seed}
        assert cells == ({(m, t, ft) for m in NETWORKS for t in sets
                          for ft in (False, True)} | {(m, "child5", False) for m in NETWORKS})
    gnb = [r for r in runs if r.method == "lesiongnb"]
    assert [r.seed for r in gnb] == list(seeds)  # the baseline runs for every seed
    assert all(r.train_set == "adult_full" and not r.fine_tuned for r in gnb)
    by_id = {r.run_id: r for r in runs}
    order = [r.run_id for r in runs]
    for r in runs:
        if r.fine_tuned:
            parent = by_id[r.parent]
            assert (parent.method, parent.train_set, parent.seed, parent.fine_tuned) == \
                   (r.method, r.train_set, r.seed, False)
            assert order.index(r.parent) < order.index(r.run_id) and r.stage == "finetune"
        else:
            assert r.parent is None and r.stage == ("child_only" if r.train_set == "child5" else "adult")


def test_ablations_run_only_where_listed_on_their_train_sets(tmp_path):
    """resunet_scratch stays out of a grid that lists no methods; listed, it gets the Res-U-Net's cells on
    ``ablation_train_sets`` (ATLAS full unless the profile says otherwise) with its own encoder setting."""
    from lesionlib.segmenters import get_segmenter

    assert "resunet_scratch" not in load_profile("quick").method_names
    assert "resunet_scratch" not in {r.method for r in expand_grid("paper")}
    path = _profile_file(tmp_path, """
grid: {methods: [resunet, resunet_scratch]}
methods: {resunet: {encoder: random}}
""")
    runs = expand_grid(load_profile("custom", path))
    scratch = {r.run_id for r in runs if r.method == "resunet_scratch"}
    assert scratch == {"resunet_scratch_adult-full_seed0", "resunet_scratch_adult-full_ft-child5_seed0",
                       "resunet_scratch_child5_seed0"}
    assert {r.train_set for r in runs if r.method == "resunet"} == {"adult_full", "adult_subset", "child5"}
    both = _profile_file(tmp_path, """
grid: {methods: [resunet_scratch], ablation_train_sets: [adult_full, adult_subset], fine_tune: false}
""")
    prof = load_profile("custom", both)
    assert [r.run_id for r in expand_grid(prof)] == [
        "resunet_scratch_adult-full_seed0", "resunet_scratch_adult-subset_seed0", "resunet_scratch_child5_seed0"]
    settings = resolved_settings(grid_by_id(prof)["resunet_scratch_adult-full_seed0"], prof)["settings"]
    assert settings["encoder_weights"] == "random" and settings["epochs"] == prof.method("resunet_scratch").epochs_adult
    assert not get_segmenter("resunet_scratch").needs_preparation_for(prof.method("resunet_scratch"))
    cpu = load_profile("cpu")  # the shipped comparison: the Res-U-Net's settings but the encoder
    ours, scratch_settings = cpu.method("resunet").model_dump(), cpu.method("resunet_scratch").model_dump()
    assert {k for k in ours if ours[k] != scratch_settings[k]} == {"encoder"}
    assert scratch_settings["encoder"] == "random" and ours["encoder"] == "synthetic"


def test_run_ids_are_stable_and_readable():
    assert run_id_for("resunet", "adult_subset", True, 1) == "resunet_adult-subset_ft-child5_seed1"
    assert run_id_for("lesiongnb", "adult_full", False, 0) == "lesiongnb_adult-full_seed0"
    assert [r.run_id for r in expand_grid("quick")] == [r.run_id for r in expand_grid("quick")]


def test_cell_settings_follow_the_profile():
    prof = load_profile("quick")
    grid = grid_by_id(prof)
    ft = resolved_settings(grid["unet_adult-full_ft-child5_seed0"], prof)
    assert ft["settings"]["epochs"] == prof.method("unet").epochs_finetune and ft["fine_tuned"] is True
    assert ft["parent_run"] == "unet_adult-full_seed0" and ft["data_source"] == "synthetic"
    assert ft["settings"]["patch_size"] == list(prof.method("unet").patch_size)
    child = resolved_settings(grid["unet_child5_seed0"], prof)["settings"]
    assert child["epochs"] == prof.method("unet").epochs_child_only
    nn = resolved_settings(grid["nnunet_adult-full_seed0"], prof)["settings"]
    assert nn["epochs"] == prof.method("nnunet").epochs_adult
    assert nn["iterations_per_epoch"] == prof.method("nnunet").iterations_per_epoch
    nn_ft = resolved_settings(grid["nnunet_adult-full_ft-child5_seed0"], prof)["settings"]
    assert nn_ft["epochs"] == prof.method("nnunet").epochs_finetune
    yaml.safe_dump(ft)  # plain YAML types only (params.yaml, --json)


def _profile_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text("profiles:\n  custom:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines()))
    return path


def test_profile_can_select_real_data_and_trim_the_grid(tmp_path):
    path = _profile_file(tmp_path, """
seeds: [3]
data: {adult_dataset: atlas_v2, child_dataset: child_cohort}
grid: {methods: [unet], fine_tune: false}
""")
    prof = load_profile("custom", path)
    runs = expand_grid(prof)
    assert [r.run_id for r in runs] == ["unet_adult-full_seed3", "unet_adult-subset_seed3", "unet_child5_seed3"]
    assert prof.data_source == "real"


@pytest.mark.parametrize("body, named", [
    ("methods: {unet: {epochs_finetun: 3}}", "methods.unet.epochs_finetun: unknown key"),
    ("dat: {n_adult: 3}", "dat: unknown key"),
    ("splits: {few_shot: 5}", "splits.few_shot: unknown key"),
    ("grid: {methods: [vit]}", "unknown methods ['vit']"),
    ("methods: {nnunet: {folds: 3}}", "methods.nnunet.folds"),
    ("seeds: []", "seeds"),
])
def test_a_bad_profile_key_is_an_error_naming_it(tmp_path, body, named):
    path = _profile_file(tmp_path, body)
    with pytest.raises(ProfileError) as err:
        load_profile("custom", path)
    assert named in str(err.value) and "custom" in str(err.value)


def test_every_shipped_profile_loads_and_unknown_profiles_fail():
    for name in profile_names():
        load_profile(name)
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        load_profile("nope")


def test_grid_list_json_resolves_every_cell(capsys):
    from lesionlib.cli import main

    assert main(["grid", "list", "--profile", "quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"]["name"] == "quick" and len(out["cells"]) == len(expand_grid("quick"))
    unet = next(c for c in out["cells"] if c["run_id"] == "unet_adult-full_seed0")
    assert {"epochs", "iterations_per_epoch", "lr_schedule", "augmentation"} <= set(unet["settings"])


def _dry_run_blocks(args: list[str]) -> list[tuple[str, str]]:
    """``snakemake -n ARGS`` in the project: ``(rule, its block of the printout)`` for every job listed."""
    proc = subprocess.run([str(SNAKEMAKE), "-n", *args], cwd=config.PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            jobs.append((head.group(1), block))
    return jobs


def _job_stats(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_snakemake_dry_run_lists_the_grid(profile, tmp_path):
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--config", f"profile={profile}", f"results={tmp_path}"],
                          cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = _job_stats(proc.stdout)
    expected = _expected_counts(profile)
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)
    assert counts["total"] == sum(expected.values()) + 1  # + rule all


def test_adult_chains_are_prioritised_and_leaf_cells_wait(tmp_path):
    """Every network's adult training and its fine-tuning (the grid's longest jobs) run under `cell_chained`
    (priority above the other cells); the five-child cells and LesionGnb, which nothing depends on, under `cell`."""
    rule_of = {}
    for rule, block in _dry_run_blocks(["--config", "profile=quick", f"results={tmp_path}"]):
        run = re.search(r"wildcards: run=(\S+)", block)
        if run:
            rule_of[run.group(1)] = rule
    assert rule_of["nnunet_adult-full_seed0"] == "cell_chained"
    assert rule_of["nnunet_adult-full_ft-child5_seed0"] == "cell_chained"
    assert rule_of["nnunet_child5_seed0"] == "cell"
    assert rule_of["resunet_child5_seed0"] == "cell" and rule_of["lesiongnb_adult-full_seed0"] == "cell"
    assert {r for r, rule in rule_of.items() if rule == "cell_chained"} == {
        f"{m}_adult-full{ft}_seed0" for m in NETWORKS for ft in ("", "_ft-child5")}


def test_job_timings_reads_snakemake_benchmarks(tmp_path, capsys):
    from lesionlib.experiments import job_timings, register_cli

    with pytest.raises(FileNotFoundError, match="benchmarks"):
        job_timings("quick", tmp_path)
    folder = tmp_path / "quick" / "_logs" / "benchmarks"
    folder.mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (folder / "data.tsv").write_text(header + "35.0\t0:00:35\t900\t1\t1\t1\t0\t0\t95\t33.0\n")
    (folder / "unet_adult-full_seed0.tsv").write_text(header + "258.0\t0:04:18\t2000\t1\t1\t1\t0\t0\t90\t129.0\n")
    table = job_timings("quick", tmp_path)
    assert list(table.job) == ["unet_adult-full_seed0", "data"]  # longest first
    assert table.wall_s.tolist() == [258.0, 35.0] and table.cpu_s.tolist() == [129.0, 33.0]
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="top"))
    args = parser.parse_args(["grid", "timings", "--profile", "quick", "--results", str(tmp_path)])
    assert args.func(args) == 0
    assert "total: 293 job-s wall over 2 jobs (162 CPU-s" in capsys.readouterr().out
    (folder / "book.tsv").write_text("not a benchmark\n1\n")
    with pytest.raises(ValueError, match="book.tsv"):
        job_timings("quick", tmp_path)


def test_snakemake_skips_finished_runs_and_waits_for_parents(tmp_path):
    """A finished cell (its executed notebook and metrics present) is not re-run; its fine-tuning child is."""
    grid = grid_by_id("quick")
    report = tmp_path / "quick" / "_report"
    report.mkdir(parents=True)
    (report / "data.ipynb").write_text("{}")
    (tmp_path / "quick" / "_shared").mkdir()
    for method in ("nnunet", "resunet"):
        (tmp_path / "quick" / "_shared" / f"{method}.prepared").write_text("")
    d = tmp_path / "quick" / "unet_adult-full_seed0"
    d.mkdir()
    for name in ("cell.ipynb", "metrics.csv"):
        (d / name).write_text("x")
    proc = subprocess.run([str(SNAKEMAKE), "-n", "runs", "--config", "profile=quick", f"results={tmp_path}"],
                          cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = _job_stats(proc.stdout)
    assert counts["cell"] + counts["cell_chained"] == len(grid) - 1
    assert "data" not in counts and "prepare" not in counts
    assert "unet_adult-full_ft-child5_seed0/cell.ipynb" in proc.stdout


def _finished_build(results: Path, profile: str = "quick") -> list[str]:
    """Every file a finished `make book` of ``profile`` leaves that Snakemake looks at, each newer than its inputs."""
    from lesionlib.experiments import CELL_NOTEBOOK

    grid = grid_by_id(profile)
    p = results / profile
    stamp = 1_700_000_000.0

    def touch(path: Path) -> None:
        nonlocal stamp
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        stamp += 10
        os.utime(path, (stamp, stamp))

    touch(p / "_report" / "data.ipynb")
    for method in load_profile(profile).method_names:  # every preparation marker (extra ones are never read)
        touch(p / "_shared" / f"{method}.prepared")
    for run_id in grid:  # parents first (expand_grid's order)
        for name in ("metrics.csv", f"{CELL_NOTEBOOK}.ipynb"):
            touch(p / run_id / name)
    touch(p / "_report" / "tables.ipynb")
    touch(p / "_report" / "figures.ipynb")
    touch(p / "_book" / "_build" / "html" / "index.html")
    return list(grid)


def _dry_run_jobs(results: Path) -> dict[str, list[str]]:
    """`snakemake -n` of the default target for profile quick: rule -> the run ids (or '' for rules without one)."""
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--config", "profile=quick", f"results={results}"],
                          cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head and head.group(1) != "all":
            run = re.search(r"wildcards: run=(\S+)", block)
            jobs.setdefault(head.group(1), []).append(run.group(1) if run else "")
    return jobs


def test_make_book_reruns_a_cell_whose_outputs_are_missing_then_the_report_and_book(tmp_path):
    """snakemake#1978: a missing intermediate file is not re-created while the files downstream of it exist.
    The cells' final files are targets of `all`, so a deleted cell folder is run again, then the report and
    the book, and nothing else; a finished build has nothing to do."""
    import shutil

    runs = _finished_build(tmp_path)
    assert _dry_run_jobs(tmp_path) == {}  # finished: nothing to be done
    shutil.rmtree(tmp_path / "quick" / "unet_child5_seed0")  # a leaf cell: only it, then report and book
    jobs = _dry_run_jobs(tmp_path)
    assert jobs == {"cell": ["unet_child5_seed0"], "report": [""], "book": [""]}, jobs
    # one output of a parent cell missing: it runs again, and its fine-tuning cell (whose input it updates)
    (tmp_path / "quick" / "unet_adult-full_seed0" / "cell.ipynb").unlink()
    jobs = _dry_run_jobs(tmp_path)
    cells = jobs.pop("cell", []) + jobs.pop("cell_chained", [])  # adult cells and their fine-tuning: cell_chained
    assert sorted(cells) == ["unet_adult-full_ft-child5_seed0", "unet_adult-full_seed0", "unet_child5_seed0"]
    assert jobs == {"report": [""], "book": [""]}, jobs
    assert len(runs) > 3  # the other cells were left alone


def test_slurm_profile_sets_resources_of_rules_that_exist():
    """The SLURM workflow profile sets resources of rules by name (a renamed rule would silently lose them), and no
    GPU: set-resources would ask one for every profile's cells, CPU profiles included (issue #24); the Snakefile
    asks one per profile device (next test)."""
    snakefile = (config.PROJECT_ROOT / "Snakefile").read_text()
    rules = set(re.findall(r"^rule (\w+):", snakefile, re.M)) | set(re.findall(r"^use rule \w+ as (\w+)", snakefile, re.M))
    profile = yaml.safe_load((config.PROJECT_ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    assert not [name for name, res in profile["set-resources"].items() if {"gpu", "gres", "gpu_model"} & set(res)]
    assert not {"gpu", "gres", "gpu_model"} & set(profile["default-resources"])


@pytest.mark.parametrize("profile, gpus", [("paper", 1), ("quick", 0)])
def test_jobs_ask_for_a_gpu_only_when_the_profiles_device_is_cuda(profile, gpus, tmp_path):
    """Every job that trains or predicts with a network (cell, cell_chained, prepare) has gpu=1 on a cuda profile
    and gpu=0 otherwise; LesionGnb's cells never ask for one (the SLURM plugin turns gpu=1 into --gpus=1 and 0
    into nothing: tests/test_slurm.py)."""
    from lesionlib.segmenters import get_segmenter

    grid = grid_by_id(profile)
    gpu_of = {}
    for rule, block in _dry_run_blocks(["runs", "--config", f"profile={profile}", f"results={tmp_path}"]):
        jobid = re.search(r"jobid: (\d+)", block)
        if jobid:
            found = re.search(r"resources: .*\bgpu=(\d+)", block)
            run = re.search(r"wildcards: run=(\S+)", block)
            prepared = re.search(r"wildcards: method=(\S+)", block)
            method = grid[run.group(1)].method if run else prepared.group(1) if prepared else None
            gpu_of[(rule, jobid.group(1), method)] = int(found.group(1)) if found else None
    training = {key: gpu for key, gpu in gpu_of.items() if key[0] in ("cell", "cell_chained", "prepare")}
    assert training and {gpu for key, gpu in training.items() if get_segmenter(key[2]).uses_gpu} == {gpus}, training
    assert {gpu for key, gpu in training.items() if not get_segmenter(key[2]).uses_gpu} == {0}, training  # LesionGnb
    assert {gpu for key, gpu in gpu_of.items() if key[0] not in ("cell", "cell_chained", "prepare")} <= {None, 0}


SCHEDULING_SNAKEFILE = """
rule final:
    input: expand("done{i}", i=range(4))
rule shared:
    output: "shared"
    shell: "touch {output}"
rule work:
    input: "shared"
    output: "done{i}"
    shell: "date +%s.%N > start{wildcards.i}; sleep 2; date +%s.%N > end{wildcards.i}; touch {output}"
"""


def test_snakemake_never_runs_more_jobs_than_cores(tmp_path):
    """`make book` relies on --cores bounding parallel jobs (one torch thread each). Snakemake 9.10-9.15
    start a third job on 2 cores after a lone job finishes (snakemake#3913): the lock pins a release without it."""
    (tmp_path / "Snakefile").write_text(SCHEDULING_SNAKEFILE)
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "2", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = [(float((tmp_path / f"start{i}").read_text()), float((tmp_path / f"end{i}").read_text()))
             for i in range(4)]
    most_at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most_at_once == 2, spans


# ---------------------------------------------------------------- notebook runner
NOTEBOOK = '''# %% [markdown]
# # A stage

# %% tags=["parameters"]
out_dir = "."
fail = False

# %%
from pathlib import Path
Path(out_dir, "metrics.csv").write_text("case_id\\nsub-01_ses-1\\n")
Path(out_dir, "predictions").mkdir()
Path(out_dir, "predictions", "p.txt").write_text("p")

# %%
if fail:
    raise RuntimeError("asked to fail")
'''


@pytest.fixture()
def stage_notebook(tmp_path) -> Path:
    path = tmp_path / "stage.py"
    path.write_text(NOTEBOOK)
    return path


def test_py_to_ipynb_keeps_parameters_tag(stage_notebook, tmp_path):
    import nbformat

    out = py_to_ipynb(stage_notebook, tmp_path / "x.ipynb")
    nb = nbformat.read(str(out), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "fail = False" in tagged[0].source
    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="parameters"):
        py_to_ipynb(bad, tmp_path / "bad.ipynb")


def test_runner_success_moves_outputs_and_records_params(stage_notebook, tmp_path):
    run_dir = tmp_path / "run"
    out = run_notebook(stage_notebook, run_dir, stage="train", parameters=lambda d: {"out_dir": str(d)},
                       run_params={"run_id": "r", "seed": 0})
    assert out == run_dir / "train.ipynb" and out.is_file()
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "predictions" / "p.txt").is_file()
    assert not list(run_dir.glob(".partial-*")) and not list(run_dir.glob(".*.ipynb"))
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["run_id"] == "r" and "train" in params["stages"]
    # a second stage adds to the same folder (replacing same-named outputs) and to params.yaml
    run_notebook(stage_notebook, run_dir, stage="evaluate", parameters=lambda d: {"out_dir": str(d)},
                 run_params={"run_id": "r", "seed": 0})
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert set(params["stages"]) == {"train", "evaluate"} and (run_dir / "evaluate.ipynb").is_file()


def test_runner_failure_leaves_nothing_that_looks_finished(stage_notebook, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(StageFailed) as err:
        run_notebook(stage_notebook, run_dir, stage="evaluate",
                     parameters=lambda d: {"out_dir": str(d), "fail": True})
    assert not (run_dir / "evaluate.ipynb").exists()
    assert not (run_dir / "metrics.csv").exists()  # written by an early cell, but the stage failed
    assert not (run_dir / "params.yaml").exists()
    [failed] = list(run_dir.glob("FAILED-evaluate-*"))
    assert err.value.failed_dir == failed
    partial = (failed / "evaluate.FAILED.ipynb").read_text()
    assert "asked to fail" in partial  # the partial notebook shows the error
    assert "asked to fail" in (failed / "error.txt").read_text()


def test_runner_kernel_imports_the_runners_lesionlib(tmp_path, monkeypatch):
    """With another lesionlib earlier on the path (a second clone sharing the venv), the kernel
    still imports the lesionlib of the process that runs the notebook."""
    import lesionlib

    impostor = tmp_path / "other_clone"
    (impostor / "lesionlib").mkdir(parents=True)
    (impostor / "lesionlib" / "__init__.py").write_text("IMPOSTOR = True\n")
    monkeypatch.setenv("PYTHONPATH", str(impostor))
    nb = tmp_path / "which.py"
    nb.write_text('# %% tags=["parameters"]\nout_dir = "."\n\n'
                  '# %%\nimport pathlib\nimport lesionlib\n'
                  'pathlib.Path(out_dir, "where.txt").write_text(lesionlib.__file__)\n')
    run_dir = tmp_path / "run"
    run_notebook(nb, run_dir, stage="which", parameters=lambda d: {"out_dir": str(d)})
    assert (run_dir / "where.txt").read_text() == lesionlib.__file__
    assert os.environ["PYTHONPATH"] == str(impostor)  # restored after the run


def test_interactive_dir_is_fresh_per_run_and_outside_the_grid(tmp_path):
    """Runs by hand go to <results>/<profile>/interactive/<name>-<UTC time>[-n]/: never one run's folder twice,
    never a grid cell's folder, and the run index does not list the interactive folder as a run."""
    import datetime as dt

    from lesionlib.experiments import INTERACTIVE_DIR, interactive_dir
    from lesionlib.reporting.collect import run_status

    now = dt.datetime(2026, 12, 4, 6, 0, 0, tzinfo=dt.timezone.utc)
    first = interactive_dir("quick", "unet_child5_seed0", tmp_path, now=now)
    second = interactive_dir("quick", "unet_child5_seed0", tmp_path, now=now)
    assert first == tmp_path / "quick" / INTERACTIVE_DIR / "unet_child5_seed0-20261204T060000Z"
    assert second.name == "unet_child5_seed0-20261204T060000Z-2" and first.is_dir() and second.is_dir()
    (first / "metrics.csv").write_text("x")
    assert [s.run_id for s in run_status(tmp_path, "quick")] == []
