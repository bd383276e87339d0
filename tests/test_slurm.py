"""The grid on a one-node SLURM cluster through the workflow profile (issue #24): `make test-slurm`.

A one-node cluster (scripts/slurm_cluster.sh: munged, MariaDB, slurmdbd, slurmctld, slurmd on 127.0.0.1) runs
the grid of a tiny profile (test_cells' ``tiny`` cohorts and U-Net settings, extended in a researcher's own
profiles file to the adult-full chain and the child-only cell) submitted with ``--workflow-profile
workflow/profiles/slurm`` and this cluster's partition, every cell one SLURM job. Checked: ``sacct`` lists one
job per cell, the book is built and the results have the shape of a local run of the same profile; a cell that
fails as a SLURM job keeps its partial notebook and a second submission reruns only what failed; ``scancel``
leaves no process behind; the paper profile's jobs ask for a GPU (``--gpus=1``) and the CPU profile's do not.
At the end the cluster is stopped and nothing it started is left.

Needs root, Debian's slurm-wlm, slurmdbd, munge and mariadb-server (``scripts/slurm_cluster.sh install``) and the
executor plugin (``make slurm-setup``); skipped unless ``LESIONLIB_SLURM_TESTS=1`` (``make test-slurm`` sets it),
and then a missing piece is a failure, not a skip. Several minutes on 2 cores: not part of ``make test``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from test_cells import TINY
from test_procs import CELL, MARKER, RUNNER, STAGE, marked_processes, wait_until_none_left

from lesionlib.experiments import expand_grid
from lesionlib.profile import load_profile

pytestmark = [
    pytest.mark.skipif(os.environ.get("LESIONLIB_SLURM_TESTS") != "1",
                       reason="the one-node SLURM cluster tests run with `make test-slurm` (root, minutes)"),
    pytest.mark.slow,
]

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
WORKFLOW_PROFILE = ROOT / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PARTITION = "lesionlib"
# munged (the munge user) reads its key there: pytest's own temporary folders are root's only
STATE = Path(os.environ.get("LESIONLIB_SLURM_STATE", "/tmp/lesionlib-slurm-test"))
PROFILE = "slurm_tiny"
OWN_PROFILES = f"""profiles:
  {PROFILE}:            # test_cells' tiny profile: the adult-full chain (train, fine-tune) and the child-only cell
    extends: tiny
    grid: {{adult_train_sets: [adult_full]}}
"""
# What this site's jobs get (the researcher's own values go into the profile's default-resources the same way).
SITE_RESOURCES = [f"slurm_partition='{PARTITION}'", "slurm_account='root'", "runtime=30", "mem_mb=3000",
                  "cpus_per_task=1"]
TIMINGS: dict[str, float] = {}


def _log(message: str) -> None:
    sys.stderr.write(f"[test_slurm] {message}\n")


# ---------------------------------------------------------------------------------------------- the cluster
def _etc_snapshot() -> dict[str, str]:
    """Every file under /etc/slurm with its content hash, and whether /run/munge exists."""
    snap = {"/run/munge": str(Path("/run/munge").exists())}
    if Path("/etc/slurm").exists():
        for path in sorted(Path("/etc/slurm").rglob("*")):
            snap[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return snap


@dataclass
class Cluster:
    env: dict[str, str]
    before: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    stopped: bool = False

    def script(self, command: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CLUSTER_SCRIPT), command], env=self.env, capture_output=True,
                              text=True, timeout=timeout_s)

    def stop(self) -> subprocess.CompletedProcess | None:
        if self.stopped:
            return None
        self.stopped = True
        return self.script("stop")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the one-node SLURM cluster needs root (it starts SLURM's daemons and writes /etc/slurm)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail(f"snakemake-executor-plugin-slurm is not installed in {sys.prefix}: run `make slurm-setup`")
    env = {**os.environ, "LESIONLIB_SLURM_STATE": str(STATE)}
    state = Cluster(env=env, before=_etc_snapshot())
    start = time.monotonic()
    proc = state.script("start")
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm_cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    TIMINGS["cluster start"] = time.monotonic() - start
    state.pids = {p.stem: int(p.read_text()) for p in (STATE / "pids").glob("*.pid")}
    assert set(state.pids) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}
    try:
        yield state
    finally:
        state.stop()
        timings = json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})
        _log(f"timings (s): {timings}")
        if (STATE / "log").is_dir():
            (STATE / "log" / "test_slurm_timings.json").write_text(timings + "\n")


def sacct(since: str) -> pd.DataFrame:
    """This cluster's jobs since ``since`` (allocations only): job id, name, state, exit code, comment."""
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", since,
                           "--format=JobIDRaw,JobName%80,State,ExitCode,Comment%200"],
                          capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["job", "name", "state", "exit", "comment"])


