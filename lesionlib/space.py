"""Voxel grids and MNI space: the one definition of "same grid" and of the MNI152 2009a grid.

Conventions
-----------
* A *grid* is a voxel shape plus a 4x4 affine mapping voxel indices ``(i, j, k)`` to world
  millimetres, RAS+ (the NIfTI convention). Two images are on the *same grid* when their first
  three dimensions are equal and the two affines place every voxel within :data:`GRID_TOL_MM`
  (1 µm) of each other (:func:`voxel_displacement_mm`: translations, zooms and rotations all count
  in millimetres). This is the test every module uses (:func:`same_grid`), never a private copy.
* The MNI grid at ``resolution_mm`` (:func:`mni_grid`) covers nilearn's MNI152 2009a field of view
  (x -98..98, y -134..98, z -72..116 mm) with voxel centres symmetric about the midline ``x = 0``
  (a voxel column lies on the midline, so ``data[::-1]`` mirrors the hemispheres exactly) and
  y/z starting at the template's origin. At 1 mm it is exactly the template's and ATLAS v2.0's
  grid, 197 x 233 x 189 with origin (-98, -134, -72); at 2 mm it is nilearn's 99 x 117 x 95 grid;
  at 3 mm 65 x 78 x 63 with origin (-96, -134, -72).
* :func:`mni_volumes` is the one loader of the template (T1, GM, WM, brain mask) on that grid, used
  by the synthetic cohorts, registration and the LesionGnb baseline alike.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = [
    "GRID_TOL_MM",
    "MNI_SHAPE_1MM",
    "MNI_ORIGIN_MM",
    "MniVolumes",
    "grid_of",
    "same_grid",
    "grid_mismatch",
    "mni_grid",
    "mni_volumes",
    "voxel_centres_mm",
    "voxel_displacement_mm",
    "voxel_volume_ml",
]

GRID_TOL_MM = 1e-3
"""Largest distance (mm) between the positions two affines of the *same grid* give one voxel."""

MNI_SHAPE_1MM: tuple[int, int, int] = (197, 233, 189)
MNI_ORIGIN_MM: tuple[float, float, float] = (-98.0, -134.0, -72.0)
_MNI_FOV_MM = ((-98.0, 98.0), (-134.0, 98.0), (-72.0, 116.0))

Grid = tuple[tuple[int, ...], np.ndarray]


def grid_of(image: Any) -> Grid:
    """``(shape[:3], affine)`` of a nibabel image, a MONAI ``MetaTensor`` (channel first) or a grid tuple."""
    if isinstance(image, tuple) and len(image) == 2:
        shape, affine = image
        return tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=float)
    if hasattr(image, "affine") and hasattr(image, "dataobj"):  # nibabel
        return tuple(int(s) for s in image.shape[:3]), np.asarray(image.affine, dtype=float)
    if hasattr(image, "affine") and hasattr(image, "shape"):  # MetaTensor (C, X, Y, Z)
        affine = image.affine
        affine = affine.numpy() if hasattr(affine, "numpy") else np.asarray(affine)
        return tuple(int(s) for s in image.shape[-3:]), np.asarray(affine, dtype=float)
    raise TypeError(f"cannot read a voxel grid from {type(image).__name__}")


def voxel_displacement_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between the world positions two affines give a voxel of ``shape``.

    The maps are affine, so the largest distance over the grid is reached at one of its 8 corner
    voxels. Zero for identical affines; NaN when an affine holds NaN.
    """
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(0, max(int(n) - 1, 0)) for n in shape[:3]])]).T
    diff = (np.asarray(affine_a, float) @ corners)[:3] - (np.asarray(affine_b, float) @ corners)[:3]
    return float(np.sqrt((diff**2).sum(axis=0)).max())


def grid_mismatch(a: Any, b: Any, tol_mm: float = GRID_TOL_MM) -> str | None:
    """``None`` when ``a`` and ``b`` lie on the same grid, else a short description of the difference.

    ``a`` and ``b`` are anything :func:`grid_of` reads. The description names the shapes or how
    far apart the two affines place voxels, for error messages.
    """
    shape_a, affine_a = grid_of(a)
    shape_b, affine_b = grid_of(b)
    if shape_a != shape_b:
        return f"shape {shape_a} vs {shape_b}"
    moved = voxel_displacement_mm(affine_a, affine_b, shape_a)
    if not moved <= tol_mm:  # also catches NaN
        return f"the affines place voxels up to {moved:.4g} mm apart (tolerance {tol_mm:g} mm)"
    return None


