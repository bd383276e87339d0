"""How to run one cell of the grid again, read from its folder: the book shows it on every run page.

From ``<run_dir>/params.yaml`` (what :func:`lesionlib.cells.train_cell` and the notebook runner record):
the exact ``papermill`` command of the ``cell`` notebook with the run's parameters, the ``lesionlib grid run``
equivalent, and every setting of the run that differs from what its profile resolves to now, whether
changed for this run only (``overrides``) or because the profile was edited after it ran.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from lesionlib import config

__all__ = ["SettingChange", "rerun_commands", "rerun_markdown", "settings_changed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingChange:
    """One resolved setting whose value in the run differs from the profile's now; ``why`` is ``override``
    (changed for this run only) or ``profile edited since``."""

    setting: str
    this_run: Any
    profile_now: Any
    why: str


def _read_params(run_dir: Path, profile: str | None = None) -> dict[str, Any]:
    """``<run_dir>/params.yaml``; without one, ``{run_id: <folder name>, profile}`` when ``profile`` is given (a
    grid cell that failed before training), else ``FileNotFoundError`` naming the file."""
    path = Path(run_dir) / "params.yaml"
    if not path.is_file():
        if profile:
            return {"run_id": Path(run_dir).name, "profile": profile}
        raise FileNotFoundError(f"{path}: no params.yaml (the run has not trained yet)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(params, dict) or not params.get("run_id") or not params.get("profile"):
        raise ValueError(f"{path}: expected a mapping with run_id and profile")
    return params


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (``{epochs_adult: 2}``, ``[16, 16, 16]``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _results_root(params: Mapping[str, Any]) -> str | None:
    """The results root the run was given, when it is not the default one (``None`` otherwise)."""
    recorded = ((params.get("stages") or {}).get("cell") or {}).get("parameters", {}).get("results_root")
    if not recorded:
        return None
    return None if Path(recorded).resolve() == Path(config.results_root()).resolve() else str(recorded)


def rerun_commands(run_dir: Path, profile: str | None = None) -> dict[str, str]:
    """``{'papermill': ..., 'grid': ...}``: shell commands (run from the clone) that run this cell again.

    ``papermill`` converts ``notebooks/cell.py`` and executes it with the run's profile, run id, results root
    (when not the default) and ``overrides`` (when any); without ``out_dir`` it writes into a new
    ``results/<profile>/interactive/<run_id>-<UTC time>/``. ``grid`` is ``lesionlib grid run``, which writes
    the grid's folder of the cell. A profile read from ``$LESIONLIB_PROFILES`` is named in front of both.
    ``profile``: the grid cell's profile, used when the folder has no ``params.yaml``.
    """
    params = _read_params(run_dir, profile)
    run_id, profile = str(params["run_id"]), str(params["profile"])
    root = _results_root(params)
    env = f"{config.PROFILES_ENV}={shlex.quote(os.environ[config.PROFILES_ENV])} " \
        if os.environ.get(config.PROFILES_ENV) else ""
    args = ["-p", "profile", profile, "-p", "run_id", run_id]
    if root:
        args += ["-p", "results_root", root]
    if params.get("overrides"):
        args += ["-y", f"overrides: {_flow(params['overrides'])}"]
    papermill = (f"jupytext --to ipynb notebooks/cell.py -o /tmp/cell.ipynb\n"
                 f"{env}papermill /tmp/cell.ipynb /tmp/{run_id}.ipynb \\\n    {shlex.join(args)}")
    grid = f"{env}lesionlib grid run {shlex.join(['--profile', profile, '--run-id', run_id])}"
    if root:
        grid += f" --results {shlex.quote(root)}"
    return {"papermill": papermill, "grid": grid}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def settings_changed(run_dir: Path) -> list[SettingChange]:
    """Every resolved setting of the run that differs from what its profile resolves to now.

    ``why`` is ``override`` for a setting changed for this run only (its ``overrides``), else
    ``profile edited since``. A run id no longer in its profile's grid gives one row saying so.
    """
    from lesionlib.cells import with_overrides
    from lesionlib.experiments import grid_by_id, resolved_settings
    from lesionlib.profile import load_profile

    params = _read_params(run_dir)
    profile = load_profile(str(params["profile"]))
    grid = grid_by_id(profile)
    run_id = str(params["run_id"])
    if run_id not in grid:
        return [SettingChange("run_id", run_id, "not in the grid", "profile edited since")]
    spec = grid[run_id]
    now = _flatten(resolved_settings(spec, profile)["settings"])
    overrides = params.get("overrides") or {}
    with_them = _flatten(resolved_settings(spec, with_overrides(profile, spec.method, overrides))["settings"]) \
        if overrides else now
    ran = _flatten(params.get("resolved") or {})
    changes = []
    for key in sorted(set(now) | set(ran)):
        if now.get(key) != ran.get(key):
            why = "override" if with_them.get(key) == ran.get(key) else "profile edited since"
            changes.append(SettingChange(key, ran.get(key, "–"), now.get(key, "–"), why))
    return changes


def _md(value: Any) -> str:
    text = _flow(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "/")


def rerun_markdown(run_dir: Path, profile: str | None = None) -> str:
    """The "How to run it again" section of a run page (Markdown): commands, then the changed settings.

    ``profile``: the grid cell's profile, used when the folder has no ``params.yaml`` (failed before training).
    """
    params = _read_params(run_dir, profile)
    run_id, profile = params["run_id"], params["profile"]
    commands = rerun_commands(run_dir, profile)
    lines = [
        "## How to run it again",
        "",
        f"By hand, with papermill (from the clone; it writes into a new "
        f"`results/{profile}/interactive/{run_id}-<UTC time>/` and leaves the grid's results as they are; add "
        f"`-y \"overrides: {{...}}\"` to change a setting of the method):",
        "",
        "```bash",
        commands["papermill"],
        "```",
        "",
        f"Through the grid, into this run's folder (`results/{profile}/{run_id}/`), then `make book` rebuilds "
        f"the report and this book from what is on disk (`make book` alone runs the cell again when its folder "
        f"is deleted):",
        "",
        "```bash",
        commands["grid"],
        "```",
        "",
        f"In JupyterLab (`make lab`), open `notebooks/cell.ipynb` (the notebook of `notebooks/cell.py`) and set "
        f"`run_id = \"{run_id}\"`"
        + (f" and `profile = \"{profile}\"`" if profile != config.DEFAULT_PROFILE else "") + ".",
        "",
    ]
    overrides = params.get("overrides") or {}
    if not params.get("resolved"):
        lines.append(f"**Settings changed relative to profile `{profile}`**: not compared (its `params.yaml` "
                     f"records no resolved settings).")
        return "\n".join(lines)
    try:
        changes = settings_changed(run_dir)
    except Exception as exc:  # a profile that no longer loads must not hide the commands
        log.warning("%s: settings not compared with profile %s (%s)", run_dir, profile, exc)
        lines.append(f"**Settings changed relative to profile `{profile}`**: not compared ({exc}).")
        return "\n".join(lines)
    head = f"**Settings changed relative to profile `{profile}`**"
    if overrides:
        head += " (overrides of this run: " + ", ".join(f"`{k}: {_md(v)}`" for k, v in overrides.items()) + ")"
    if not changes:
        lines.append(f"{head}: none; this run used the profile's settings as they are now.")
        return "\n".join(lines)
    lines += [f"{head}:", "", "| setting | this run | profile now | why |", "| --- | --- | --- | --- |"]
    lines += [f"| `{c.setting}` | {_md(c.this_run)} | {_md(c.profile_now)} | {c.why} |" for c in changes]
    return "\n".join(lines)