def sacct_settled(since: str, timeout_s: float = 60) -> pd.DataFrame:
    """:func:`sacct` once every job listed has ended: slurmdbd records starts and ends some seconds after the
    controller (Snakemake, which asks squeue, can be done before sacct shows its last job as ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = sacct(since)
        ended = len(jobs) and not jobs["state"].isin(["PENDING", "RUNNING", "COMPLETING", "REQUEUED"]).any()
        if ended or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


def _now() -> str:
    time.sleep(1.1)  # sacct's -S has one-second resolution: a job of the step before is not counted
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------------------------- the tiny grid
@dataclass
class World:
    root: Path
    env: dict[str, str]
    cells: list[str]

    def results(self, name: str) -> Path:
        return self.root / "results" / name

    def snakemake(self, results: Path, *extra: str, slurm: bool = True, timeout_s: float = 900,
                  log_name: str | None = None) -> tuple[int, str, float]:
        work = self.root / "work"  # Snakemake's own folder (.snakemake/, SLURM logs): not the clone
        work.mkdir(exist_ok=True)
        cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
               "--config", f"profile={PROFILE}", f"results={results}", "--rerun-incomplete"]
        if slurm:
            cmd += ["--workflow-profile", str(WORKFLOW_PROFILE), "--default-resources", *SITE_RESOURCES,
                    "--slurm-logdir", str(work / "slurm_logs"), "--slurm-keep-successful-logs",
                    "--slurm-init-seconds-before-status-checks", "2", "--verbose"]
        else:
            cmd += ["--cores", "2"]
        start = time.monotonic()
        proc = subprocess.run([*cmd, *extra], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        seconds = time.monotonic() - start
        out = proc.stdout + proc.stderr
        (self.root / f"{log_name or results.name}.snakemake.log").write_text(out)
        return proc.returncode, out, seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny cohorts, the tiny profiles and an environment that every SLURM job inherits (sbatch --export=ALL)."""
    root = tmp_path_factory.mktemp("slurm_grid")
    (root / "experiments.yaml").write_text(TINY)
    (root / "own.yaml").write_text(OWN_PROFILES)
    data = root / "data"  # the data job generates the profile's synthetic cohorts (5 adults, 3 children, 3 mm)
    env = {**os.environ, "LESIONLIB_EXPERIMENTS": str(root / "experiments.yaml"),
           "LESIONLIB_PROFILES": str(root / "own.yaml"), "LESIONLIB_DATA": str(data),
           "LESIONLIB_RESULTS": str(root / "results"), "LESIONLIB_CLONE": str(ROOT),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in ("LESIONLIB_EXPERIMENTS", "LESIONLIB_PROFILES", "LESIONLIB_DATA")}
    os.environ.update({k: env[k] for k in saved})
    try:
        cells = [spec.run_id for spec in expand_grid(load_profile(PROFILE))]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert sorted(cells) == ["unet_adult-full_ft-child1_seed0", "unet_adult-full_seed0", "unet_child5_seed0"]
    return World(root, env, cells)


