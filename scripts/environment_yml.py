"""Write ``environment.yml`` (conda) from the project's one lock: ``pyproject.toml`` + ``requirements/constraints.txt``.

The direct dependencies are those of ``pyproject.toml`` (``[project] dependencies`` and the ``test``
extra); each is pinned to the version in ``requirements/constraints.txt``, the exact environment
``scripts/setup.sh`` installs. Packages that conda-forge lacks (or lags behind on) go through pip.

    python scripts/environment_yml.py            # rewrite environment.yml
    python scripts/environment_yml.py --check    # exit 1 when environment.yml is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_ONLY = {"monai", "nnunetv2", "torchio", "jupyter-book", "snakemake"}
CONDA_NAMES = {"torch": "pytorch", "SimpleITK": "simpleitk", "pyyaml": "pyyaml"}

HEADER = """\
# Conda environment for lesionlib, GENERATED from pyproject.toml and requirements/constraints.txt by
# scripts/environment_yml.py: do not edit by hand (a test fails when it is out of date).
#   conda env create -f environment.yml && conda activate lesionlib
# Run from the project root: the last pip line installs lesionlib itself in editable mode.
# pytorch/torchvision come from conda-forge as a matched pair (a PyPI torchvision over a conda torch can
# fail to import, and nnunetv2 needs torchvision through timm). Pin e.g. `pytorch=2.14.1=cuda*` for a GPU.
name: lesionlib
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
"""


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def render() -> str:
    """The content of ``environment.yml``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.split(";")[0].strip()
    missing = [n for n in direct if _canonical(n) not in pins]
    if missing:
        raise SystemExit(f"not pinned in requirements/constraints.txt: {missing}")
    conda = [f"  - {CONDA_NAMES.get(n, n.lower())}={pins[_canonical(n)]}" for n in direct if n not in PIP_ONLY]
    pip = [f"      - {n}=={pins[_canonical(n)]}" for n in direct if n in PIP_ONLY]
    return HEADER + "\n".join(conda) + "\n  - pip:\n" + "\n".join(pip) + "\n      - -e .\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that environment.yml is current")
    args = parser.parse_args(argv)
    text, path = render(), ROOT / "environment.yml"
    if args.check:
        if path.read_text() != text:
            print(f"{path} is out of date: run python scripts/environment_yml.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
