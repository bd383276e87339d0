"""`make lab` in a real browser: JupyterLab started as `make lab` starts it (python -m lesionlib.lab, on 127.0.0.1 with
a token), `notebooks/cell.py` opened through its paired notebook in headless Chromium, every cell run, the metrics
shown, the notebook saved; the run's outputs land under results/<profile>/interactive/ and `git status` stays clean.

The server is rooted at a git repository holding a copy of the project's `notebooks/` and `.gitignore` (not the
clone itself, whose ignored `notebooks/*.ipynb` may hold a developer's outputs). Profile `quick` is redefined as
test_cells' tiny profile ($LESIONLIB_EXPERIMENTS): one epoch of two iterations on 16^3 patches.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser import chrome, console_errors
from lesionlib import config
from test_cells import TINY

ROOT = config.PROJECT_ROOT


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def lab_repo(tmp_path, isolated_roots, make_atlas_tree, make_child_tree, monkeypatch):
    """A git repository with the project's notebooks and .gitignore, all committed; profile `quick` made tiny."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_*"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "notebooks")
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(TINY.replace("  tiny:", "  quick:"))
    monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(experiments))
    base = isolated_roots["data"] / "synthetic" / "quick"
    make_atlas_tree(base / "adult", lesion_voxels={f"r001s00{i}": 20 + 5 * i for i in range(1, 6)}, shape=(16, 16, 16))
    make_child_tree(base / "child", lesion_voxels={(s, ses): 30 for s in ("01", "02", "03") for ses in ("1", "2")},
                    shape=(14, 16, 12))
    return repo


@pytest.fixture
def lab_server(lab_repo, tmp_path):
    """`python -m lesionlib.lab --root <repo>` (what `make lab` runs), its URL read from the first line it prints."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (it is pinned in the lock: make setup)")
    env = {**os.environ, "JUPYTER_TOKEN": "lesionlib-test-token",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = open(tmp_path / "lab.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "lesionlib.lab", "--root", str(lab_repo), "--port", "18888", "--",
                             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            text = (tmp_path / "lab.log").read_text()
            url = url or (re.search(r"^\[lab\] JupyterLab on .*?: (http://127\.0\.0\.1:\d+/lab/tree/\S+)$", text, re.M)
                          or [None, None])[1]
            if url:
                try:
                    status = url.split("/lab/")[0] + "/api/status?token=lesionlib-test-token"
                    with urllib.request.urlopen(status, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.3)
        else:
            pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
        assert url.endswith("/lab/tree/notebooks/cell.ipynb?token=lesionlib-test-token"), url
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels: the session this test started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait(predicate, timeout_s: float, what: str, driver) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    text = driver.execute_script("return document.body.innerText")[-3000:]
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; page text:\n{text}")


_RUN = """
const done = arguments[arguments.length - 1];
const app = window.jupyterapp;
app.commands.execute(arguments[0]).then(() => done('ok'), (e) => done('error: ' + e));
"""


def test_cell_notebook_runs_and_saves_in_jupyterlab(lab_server, lab_repo, isolated_roots, tmp_path):
    source_before = (lab_repo / "notebooks" / "cell.py").read_bytes()
    with chrome() as driver:
        driver.set_script_timeout(120)
        driver.get(lab_server)
        _wait(lambda: driver.execute_script(
            "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
            "return !!(w && w.context && w.context.path === 'notebooks/cell.ipynb' && w.content"
            " && w.content.widgets.length > 3 && w.sessionContext.session && w.sessionContext.session.kernel)"),
            60, "notebooks/cell.ipynb open as a notebook with a kernel", driver)
        kernel = driver.execute_script("return window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayName")
        assert kernel == "Python 3 (ipykernel)", kernel
        assert driver.execute_async_script(_RUN, "notebook:run-all-cells") == "ok"
        text = _wait(lambda: (lambda t: t if ("hausdorff95_mm" in t and "child_all" in t) or "Traceback" in t else None)(
            driver.execute_script("return document.querySelector('.jp-Notebook').innerText")),
            120, "the metrics table of the last cell", driver)
        assert "Traceback" not in text, text[-3000:]
        assert "child_test" in text and "empty predictions" in text  # metrics_summary's table, in the page
        assert driver.execute_async_script(_RUN, "docmanager:save") == "ok"
        # cell.py itself opens as a notebook too (right-click > Open With > Notebook), with the same cells
        n_cells = driver.execute_script("return window.jupyterapp.shell.currentWidget.content.widgets.length")
        assert driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.jupyterapp.commands.execute('docmanager:open', {path: 'notebooks/cell.py', factory: 'Notebook'})"
            ".then(() => done('ok'), (e) => done('error: ' + e))") == "ok"
        _wait(lambda: driver.execute_script(
            "const w = window.jupyterapp.shell.currentWidget;"
            "return w && w.context.path === 'notebooks/cell.py' && w.content.widgets && w.content.widgets.length"
            f" === {n_cells}"), 30, "notebooks/cell.py open as a notebook", driver)
        errors = [e for e in console_errors(driver) if "favicon" not in e]
    saved = nbformat.read(str(lab_repo / "notebooks" / "cell.ipynb"), as_version=4)
    outputs = [o for c in saved.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    # the run wrote under results/<profile>/interactive/, not beside the notebook, not into the grid's folder
    runs = list((isolated_roots["results"] / "quick" / "interactive").glob("unet_adult-full_seed0-*"))
    assert len(runs) == 1 and (runs[0] / "metrics.csv").is_file(), runs
    assert not (isolated_roots["results"] / "quick" / "unet_adult-full_seed0").exists()
    assert sorted(p.name for p in (lab_repo / "notebooks").iterdir() if p.name.startswith("cell")) == \
        ["cell.ipynb", "cell.py"]
    # saving through jupytext rewrote cell.py byte for byte; git sees nothing new
    assert (lab_repo / "notebooks" / "cell.py").read_bytes() == source_before
    assert _git(lab_repo, "status", "--porcelain") == ""
    assert not errors, errors


def test_make_lab_runs_lesionlib_lab():
    proc = subprocess.run(["make", "-n", "lab", "LAB_PORT=9123"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"/bin/python -m lesionlib\.lab --port 9123$", proc.stdout, re.M), proc.stdout


def test_browser_tests_skip_without_a_browser_saying_why(monkeypatch):
    monkeypatch.setenv("LESIONLIB_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.skip.Exception, match=r"selenium is not installed|no Chromium browser .*apt-get install"):
        with chrome():
            pass