@pytest.fixture(scope="module")
def local_run(world):
    """The same profile run locally (Snakemake, 2 cores): the reference for the results' shape."""
    results = world.results("local")
    rc, out, seconds = world.snakemake(results, slurm=False)
    assert rc == 0, out[-5000:]
    TIMINGS["local grid + book"] = seconds
    return results


def _files(results: Path) -> Counter:
    """The files of a run of the profile, relative to it, without what differs between any two runs (logs,
    Snakemake's and the book's build caches); the book's images, named by a hash of their content, counted."""
    base = results / PROFILE
    volatile = ("_logs/", "_book/_build/.doctrees/", "_book/_build/jupyter_execute/", "_book/.jupyter_cache")
    names = [str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()]
    return Counter(re.sub(r"/_images/[0-9a-f]{16,}\.", "/_images/<hash>.", n) for n in names
                   if not n.startswith(volatile))


def _sbatch_calls(out: str) -> list[str]:
    return re.findall(r"sbatch call: (sbatch .*)", out)


def _cell_of(comment: str) -> str | None:
    m = re.fullmatch(r"rule_cell(?:_chained)?_wildcards_(\S+)", comment)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------- the tests
def test_the_grid_runs_as_one_slurm_job_per_cell_like_a_local_run(cluster, world, local_run):
    since = _now()
    results = world.results("slurm")
    rc, out, seconds = world.snakemake(results)
    TIMINGS["SLURM grid + book"] = seconds
    assert rc == 0, out[-5000:]
    jobs = sacct_settled(since)
    _log(f"sacct after the SLURM run:\n{jobs.to_string()}")
    cells = jobs["comment"].map(_cell_of).dropna()
    assert sorted(cells) == sorted(world.cells), jobs  # one job per cell
    assert set(jobs["state"]) == {"COMPLETED"}, jobs
    rules = set(jobs["comment"].str.replace(r"_wildcards_.*", "", regex=True))
    # the book: a local rule; no prepared method. The adult cell and its fine-tuning run as `cell_chained` (the
    # Snakefile's priority for the chain that bounds the wall time), the child-only cell as `cell`.
    assert rules == {"rule_data", "rule_cell", "rule_cell_chained", "rule_report"}, rules
    chained = {_cell_of(c) for c in jobs["comment"] if c.startswith("rule_cell_chained_")}
    assert chained == {c for c in world.cells if "adult" in c}, jobs
    calls = _sbatch_calls(out)
    assert len(calls) == len(jobs) and all(re.search(f"-p '?{PARTITION}'? ", c) for c in calls), calls
    assert not [c for c in calls if "--gpus" in c or "--gres" in c], "a CPU profile's job asked for a GPU"
    # the results: the same files as the local run's, the same tables
    assert (results / PROFILE / "_book" / "_build" / "html" / "index.html").is_file()
    local_files, slurm_files = _files(local_run), _files(results)
    assert slurm_files == local_files, (slurm_files - local_files, local_files - slurm_files)
    for cell in world.cells:
        ours = pd.read_csv(results / PROFILE / cell / "metrics.csv")
        theirs = pd.read_csv(local_run / PROFILE / cell / "metrics.csv")
        assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs)
        assert ours.groupby("eval_set").size().to_dict() == theirs.groupby("eval_set").size().to_dict()
    # the SLURM jobs' own logs, one folder per rule and cell
    assert sorted(p.name for p in (world.root / "work" / "slurm_logs").iterdir()) == [
        "rule_cell", "rule_cell_chained", "rule_data", "rule_report"]


