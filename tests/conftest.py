"""Shared pytest fixtures: tiny NIfTI files and tiny dataset trees, written into ``tmp_path``.

Factories (all fixtures return callables):

* ``make_affine(spacing_mm=(1, 1, 1), orientation="RAS", origin_mm=(0, 0, 0))`` -> 4x4 affine whose
  voxel axes point along ``orientation`` (e.g. ``"LPS"``) with the given voxel sizes (mm).
* ``write_nifti(path, data, affine=None, dtype=None)`` -> Path; relative paths go under ``tmp_path``;
  written with :func:`lesionlib.io.save_nifti_atomic`.
* ``blob_mask(shape, n_voxels, center=None)`` -> uint8 array with exactly ``n_voxels`` ones, the
  voxels nearest ``center`` (a compact blob).
* ``make_atlas_tree(root, lesion_voxels={"r001s001": 10, ...}, shape=..., spacing_mm=...)`` -> root of an
  ATLAS v2.0 layout (paths from :mod:`lesionlib.bids`).
* ``make_child_tree(root, lesion_voxels={("01", "1"): 10, ...}, orientation="LPS", ...)`` -> root of a
  child BIDS dataset with ``participants.tsv``.

Images are seeded noise (float32), so files are small and deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pytest

from lesionlib import bids
from lesionlib.io import save_nifti_atomic

_AXIS_OF = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def _affine(spacing_mm: float | Sequence[float] = (1.0, 1.0, 1.0), orientation: str = "RAS",
            origin_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    spacing = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    if sorted(_AXIS_OF[c][0] for c in orientation.upper()) != [0, 1, 2]:
        raise ValueError(f"orientation must name each world axis once: {orientation!r}")
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for voxel_axis, code in enumerate(orientation.upper()):
        world_axis, sign = _AXIS_OF[code]
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, 3] = origin_mm
    return affine


def _blob(shape: Sequence[int], n_voxels: int, center: Sequence[float] | None = None) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if n_voxels > int(np.prod(shape)):
        raise ValueError(f"{n_voxels} voxels do not fit in {shape}")
    center = np.asarray(center if center is not None else [(s - 1) / 2 for s in shape], float)
    grid = np.indices(shape).reshape(len(shape), -1).T
    order = np.argsort(((grid - center) ** 2).sum(axis=1), kind="stable")
    mask = np.zeros(int(np.prod(shape)), np.uint8)
    mask[order[:n_voxels]] = 1
    return mask.reshape(shape)


@pytest.fixture
def make_affine() -> Callable[..., np.ndarray]:
    return _affine


@pytest.fixture
def blob_mask() -> Callable[..., np.ndarray]:
    return _blob


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    def write(path: Path | str, data: np.ndarray, affine: np.ndarray | None = None,
              dtype: np.dtype | type | None = None) -> Path:
        path = Path(path)
        if not path.is_absolute():
            path = tmp_path / path
        img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else np.asarray(affine, float))
        if dtype is not None:
            img.set_data_dtype(dtype)
        return save_nifti_atomic(img, path)

    return write


def _noise(shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32) + 0.5


def _write(path: Path, data: np.ndarray, affine: np.ndarray, dtype: np.dtype | type | None = None) -> Path:
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, float))
    if dtype is not None:
        img.set_data_dtype(dtype)
    return save_nifti_atomic(img, Path(path))


def build_atlas_tree(root: Path | str, lesion_voxels: Mapping[str, int] | None = None,
                     shape: Sequence[int] = (12, 12, 12), spacing_mm: float | Sequence[float] = 3.0,
                     session: str = "1") -> Path:
    """A tiny ATLAS v2.0 tree under ``root`` (what the ``make_atlas_tree`` fixture makes; usable at any scope)."""
    root = Path(root)
    lesion_voxels = lesion_voxels if lesion_voxels is not None else {"r001s001": 8, "r001s002": 27, "r002s001": 1}
    affine = _affine(spacing_mm, "RAS", origin_mm=(-18.0, -18.0, -18.0))
    for i, (subject, n) in enumerate(sorted(lesion_voxels.items())):
        _write(bids.atlas_t1w_path(root, subject, session), _noise(shape, i), affine)
        _write(bids.atlas_mask_path(root, subject, session), _blob(shape, n), affine, dtype=np.uint8)
    return root


def build_child_tree(root: Path | str, lesion_voxels: Mapping[tuple[str, str], int] | None = None,
                     shape: Sequence[int] = (10, 12, 8), spacing_mm: Sequence[float] = (3.0, 3.0, 3.6),
                     orientation: str = "LPS", participants: Sequence[tuple[str, float, str, str]] | None = None
                     ) -> Path:
    """A tiny child BIDS tree under ``root`` (what the ``make_child_tree`` fixture makes; usable at any scope)."""
    root = Path(root)
    lesion_voxels = lesion_voxels if lesion_voxels is not None else {
        ("01", "1"): 20, ("01", "2"): 21, ("02", "1"): 5, ("02", "2"): 6}
    affine = _affine(spacing_mm, orientation, origin_mm=(15.0, 18.0, -14.0))
    for i, ((subject, session), n) in enumerate(sorted(lesion_voxels.items())):
        _write(bids.child_t1w_path(root, subject, session), _noise(shape, 100 + i), affine)
        _write(bids.child_mask_path(root, subject, session), _blob(shape, n), affine, dtype=np.uint8)
    if participants is None:
        subjects = sorted({s for s, _ in lesion_voxels})
        participants = [(s, 12.0 + 6 * k, "F" if k % 2 else "M", f"site{k % 2 + 1}") for k, s in enumerate(subjects)]
    lines = ["participant_id\tage_months\tsex\tsite"]
    lines += [f"sub-{s}\t{age:g}\t{sex}\t{site}" for s, age, sex, site in participants]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def make_atlas_tree(tmp_path: Path) -> Callable[..., Path]:
    def make(root: Path | str | None = None, *args, **kwargs) -> Path:
        return build_atlas_tree(Path(root) if root is not None else tmp_path / "atlas", *args, **kwargs)

    return make


@pytest.fixture
def make_child_tree(tmp_path: Path) -> Callable[..., Path]:
    def make(root: Path | str | None = None, *args, **kwargs) -> Path:
        return build_child_tree(Path(root) if root is not None else tmp_path / "child", *args, **kwargs)

    return make


@pytest.fixture
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point ``$LESIONLIB_DATA`` and ``$LESIONLIB_RESULTS`` at fresh folders under ``tmp_path``.

    Use it in any test that would otherwise read or write the project's ``data/`` or ``results/``
    (caches, generated cohorts). Returns ``{'data': ..., 'results': ...}``.
    """
    roots = {"data": tmp_path / "data_root", "results": tmp_path / "results_root"}
    monkeypatch.setenv("LESIONLIB_DATA", str(roots["data"]))
    monkeypatch.setenv("LESIONLIB_RESULTS", str(roots["results"]))
    return roots
