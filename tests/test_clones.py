"""One clone, one code (issue #22): two clones share one venv, whose editable install points at one of them.

A second clone is made under a temporary folder, with a profile that only its ``experiments.yaml`` has,
and processes are started as a user (or Make, Snakemake, a notebook kernel) would start them, with this
venv's Python. Each either imports the clone it was started from or stops with an error naming both.
Subprocesses import only ``lesionlib`` (not torch), except one ``grid list``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lesionlib import clone, config

ONLY_IN_CLONE2 = "clone2_only"
WHERE = "import os, lesionlib; print(os.path.realpath(lesionlib.__file__))"
# Variables of the calling shell (or of `make test`) that would decide the answer instead of the test.
UNSET = ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONHOME", clone.CLONE_ENV, clone.CHECK_ENV, "LESIONLIB_EXPERIMENTS",
         "LESIONLIB_PROFILES", "LESIONLIB_RESULTS", "LESIONLIB_DATA")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(extra)
    return env


def _clone_env(root: Path) -> dict[str, str]:
    """What the clone's Makefile exports to every process it starts."""
    return _env(LESIONLIB_CLONE=str(root), PYTHONPATH=str(root))


def _python(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    # -P: the current folder is not put on sys.path, as for a console script, Snakemake or a kernel
    return subprocess.run([sys.executable, "-P", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def clone2(tmp_path_factory) -> Path:
    """A second clone of the working tree (its uncommitted changes included) with its own profile."""
    root = config.PROJECT_ROOT
    dst = tmp_path_factory.mktemp("clones") / "clone2"
    dst.mkdir()
    shutil.copytree(root / "lesionlib", dst / "lesionlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "experiments.yaml", "data_manifest.yaml", "Makefile", "Snakefile"):
        shutil.copy(root / name, dst / name)
    experiments = dst / "experiments.yaml"
    text = experiments.read_text()
    assert "\nprofiles:\n" in text
    experiments.write_text(text.replace(
        "\nprofiles:\n", f'\nprofiles:\n  {ONLY_IN_CLONE2}:\n    description: "only in the second clone"\n'
                         f"    device: cpu\n    seeds: [0]\n", 1))
    (dst / "results" / "quick" / "_book").mkdir(parents=True)
    return dst.resolve()


@pytest.fixture(scope="module")
def venv_clone(clone2) -> Path:
    """The folder this venv imports lesionlib from by default (its editable install: the first clone)."""
    proc = _python("-c", WHERE, cwd=clone2.parent, env=_env())
    if proc.returncode != 0:
        pytest.skip(f"lesionlib is not installed in {sys.prefix}: {proc.stderr.strip()[-200:]}")
    return Path(proc.stdout.strip()).parent.parent


def _assert_names_both(proc: subprocess.CompletedProcess, imported: Path, started: Path) -> None:
    assert proc.returncode != 0
    assert "WrongCloneError" in proc.stderr, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert str(imported) in message and str(started) in message, message
    assert f"PYTHONPATH={started}" in message  # the fix


def test_started_in_another_clone_stops_naming_both(clone2, venv_clone):
    """(a) cwd in the second clone, no PYTHONPATH: the venv would import the first clone; it stops instead."""
    assert venv_clone != clone2
    _assert_names_both(_python("-c", "import lesionlib", cwd=clone2, env=_env()), venv_clone, clone2)
    script = Path(sys.executable).with_name("lesionlib")  # the console script: its folder, not cwd, on sys.path
    if script.exists():
        proc = subprocess.run([str(script), "grid", "list", "--profile", ONLY_IN_CLONE2], cwd=clone2, env=_env(),
                              capture_output=True, text=True, timeout=120)
        _assert_names_both(proc, venv_clone, clone2)
        assert "unknown profile" not in proc.stderr


def test_the_clones_makefile_environment_imports_it(clone2):
    """(b) With what clone2's Makefile exports, clone2's lesionlib and clone2's experiments.yaml are used."""
    proc = _python("-c", WHERE, cwd=clone2, env=_clone_env(clone2))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == clone2 / "lesionlib" / "__init__.py"
    proc = _python("-m", "lesionlib", "grid", "list", "--profile", ONLY_IN_CLONE2, cwd=clone2, env=_clone_env(clone2))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "unet_adult-full_seed0" in proc.stdout


def test_book_kernels_import_the_clone(clone2, venv_clone, tmp_path):
    """(c) A kernel runs in results/<profile>/_book (inside the clone) or, with LESIONLIB_RESULTS elsewhere,
    outside every clone; with the clone's environment it imports the clone, without it, it stops."""
    book = clone2 / "results" / "quick" / "_book"
    proc = _python("-c", WHERE, cwd=book, env=_clone_env(clone2))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == clone2 / "lesionlib" / "__init__.py"
    _assert_names_both(_python("-c", "import lesionlib", cwd=book, env=_env()), venv_clone, clone2)
    elsewhere = tmp_path / "results" / "quick" / "_book"
    elsewhere.mkdir(parents=True)
    proc = _python("-c", WHERE, cwd=elsewhere, env=_clone_env(clone2))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == clone2 / "lesionlib" / "__init__.py"


def test_outside_every_clone_any_copy_imports(clone2, venv_clone, tmp_path):
    """(d) cwd outside every clone, no $LESIONLIB_CLONE: the venv's default, or an installed copy, imports."""
    proc = _python("-c", WHERE, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == venv_clone / "lesionlib" / "__init__.py"
    site = tmp_path / "site-packages"  # an installed, non-editable copy: no pyproject.toml beside it
    shutil.copytree(clone2 / "lesionlib", site / "lesionlib", ignore=shutil.ignore_patterns("__pycache__"))
    proc = _python("-c", WHERE, cwd=tmp_path, env=_env(PYTHONPATH=str(site)))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == site / "lesionlib" / "__init__.py"
    # ... but not in a clone, whose code it is not
    proc = _python("-c", "import lesionlib", cwd=clone2, env=_env(PYTHONPATH=str(site)))
    _assert_names_both(proc, site, clone2)
    assert "installed copy" in proc.stderr


def test_lesionlib_clone_is_checked_and_symlinks_resolved(clone2, venv_clone, tmp_path):
    # $LESIONLIB_CLONE names clone2, but PYTHONPATH was lost on the way (cwd outside every clone)
    _assert_names_both(_python("-c", "import lesionlib", cwd=tmp_path, env=_env(LESIONLIB_CLONE=str(clone2))),
                       venv_clone, clone2)
    link = tmp_path / "link-to-clone2"
    link.symlink_to(clone2, target_is_directory=True)
    proc = _python("-c", WHERE, cwd=link / "results", env=_clone_env(link))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == clone2 / "lesionlib" / "__init__.py"
    proc = _python("-c", "import lesionlib", cwd=clone2, env=_env(LESIONLIB_CLONE_CHECK="0"))
    assert proc.returncode == 0, proc.stderr  # the check can be turned off


def test_makefile_exports_the_clone(clone2, tmp_path):
    """Make's recipes (and so Snakemake, its jobs and the kernels) get LESIONLIB_CLONE and PYTHONPATH."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    extra = tmp_path / "extra.mk"
    extra.write_text('show:\n\t@echo "clone=$$LESIONLIB_CLONE"; echo "path=$$PYTHONPATH"\n')
    for inherited, expected_path in ((None, str(clone2)), ("/elsewhere", f"{clone2}:/elsewhere")):
        env = _env(LESIONLIB_CLONE="/stale", **({"PYTHONPATH": inherited} if inherited else {}))
        proc = subprocess.run([make, "-C", str(clone2), "--no-print-directory", "-s", "-f", "Makefile",
                               "-f", str(extra), "show"], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [f"clone={clone2}", f"path={expected_path}"]


def test_snakemake_by_hand_in_the_second_clone(clone2):
    """Snakemake started by hand puts its Snakefile's folder first on sys.path: clone2's profile is found."""
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("no snakemake in this venv")
    proc = subprocess.run([str(snakemake), "-n", "-q", "--config", f"profile={ONLY_IN_CLONE2}"], cwd=clone2,
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]


def test_child_environ_puts_this_clone_first(monkeypatch):
    root = clone.imported_root()
    assert clone.is_clone(root)  # the tests run from a clone
    env = clone.child_environ({"PYTHONPATH": os.pathsep.join(["/a", root, "/b"]), "OTHER": "1"})
    assert env["PYTHONPATH"] == os.pathsep.join([root, "/a", "/b"])
    assert env[clone.CLONE_ENV] == root and env["OTHER"] == "1"
    monkeypatch.setenv("PYTHONPATH", "/x")
    monkeypatch.setenv(clone.CLONE_ENV, "/stale")
    clone.export_to_children()
    assert os.environ["PYTHONPATH"] == os.pathsep.join([root, "/x"]) and os.environ[clone.CLONE_ENV] == root
