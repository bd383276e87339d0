"""No process outlives a killed stage (issue #24 item 4): lesionlib.procs' guard around nnU-Net's subprocesses.

Every process started here carries a marker in its environment (inherited by the notebook kernel, the guard, the
stand-in nnU-Net command and its worker); after the kill, no process with the marker may be left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from lesionlib import procs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
MARKER = "LESIONLIB_ORPHAN_TEST"

# A stand-in nnU-Net stage: forks a worker (as nnU-Net's data loaders and export pools do), records both PIDs,
# then computes until killed.
STAGE = textwrap.dedent("""
    import os, subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {worker.pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
""")


def marked_processes(tag: str) -> list[int]:
    """PIDs of live (not zombie) processes whose environment holds ``MARKER=tag``."""
    needle = f"{MARKER}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until_none_left(tag: str, timeout_s: float = 20.0) -> list[int]:
    """Wait for every marked process to end; returns those left after ``timeout_s`` (and kills them, by PID)."""
    deadline = time.monotonic() + timeout_s
    left = marked_processes(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes(tag)
    for pid in left:  # clean up after a failure: only the processes this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def wait_for_file(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode} before {path.name} appeared:\n{out[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{path} did not appear within {timeout_s} s")


@pytest.fixture
def tag(monkeypatch):
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, value)
    yield value
    wait_until_none_left(value, timeout_s=0)


def _stage_file(tmp_path: Path) -> Path:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    return script


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_a_stage_ends_with_the_process_that_started_it(tmp_path, tag, kill):
    """The process running NnUNetRun._run (a cell's kernel, in a session of its own) is killed: the stage and its
    worker end too. Before the guard, the stage (own session) lived on under PID 1."""
    pids = tmp_path / "pids"
    parent = textwrap.dedent(f"""
        import sys
        from lesionlib.nnunet.pipeline import NnUNetRun
        NnUNetRun({str(tmp_path / 'ws')!r}, 1, "Toy", device="cpu")._run(
            "predict", [sys.executable, {str(_stage_file(tmp_path))!r}, {str(pids)!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    stage_pid, worker_pid = map(int, wait_for_file(pids, proc).split())
    assert {stage_pid, worker_pid} <= set(marked_processes(tag))
    os.kill(proc.pid, kill)
    proc.wait(timeout=30)
    assert wait_until_none_left(tag) == []


def test_the_guard_stops_the_whole_group_on_sigterm_and_reports_it(tmp_path, tag):
    pids = tmp_path / "pids"
    proc = subprocess.Popen(procs.guarded_command([sys.executable, _stage_file(tmp_path), pids], grace_s=2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_file(pids, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert "signal 15: stopping" in proc.stdout.read()
    assert wait_until_none_left(tag, timeout_s=5) == []


def test_the_guard_passes_the_exit_status_on_and_kills_leftover_workers(tmp_path, tag):
    leftover = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "sys.exit(3)")
    proc = subprocess.run(procs.guarded_command([sys.executable, "-c", leftover]), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3
    assert "left processes in its group" in proc.stderr
    assert wait_until_none_left(tag, timeout_s=5) == []
    killed = subprocess.run(procs.guarded_command([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]),
                            capture_output=True, timeout=60)
    assert killed.returncode == 128 + signal.SIGKILL


def test_the_guard_does_not_start_the_command_when_its_parent_is_gone(tmp_path):
    marker = tmp_path / "started"
    cmd = procs.guarded_command([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    cmd[cmd.index("--parent") + 1] = "1"  # a parent that is not ours: as if it had died before the guard started
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and not marker.exists()
    assert "parent 1 is gone" in proc.stderr


# ------------------------------------------------------------------ the case: SIGTERM to a local Snakemake
CELL = '''# %% tags=["parameters"]
out_dir = "."
workspace = "."
stage = "stage.py"
pids = "pids"

# %%
import sys
from lesionlib.nnunet.pipeline import NnUNetRun
NnUNetRun(workspace, 1, "Toy", device="cpu")._run("predict", [sys.executable, stage, pids])
'''

RUNNER = '''
import sys
from lesionlib.notebook_runner import run_notebook
nb, run_dir, stage, pids = sys.argv[1:]
run_notebook(nb, run_dir, stage="cell", parameters=lambda d: {"out_dir": str(d), "workspace": str(d),
             "stage": stage, "pids": pids})
'''

SNAKEFILE = '''
rule cell:
    output: "done"
    shell: "{python} runner.py cell.py run {stage} {pids} && touch {{output}}"
'''


def test_sigterm_to_a_local_snakemake_leaves_no_process(tmp_path, tag):
    """`timeout` (or Ctrl-C) signals Snakemake's process group: the runner of the cell dies, its notebook kernel
    (a session of its own) exits when it sees its parent gone, and the nnU-Net stage the kernel started (another
    session) must end with it: before the guard it stayed, computing, under PID 1."""
    pids = tmp_path / "pids"
    (tmp_path / "cell.py").write_text(CELL)
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(python=sys.executable, stage=_stage_file(tmp_path),
                                                         pids=pids))
    snakemake = subprocess.Popen([str(SNAKEMAKE), "--cores", "1", "--quiet"], cwd=tmp_path, start_new_session=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stage_pid, worker_pid = map(int, wait_for_file(pids, snakemake, timeout_s=240).split())
        assert {stage_pid, worker_pid} <= set(marked_processes(tag))
    finally:
        os.killpg(snakemake.pid, signal.SIGTERM)  # what `timeout` does to the group it started
    snakemake.wait(timeout=60)
    assert wait_until_none_left(tag) == [], "processes left after SIGTERM to Snakemake's process group"
    assert not (tmp_path / "done").exists()
