"""Profiles of the experiment grid (``experiments.yaml`` at the project root).

A profile fixes the data resolution, cohort sizes, epochs and seeds: ``quick`` (CPU, the
embedded default), ``gpu`` (one H100, 30 minutes) and ``paper`` (the paper's settings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = "quick"


def experiments_file() -> Path:
    """``$LESIONLIB_EXPERIMENTS`` or ``experiments.yaml`` at the project root."""
    return Path(os.environ.get("LESIONLIB_EXPERIMENTS", PROJECT_ROOT / "experiments.yaml"))


def load_experiments(path: Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else experiments_file()
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_profile(name: str = DEFAULT_PROFILE, path: Path | None = None) -> dict[str, Any]:
    """The settings of one profile, with ``name`` added. Unknown names raise ``KeyError``."""
    profiles = load_experiments(path)["profiles"]
    if name not in profiles:
        raise KeyError(f"unknown profile {name!r} in {path or experiments_file()}; known: {sorted(profiles)}")
    return {"name": name, **profiles[name]}


def data_root() -> Path:
    """Root for generated data: ``$LESIONLIB_DATA`` or ``<project>/data``."""
    return Path(os.environ.get("LESIONLIB_DATA", PROJECT_ROOT / "data"))


def results_root() -> Path:
    """Root for everything derived (runs, caches): ``$LESIONLIB_RESULTS`` or ``<project>/results``."""
    return Path(os.environ.get("LESIONLIB_RESULTS", PROJECT_ROOT / "results"))


def synthetic_roots(profile: str = DEFAULT_PROFILE) -> dict[str, Path]:
    """Where a profile's synthetic cohorts live: ``{'adult': ..., 'child': ...}``."""
    base = data_root() / "synthetic" / profile
    return {"adult": base / "adult", "child": base / "child"}
