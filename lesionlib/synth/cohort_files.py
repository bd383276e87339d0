"""Writing a synthetic cohort: staging, idempotency, dataset_description.json, tables, NIfTI headers.

A cohort is generated into a hidden sibling folder (``.<name>.partial-<pid>``) and renamed
onto its root only when complete, so an interrupted run never leaves a half-written cohort
that looks finished. A root whose ``dataset_description.json`` records the same generator
version and parameters is left alone (and reported as up to date). An existing root is only
ever replaced if it is empty or was itself written by this generator (``"Synthetic": true``):
real data are never deleted.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import nibabel as nib
import numpy as np

import lesionlib
from lesionlib.io import atomic_path, save_nifti_atomic

log = logging.getLogger(__name__)

SYNTH_FORMAT_VERSION = "3"
"""Bumped whenever the generator's output changes for the same parameters."""
GENERATOR_NAME = "lesionlib.synth"
DESCRIPTION_FILE = "dataset_description.json"

__all__ = [
    "SYNTH_FORMAT_VERSION", "GENERATOR_NAME", "generator_parameters", "cohort_is_current", "staged_cohort",
    "write_json_atomic", "write_tsv_atomic", "write_dataset_description", "save_volume",
]


def generator_parameters(cohort: str, **params: Any) -> dict[str, Any]:
    """The parameters that identify a generated cohort (recorded and compared for idempotency)."""
    return {"cohort": cohort, "generator": GENERATOR_NAME, "generator_version": lesionlib.__version__,
            "synth_format_version": SYNTH_FORMAT_VERSION, **params}


def _read_description(root: Path) -> dict[str, Any] | None:
    path = root / DESCRIPTION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def cohort_is_current(root: Path, params: dict[str, Any], expected_files: Iterable[Path]) -> bool:
    """True if ``root`` holds a finished cohort generated with exactly ``params``."""
    description = _read_description(Path(root))
    if not description or description.get("GeneratorParameters") != params:
        return False
    return all(Path(p).is_file() for p in expected_files)


def _check_replaceable(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root}: exists and is not a folder; refusing to replace it")
    if not any(root.iterdir()):
        return
    description = _read_description(root)
    if not description or description.get("Synthetic") is not True:
        raise FileExistsError(
            f"{root}: not empty and not a synthetic cohort written by {GENERATOR_NAME} "
            f"(no {DESCRIPTION_FILE} with \"Synthetic\": true); refusing to overwrite it")


@contextlib.contextmanager
def staged_cohort(root: Path) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces ``root`` (old synthetic copy removed).

    Raises ``FileExistsError`` up front if ``root`` holds anything but a synthetic cohort.
    """
    root = Path(root)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        os.replace(root, old)
    os.replace(staging, root)
    if old.exists():
        shutil.rmtree(old)


def write_json_atomic(path: Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_tsv_atomic(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Tab-separated table with a header row; floats to 4 decimals, booleans as true/false."""
    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.4f}"
        return "n/a" if v is None else str(v)

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([fmt(row.get(c)) for c in columns])
    return Path(path)


def write_dataset_description(root: Path, name: str, params: dict[str, Any], description: str,
                              dataset_type: str = "raw") -> Path:
    """BIDS ``dataset_description.json`` flagged ``"Synthetic": true`` with the generator and parameters."""
    content = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": dataset_type,
        "License": "CC0",
        "Synthetic": True,
        "GeneratedBy": [{
            "Name": GENERATOR_NAME,
            "Version": lesionlib.__version__,
            "Description": description,
        }],
        "GeneratorParameters": params,
    }
    return write_json_atomic(Path(root) / DESCRIPTION_FILE, content)


def save_volume(data: np.ndarray, affine: np.ndarray, path: Path, *, xform_code: int) -> Path:
    """Save a 3D array as NIfTI with qform = sform = ``affine`` (units mm), atomically.

    ``xform_code``: 4 for MNI152 space, 1 for scanner (native) space. nibabel writes gzip
    with mtime 0 and no file name, so the same array gives the same bytes.
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=xform_code)
    img.set_sform(affine, code=xform_code)
    return save_nifti_atomic(img, path)
