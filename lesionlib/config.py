"""Where things live: the project root, the experiments file, the data and results roots.

Profiles themselves (what ``experiments.yaml`` holds) are read by :mod:`lesionlib.profile`.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = "quick"


def experiments_file() -> Path:
    """``$LESIONLIB_EXPERIMENTS`` or ``experiments.yaml`` at the project root."""
    return Path(os.environ.get("LESIONLIB_EXPERIMENTS", PROJECT_ROOT / "experiments.yaml"))


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


PROFILES_ENV = "LESIONLIB_PROFILES"


def own_profile_files() -> list[Path]:
    """The researcher's own profile files: ``$LESIONLIB_PROFILES``, paths separated by ``os.pathsep``.

    Each holds ``profiles:`` like ``experiments.yaml``; its profiles may ``extends:`` a built-in one.
    Relative paths are taken from the current folder, and the variable is rewritten with absolute
    paths so that every process started from here (Snakemake jobs, notebook kernels running in other
    folders) reads the same files. A listed file that does not exist is an error naming it.
    """
    raw = os.environ.get(PROFILES_ENV, "")
    paths = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    if paths:
        os.environ[PROFILES_ENV] = os.pathsep.join(str(p) for p in paths)
    for path in paths:
        if not path.is_file():
            from lesionlib.profile import ProfileError

            raise ProfileError(f"{path}: profiles file named by ${PROFILES_ENV} does not exist")
    return paths