def test_a_failed_cell_keeps_its_partial_notebook_and_a_resubmission_reruns_only_it(cluster, world, local_run):
    """The fine-tuning cell fails as a SLURM job (its parent's model file is corrupt: truncated, as by a full disk),
    twice (the profile's retries: 1); the child-only cell finishes beside it; once the file is whole again, a
    second submission runs the fine-tuning cell only. (A corrupt image would stop every cell: each validates the
    whole cohort when it starts.)"""
    results = world.results("failure")
    base = results / PROFILE
    adult, finetuned, child = (base / c for c in
                               ("unet_adult-full_seed0", "unet_adult-full_ft-child1_seed0", "unet_child5_seed0"))
    shutil.copytree(local_run / PROFILE / "_report", base / "_report")  # the data job and the adult cell: done
    shutil.copytree(local_run / PROFILE / adult.name, adult)
    models = sorted((adult / "model").glob("*.pt"))
    originals = {p: p.read_bytes() for p in models}
    assert models
    for path, data in originals.items():
        path.write_bytes(data[: len(data) // 3])
    since = _now()
    try:
        rc, out, seconds = world.snakemake(results, "runs", log_name="failure-1")
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
    TIMINGS["SLURM submission with a failing cell"] = seconds
    assert rc != 0, out[-5000:]
    failed = sorted(finetuned.glob("FAILED-cell-*/cell.FAILED.ipynb"))
    assert len(failed) == 2, sorted(p.name for p in finetuned.iterdir()) if finetuned.exists() else "no run folder"
    assert "load_checkpoint" in (failed[-1].parent / "error.txt").read_text()  # the partial notebook says why
    assert not (finetuned / "metrics.csv").exists() and not (finetuned / "cell.ipynb").exists()
    assert (child / "metrics.csv").is_file() and (child / "cell.ipynb").is_file()  # the other cell finished
    first = sacct_settled(since)
    _log(f"sacct, first submission:\n{first.to_string()}")
    states = first.assign(cell=first["comment"].map(_cell_of)).groupby("cell")["state"].apply(list).to_dict()
    assert states == {finetuned.name: ["FAILED", "FAILED"], child.name: ["COMPLETED"]}, first

    since = _now()
    rc, out, seconds = world.snakemake(results, "runs", log_name="failure-2")
    TIMINGS["SLURM resubmission"] = seconds
    assert rc == 0, out[-5000:]
    second = sacct_settled(since)
    _log(f"sacct, second submission:\n{second.to_string()}")
    assert second["comment"].map(_cell_of).tolist() == [finetuned.name], second  # only what failed
    assert set(second["state"]) == {"COMPLETED"}, second
    assert (finetuned / "metrics.csv").is_file()
    assert all(p.is_file() for p in failed)  # the failed attempts' notebooks stay for reading


SCANCEL_SNAKEFILE = '''
rule cell:
    output: "done"
    shell: "{python} runner.py cell.py run {stage} {pids} && touch {{output}}"
'''


def test_scancel_leaves_no_process_behind(cluster, tmp_path):
    """A cell-like job (runner -> notebook kernel -> an nnU-Net stage under lesionlib.procs' guard -> its worker)
    cancelled while it computes: no process of it is left (SLURM's proctrack/linuxproc finds processes through
    their parents: an orphan would escape it)."""
    tag = uuid.uuid4().hex
    pids = tmp_path / "pids"
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "cell.py").write_text(CELL)
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "Snakefile").write_text(SCANCEL_SNAKEFILE.format(python=sys.executable, stage=tmp_path / "stage.py",
                                                                 pids=pids))
    env = {**os.environ, MARKER: tag, "LESIONLIB_CLONE": str(ROOT), "PYTHONPATH": str(ROOT)}
    since = _now()
    snakemake = subprocess.Popen(
        [str(SNAKEMAKE), "--workflow-profile", str(WORKFLOW_PROFILE), "--retries", "0", "--default-resources",
         *SITE_RESOURCES, "--slurm-logdir", str(tmp_path / "slurm_logs"), "--slurm-init-seconds-before-status-checks",
         "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not pids.exists():
            assert snakemake.poll() is None, snakemake.stdout.read()[-5000:]
            assert time.monotonic() < deadline, "the job's stage did not start within 240 s"
            time.sleep(0.5)
        stage_pid, worker_pid = map(int, pids.read_text().split())
        assert {stage_pid, worker_pid} <= set(marked_processes(tag))
        # the controller's queue, not sacct: slurmdbd records a job start some seconds late (sacct once listed
        # nothing here while the job's processes ran)
        [job] = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30,
                               check=True).stdout.split()
        subprocess.run(["scancel", job], check=True, timeout=30)
        snakemake.wait(timeout=180)
    finally:
        if snakemake.poll() is None:  # Snakemake ends gracefully on SIGTERM (waits for its jobs): SIGINT cancels them
            os.killpg(snakemake.pid, signal.SIGINT)
            try:
                snakemake.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(snakemake.pid, signal.SIGKILL)
                snakemake.wait()
    assert snakemake.returncode != 0
    assert wait_until_none_left(tag, timeout_s=30) == [], "processes of the cancelled job are left"
    states = sacct_settled(since)["state"].tolist()
    assert len(states) == 1 and states[0].startswith("CANCELLED"), states
    assert not (tmp_path / "done").exists()


def test_the_paper_profile_asks_for_a_gpu_per_training_job(cluster, tmp_path):
    """The workflow profile as shipped, on the paper profile: every network cell's sbatch call has --gpus=1,
    LesionGnb's none (this cluster has no GPU nor a partition `gpu`, so SLURM refuses them: the calls are what is
    checked)."""
    results = tmp_path / "results"
    report = results / "paper" / "_report"
    report.mkdir(parents=True)
    (report / "data.ipynb").write_text("{}")  # the data job done, nnU-Net prepared: the cells are ready
    (results / "paper" / "_shared").mkdir()
    (results / "paper" / "_shared" / "nnunet.prepared").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "LESIONLIB_CLONE": str(ROOT), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--workflow-profile",
         str(WORKFLOW_PROFILE), "--config", "profile=paper", f"results={results}", "--keep-going", "--retries", "0",
         "--slurm-logdir", str(work / "slurm_logs"), "--verbose", "runs"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(out)
    assert proc.returncode != 0  # refused: no GPU here
    calls = _sbatch_calls(out)
    ready = [spec.run_id for spec in expand_grid(load_profile("paper")) if not spec.parent]
    by_cell = {m.group(1): c for c in calls if (m := re.search(r"--comment '?rule_cell(?:_chained)?_wildcards_(\S+?)'?\s", c))}
    assert sorted(by_cell) == sorted(ready), (sorted(by_cell), calls[:3])
    from lesionlib.segmenters import get_segmenter

    method = {spec.run_id: spec.method for spec in expand_grid(load_profile("paper"))}
    gpu_cells = {r: c for r, c in by_cell.items() if get_segmenter(method[r]).uses_gpu}
    cpu_cells = {r: c for r, c in by_cell.items() if not get_segmenter(method[r]).uses_gpu}
    assert gpu_cells and cpu_cells  # the networks and LesionGnb
    assert all("--gpus=1" in c for c in gpu_cells.values()), [c for c in gpu_cells.values() if "--gpus=1" not in c]
    assert not [c for c in cpu_cells.values() if "--gpus" in c]  # LesionGnb never holds a GPU
    assert all(re.search(r"-p '?gpu'? ", c) and "--mem 32000" in c and "-t 720" in c for c in by_cell.values()), calls[0]
    assert not [c for c in by_cell.values() if "--ntasks-per-gpu" in c]  # refused by some sites
    assert "SLURM sbatch failed" in out, out[-3000:]


def test_stopping_the_cluster_leaves_nothing_running(cluster):
    """Last: the cluster is stopped; no daemon it started, no job process, no configuration it wrote is left."""
    proc = cluster.stop()
    assert proc is not None and proc.returncode == 0, (proc.stdout, proc.stderr) if proc else "stopped before"
    alive = {name: pid for name, pid in cluster.pids.items() if Path(f"/proc/{pid}").exists()}
    assert alive == {}, alive
    assert _etc_snapshot() == cluster.before
    assert not (STATE / "pids").exists() and not (STATE / "mysql").exists() and not (STATE / "munge").exists()
    assert (STATE / "log" / "slurmctld.log").is_file()  # the logs stay for reading
