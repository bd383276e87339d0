"""A researcher's own profiles file (issue #22 item 3): `extends:` a built-in profile, typed and validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lesionlib.profile import ProfileError, deep_merge, load_profile, profile_names

ROOT = Path(__file__).resolve().parent.parent


def _own(tmp_path: Path, body: str, name: str = "my.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"seeds": [0, 1, 2], "data": {"n_adult": 655, "resolution_mm": 1.0}, "methods": {"unet": {"lr": 0.01}}}
    merged = deep_merge(base, {"seeds": [0], "data": {"n_adult": 20}, "methods": {"unet": {"batch_size": 4}}})
    assert merged == {"seeds": [0], "data": {"n_adult": 20, "resolution_mm": 1.0},
                      "methods": {"unet": {"lr": 0.01, "batch_size": 4}}}
    assert base["data"]["n_adult"] == 655  # the base is not modified


def test_own_profile_extends_paper_and_changes_only_its_keys(tmp_path, monkeypatch):
    own = _own(tmp_path, "profiles:\n  mine: {extends: paper, seeds: [0], methods: {unet: {batch_size: 4}}}\n")
    monkeypatch.setenv("LESIONLIB_PROFILES", str(own))
    paper, mine = load_profile("paper"), load_profile("mine")
    assert "mine" in profile_names() and "paper" in profile_names()
    assert mine.extends == "paper" and mine.defined_in == str(own.resolve())
    assert mine.seeds == (0,) and paper.seeds == (0, 1, 2)
    assert mine.method("unet").batch_size == 4 and paper.method("unet").batch_size == 2
    # everything it does not name is the paper's
    assert mine.data == paper.data and mine.method("unet").num_workers == paper.method("unet").num_workers == 8
    assert mine.method("resunet") == paper.method("resunet") and mine.device == "cuda"
    assert mine.description == ""  # a description is not inherited: it would describe the paper


def test_own_profile_can_extend_an_own_profile_and_chains_resolve(tmp_path, monkeypatch):
    own = _own(tmp_path, "profiles:\n  a: {extends: quick, seeds: [3]}\n  b: {extends: a, data: {n_adult: 10}}\n")
    monkeypatch.setenv("LESIONLIB_PROFILES", str(own))
    b = load_profile("b")
    assert b.seeds == (3,) and b.data.n_adult == 10 and b.data.resolution_mm == load_profile("quick").data.resolution_mm


@pytest.mark.parametrize("body, named", [
    ("profiles:\n  mine: {extends: paper, methods: {unet: {batch_sise: 4}}}\n", "methods.unet.batch_sise: unknown key"),
    ("profiles:\n  mine: {extends: paper, dataa: {n_adult: 3}}\n", "dataa: unknown key"),
    ("profiles:\n  mine: {extends: papr}\n", "extends: unknown profile 'papr'"),
    ("profiles:\n  mine: {extends: mine2}\n  mine2: {extends: mine}\n", "extends: cycle"),
    ("profiles:\n  paper: {seeds: [0]}\n", "defined in both"),
    ("profiles:\n  mine: {extends: [paper]}\n", "expected the name of one profile"),
])
def test_bad_own_profiles_are_errors_naming_the_key_and_the_file(tmp_path, monkeypatch, body, named):
    own = _own(tmp_path, body)
    monkeypatch.setenv("LESIONLIB_PROFILES", str(own))
    name = "paper" if "paper: {seeds" in body else "mine"
    with pytest.raises(ProfileError) as err:
        load_profile(name)
    assert named in str(err.value) and str(own.resolve()) in str(err.value)


def test_missing_profiles_file_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONLIB_PROFILES", str(tmp_path / "nope.yaml"))
    with pytest.raises(ProfileError, match="nope.yaml: profiles file named by"):
        load_profile("quick")


def test_command_line_profiles_option_reaches_every_process(tmp_path):
    """`lesionlib --profiles FILE` (relative path) is exported as an absolute $LESIONLIB_PROFILES."""
    _own(tmp_path, "profiles:\n  mine: {extends: quick, seeds: [7]}\n")
    env = {k: v for k, v in os.environ.items() if k != "LESIONLIB_PROFILES"}
    proc = subprocess.run([sys.executable, "-m", "lesionlib", "--profiles", "my.yaml", "grid", "list", "--profile",
                           "mine", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = json.loads(proc.stdout)
    assert grid["profile"]["seeds"] == [7] and grid["profile"]["extends"] == "quick"
    bad = subprocess.run([sys.executable, "-m", "lesionlib", "--profiles", "missing.yaml", "grid", "list",
                          "--profile", "mine"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "missing.yaml: profiles file named by" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_rehearsal_profile_is_the_paper_profile_with_smoke_schedules(monkeypatch):
    """workflow/rehearsal.yaml changes schedules, device, seeds and sizes; the paper's code path stays."""
    monkeypatch.setenv("LESIONLIB_PROFILES", str(ROOT / "workflow" / "rehearsal.yaml"))
    paper, rehearsal = load_profile("paper"), load_profile("rehearsal")
    assert rehearsal.extends == "paper" and rehearsal.device == "cpu" and rehearsal.seeds == (0,)
    assert rehearsal.data.adult_dataset == "atlas_v2" and rehearsal.data.child_dataset == "child_cohort"
    assert rehearsal.data.child_session2_masks == "propagated"
    assert rehearsal.grid == paper.grid and rehearsal.splits == paper.splits  # every cell of the paper's grid
    nn, paper_nn = rehearsal.method("nnunet"), paper.method("nnunet")
    assert nn.folds == paper_nn.folds == 5 and nn.tta and nn.num_processes > 0
    assert rehearsal.method("resunet").encoder == "medicalnet"
    assert rehearsal.method("unet").num_workers > 0 and rehearsal.method("unet").lr == paper.method("unet").lr
