"""Every run page says how to run the cell again: the papermill and `lesionlib grid run` commands with the run's
parameters, and the settings it changed relative to its profile."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import nbformat
import yaml

from lesionlib.cells import with_overrides
from lesionlib.experiments import grid_by_id, resolved_settings
from lesionlib.profile import load_profile
from lesionlib.reporting.book import prepare_run_pages
from lesionlib.reporting.rerun import rerun_commands, rerun_markdown, settings_changed

RUN = "unet_adult-full_seed0"


def _run_dir(results: Path, overrides: dict | None = None, edit: dict | None = None) -> Path:
    """A grid cell's folder as a run leaves it: params.yaml with identity, resolved settings, overrides, stages."""
    profile = load_profile("quick")
    spec = grid_by_id(profile)[RUN]
    ran = with_overrides(profile, "unet", overrides) if overrides else profile
    resolved = resolved_settings(spec, ran)["settings"]
    resolved.update(edit or {})
    run_dir = results / "quick" / RUN
    run_dir.mkdir(parents=True)
    params = {**spec.params(), "resolved": resolved, "overrides": overrides or {},
              "stages": {"cell": {"parameters": {"results_root": str(results), "out_dir": "/x/.partial-cell"}}}}
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run_dir


def test_commands_carry_the_runs_parameters(tmp_path):
    run_dir = _run_dir(tmp_path / "res")
    commands = rerun_commands(run_dir)
    convert, papermill = commands["papermill"].replace("\\\n", "").splitlines()
    assert convert == "jupytext --to ipynb notebooks/cell.py -o /tmp/cell.ipynb"
    assert shlex.split(papermill) == ["papermill", "/tmp/cell.ipynb", f"/tmp/{RUN}.ipynb", "-p", "profile", "quick",
                                      "-p", "run_id", RUN, "-p", "results_root", str(tmp_path / "res")]
    assert shlex.split(commands["grid"]) == ["lesionlib", "grid", "run", "--profile", "quick", "--run-id", RUN,
                                             "--results", str(tmp_path / "res")]
    assert settings_changed(run_dir) == []
    text = rerun_markdown(run_dir)
    assert "relative to profile `quick`**: none" in text and commands["papermill"] in text


def test_overrides_and_profile_edits_are_listed_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONLIB_RESULTS", str(tmp_path / "res"))  # the default root: not repeated in commands
    epochs_now = resolved_settings(grid_by_id("quick")[RUN])["settings"]["epochs"]
    run_dir = _run_dir(tmp_path / "res", overrides={"epochs_adult": epochs_now + 5}, edit={"lr": 0.5})
    papermill = shlex.split(rerun_commands(run_dir)["papermill"].replace("\\\n", "").splitlines()[1])
    assert papermill[3:] == ["-p", "profile", "quick", "-p", "run_id", RUN, "-y",
                             f"overrides: {{epochs_adult: {epochs_now + 5}}}"]
    changes = {c.setting: (c.this_run, c.profile_now, c.why) for c in settings_changed(run_dir)}
    lr_now = resolved_settings(grid_by_id("quick")[RUN])["settings"]["lr"]
    assert changes == {"epochs": (epochs_now + 5, epochs_now, "override"), "lr": (0.5, lr_now, "profile edited since")}
    text = rerun_markdown(run_dir)
    assert f"| `epochs` | {epochs_now + 5} | {epochs_now} | override |" in text
    assert f"overrides of this run: `epochs_adult: {epochs_now + 5}`" in text


def test_run_pages_show_how_to_run_again_even_a_failed_first_attempt(tmp_path):
    results = tmp_path / "res"
    run_dir = _run_dir(results)
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (run_dir / "cell.ipynb").write_text(json.dumps(empty))
    (run_dir / "metrics.csv").write_text("case_id\n")
    failed = results / "quick" / "unet_child5_seed0" / "FAILED-cell-20260101T000000Z"  # failed before training
    failed.mkdir(parents=True)
    (failed / "cell.FAILED.ipynb").write_text(json.dumps(empty))
    (failed / "error.txt").write_text("RuntimeError: boom\n")
    pages = {p.relative_to(tmp_path / "book" / "book" / "runs").as_posix(): p
             for p in prepare_run_pages(results, "quick", tmp_path / "book")}
    assert set(pages) == {f"{RUN}/cell.ipynb", "unet_child5_seed0/cell.FAILED.ipynb"}
    page = nbformat.read(str(pages[f"{RUN}/cell.ipynb"]), as_version=4)
    assert page.cells[1].source.startswith("## How to run it again")
    assert rerun_commands(run_dir)["papermill"] in page.cells[1].source
    failed_page = nbformat.read(str(pages["unet_child5_seed0/cell.FAILED.ipynb"]), as_version=4)
    assert "lesionlib grid run --profile quick --run-id unet_child5_seed0" in failed_page.cells[1].source
    assert "no resolved settings" in failed_page.cells[1].source