def same_grid(a: Any, b: Any, tol_mm: float = GRID_TOL_MM) -> bool:
    """Whether ``a`` and ``b`` share shape (first three axes) and affine (within ``tol_mm``)."""
    return grid_mismatch(a, b, tol_mm) is None


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel (mL) from an affine: ``|det(A[:3, :3])| / 1000``."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def mni_grid(resolution_mm: float = 1.0) -> Grid:
    """Shape and RAS affine of the MNI152 2009a grid at ``resolution_mm`` (isotropic; see module doc)."""
    r = float(resolution_mm)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"resolution_mm must be a positive number, got {resolution_mm!r}")
    (_, x1), (y0, y1), (z0, z1) = _MNI_FOV_MM
    nx_half = int(math.floor(x1 / r + 1e-6))
    shape = (2 * nx_half + 1, int(math.floor((y1 - y0) / r + 1e-6)) + 1, int(math.floor((z1 - z0) / r + 1e-6)) + 1)
    affine = np.diag([r, r, r, 1.0])
    affine[:3, 3] = (-nx_half * r, y0, z0)
    return shape, affine


def voxel_centres_mm(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape ``(3, *shape)``, float32."""
    idx = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return world.reshape((3, *shape))


@dataclass(frozen=True)
class MniVolumes:
    """nilearn's MNI152 2009a template on :func:`mni_grid` ``(resolution_mm)``; read-only float32 arrays.

    ``t1`` in [0, 1] (skull-stripped template); ``brain`` the brain-mask *fraction* (1 inside the
    mask at 1 mm, partial at coarser grids; threshold at 0.5 for a binary mask); ``gm`` and
    ``wm`` probabilities clipped so that ``gm + wm <= brain``; :attr:`csf` the rest of the brain.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    resolution_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape  # type: ignore[return-value]

    @property
    def csf(self) -> np.ndarray:
        return np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)


def _resample_1mm(data: np.ndarray, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """A 1 mm template array sampled on ``(shape, affine)``: Gaussian anti-aliasing whose FWHM is the
    new voxel size (so a coarse voxel holds a partial-volume fraction), then trilinear sampling."""
    from scipy import ndimage

    resolution = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).max())
    if resolution > 1.0:
        data = ndimage.gaussian_filter(data, sigma=math.sqrt(resolution**2 - 1.0) / 2.3548, mode="constant")
    to_1mm = np.diag([1.0, 1.0, 1.0, 1.0])
    to_1mm[:3, 3] = MNI_ORIGIN_MM
    vox = np.linalg.inv(to_1mm) @ affine  # target voxel -> 1 mm template voxel
    out = ndimage.affine_transform(data, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(shape), order=1,
                                   mode="constant", cval=0.0, output=np.float32)
    return np.clip(out, 0.0, None)


@functools.lru_cache(maxsize=8)
def mni_volumes(resolution_mm: float = 1.0) -> MniVolumes:
    """The template's T1, GM, WM and brain mask on :func:`mni_grid` ``(resolution_mm)`` (cached).

    Raises ``RuntimeError`` if nilearn's template is not on the expected 1 mm grid.
    """
    from nilearn import datasets  # local import: nilearn is slow to import

    shape, affine = mni_grid(resolution_mm)
    t1_img = datasets.load_mni152_template(resolution=1)
    if t1_img.shape != MNI_SHAPE_1MM or not np.allclose(t1_img.affine[:3, 3], MNI_ORIGIN_MM):
        raise RuntimeError(f"unexpected nilearn MNI152 grid {t1_img.shape} {t1_img.affine[:3, 3]}")
    raw = {
        "t1": t1_img.get_fdata(dtype=np.float32),
        "gm": datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32),
        "wm": datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32),
        "brain": datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32),
    }
    raw["gm"] = np.minimum(raw["gm"], raw["brain"])
    raw["wm"] = np.minimum(raw["wm"], raw["brain"] - raw["gm"])
    if float(resolution_mm) == 1.0:
        vols = {k: np.clip(v, 0.0, None).astype(np.float32) for k, v in raw.items()}
    else:
        vols = {k: _resample_1mm(v, shape, affine) for k, v in raw.items()}
    brain = np.clip(vols["brain"], 0.0, 1.0)
    gm = np.minimum(np.clip(vols["gm"], 0.0, 1.0), brain)
    wm = np.minimum(np.clip(vols["wm"], 0.0, 1.0), brain - gm)
    arrays = {"t1": vols["t1"], "gm": gm, "wm": wm, "brain": brain}
    for a in arrays.values():
        a.setflags(write=False)
    return MniVolumes(affine=affine, resolution_mm=float(resolution_mm), **arrays)
