"""Smooth random fields and the deformation that turns the template into a new brain.

A subject is the template seen through a mapping ``phi`` from subject space to template
space (both in mm, RAS+)::

    phi(p) = A^-1 p + u(p)

with ``A`` a small random affine (rotation, anisotropic scaling, translation about the
brain centre) and ``u`` a smooth random displacement field. Every output voxel then takes
the template's tissue fractions at ``phi(p)`` (trilinear, ``scipy.ndimage.map_coordinates``).
``phi`` evaluated on the output grid is kept as ``anat_mm``: the template ("anatomical")
coordinates of each voxel, which lets later steps place lesions in anatomical regions and
darken late-myelinating white matter regardless of the subject's shape.

Random fields are built separably: white noise on a coarse lattice (one node per
``correlation_mm``), interpolated with a Gaussian kernel along each axis by three small
matrix products. That costs a few tens of milliseconds on the 1 mm grid, where a 3D
Gaussian filter of the full volume would take seconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from scipy import ndimage

from lesionlib.space import MniVolumes, voxel_centres_mm, voxel_volume_ml

__all__ = [
    "BRAIN_CENTRE_MM",
    "smooth_random_field",
    "multiscale_displacement",
    "random_affine",
    "rotation_matrix",
    "deformation_coordinates",
    "SubjectTissues",
    "sample_templates",
    "match_brain_volume",
    "single_threaded",
    "voxel_volume_ml",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def single_threaded(func: _F) -> _F:
    """Run ``func`` with the BLAS and OpenMP thread pools limited to one thread.

    The generators do many small matrix products (separable random fields) that multi-threaded
    BLAS makes slower on a few shared cores: 48 adults + 16 children at 3 mm took 74 s wall (48 s
    CPU) with two threads and 23 s with one, on the project's 2-core machine.
    """
    from threadpoolctl import threadpool_limits

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

BRAIN_CENTRE_MM = np.array([0.0, -18.0, 18.0])
"""Approximate centre of the MNI152 brain (mm); rotations and scalings act about it."""


def _axis_weights(n: int, spacing_mm: float, correlation_mm: float) -> tuple[np.ndarray, int]:
    extent = (n - 1) * spacing_mm
    nodes = np.arange(-2 * correlation_mm, extent + 2 * correlation_mm + 1e-6, correlation_mm)
    x = np.arange(n) * spacing_mm
    w = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) / correlation_mm) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32), len(nodes)


def smooth_random_field(shape: Sequence[int], spacing_mm: Sequence[float] | float, correlation_mm: float,
                        rng: np.random.Generator, n_fields: int = 1) -> np.ndarray:
    """Smooth Gaussian random fields of zero mean and unit standard deviation.

    Parameters
    ----------
    shape
        Voxel grid ``(nx, ny, nz)``.
    spacing_mm
        Voxel size (mm), scalar or per axis.
    correlation_mm
        Spatial scale of the variations (lattice spacing and kernel width, mm).
    n_fields
        Number of independent fields.

    Returns
    -------
    np.ndarray
        float32, shape ``(n_fields, *shape)``; each field normalised to mean 0, std 1.
    """
    if correlation_mm <= 0:
        raise ValueError(f"correlation_mm must be positive, got {correlation_mm}")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    weights = [_axis_weights(int(n), float(s), correlation_mm) for n, s in zip(shape, spacing)]
    lattice_shape = tuple(m for _, m in weights)
    out = np.empty((n_fields, *shape), dtype=np.float32)
    for f in range(n_fields):
        coarse = rng.standard_normal(lattice_shape).astype(np.float32)
        # contract one axis at a time: (a,b,c) -> (X,b,c) -> (X,Y,c) -> (X,Y,Z)
        field = np.tensordot(weights[0][0], coarse, axes=(1, 0))
        field = np.tensordot(field, weights[1][0], axes=(1, 1)).transpose(0, 2, 1)
        field = np.tensordot(field, weights[2][0], axes=(2, 1))
        field -= field.mean()
        std = field.std()
        out[f] = field / (std if std > 0 else 1.0)
    return out


def multiscale_displacement(shape: Sequence[int], spacing_mm: Sequence[float] | float,
                            components: Sequence[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    """A displacement field (mm, float32, ``(3, *shape)``): a sum of smooth random fields.

    ``components`` holds ``(correlation_mm, amplitude_mm)`` pairs, coarse to fine; each adds three
    independent unit fields (one per axis) scaled by its amplitude (per-axis standard deviation).
    """
    out = np.zeros((3, *shape), dtype=np.float32)
    for correlation_mm, amplitude_mm in components:
        if amplitude_mm > 0:
            out += np.float32(amplitude_mm) * smooth_random_field(shape, spacing_mm, correlation_mm, rng, n_fields=3)
    return out


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """3x3 rotation from Euler angles (degrees) about x, then y, then z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_affine(rng: np.random.Generator, *, max_rotation_deg: float, scale: Sequence[float] | float = 1.0,
                  scale_sd: float = 0.0, max_translation_mm: float = 0.0,
                  centre_mm: Sequence[float] = BRAIN_CENTRE_MM) -> np.ndarray:
    """A random 4x4 affine (template mm -> subject mm) acting about ``centre_mm``.

    Rotation angles are uniform in ``±max_rotation_deg`` about each axis; per-axis scale is
    ``scale * (1 + N(0, scale_sd))``; translation uniform in ``±max_translation_mm``.
    """
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, size=3)
    scales = np.broadcast_to(np.asarray(scale, dtype=float), (3,)) * (1.0 + scale_sd * rng.standard_normal(3))
    shift = rng.uniform(-max_translation_mm, max_translation_mm, size=3)
    centre = np.asarray(centre_mm, dtype=float)
    linear = rotation_matrix(angles) @ np.diag(scales)
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre - linear @ centre + shift
    return out


def deformation_coordinates(shape: Sequence[int], affine: np.ndarray, forward_affine: np.ndarray,
                            displacement_mm: np.ndarray | None = None) -> np.ndarray:
    """``phi(p) = forward_affine^-1 p + u(p)`` on the output grid: template mm, shape ``(3, *shape)``.

    ``affine`` maps output voxel indices to output mm; ``displacement_mm`` (``(3, *shape)``)
    is ``u`` in mm on the same grid, or ``None`` for a purely affine mapping.
    """
    inverse = np.linalg.inv(forward_affine) @ affine
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    coords = np.empty((3, *shape), dtype=np.float32)
    for row in range(3):  # broadcast sums of three 1D ramps: no (3, N) index array
        coords[row] = (float(inverse[row, 3])
                       + float(inverse[row, 0]) * axes[0][:, None, None]
                       + float(inverse[row, 1]) * axes[1][None, :, None]
                       + float(inverse[row, 2]) * axes[2][None, None, :])
    if displacement_mm is not None:
        coords += displacement_mm
    return coords


@dataclass
class SubjectTissues:
    """Tissue fractions of one synthetic subject on its working grid (float32, shape ``shape``).

    ``gm + wm + csf (+ gliosis)`` is the brain fraction (<= 1); ``gliosis`` is the
    T1-hypointense scar tissue of lesion rims (``None`` until a lesion is painted). ``anat_mm``
    (``(3, *shape)``) holds the template coordinates of each voxel. ``affine`` maps voxel
    indices to mm (RAS+).
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    anat_mm: np.ndarray
    affine: np.ndarray
    gliosis: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def brain(self) -> np.ndarray:
        total = self.gm + self.wm + self.csf
        return total if self.gliosis is None else total + self.gliosis

    def world_mm(self) -> np.ndarray:
        """Subject-space coordinates of each voxel centre, ``(3, *shape)`` mm."""
        return voxel_centres_mm(self.shape, self.affine)


def _brain_box_vox(templates: MniVolumes) -> tuple[np.ndarray, np.ndarray]:
    nonzero = np.argwhere(templates.brain > 0)
    return nonzero.min(axis=0) - 1.0, nonzero.max(axis=0) + 1.0


def sample_templates(templates: MniVolumes, anat_mm: np.ndarray, affine: np.ndarray) -> SubjectTissues:
    """Take the template's tissue fractions at the template coordinates ``anat_mm`` (trilinear)."""
    to_voxel = np.linalg.inv(templates.affine)
    shape = anat_mm.shape[1:]
    # Only voxels that land inside the template's (padded) brain bounding box can hold tissue:
    # interpolate there and leave the rest 0 (on the 1 mm grid this skips ~60% of the work).
    lo, hi = _brain_box_vox(templates)
    coords = []
    inside = np.ones(shape, dtype=bool)
    for row in range(3):
        c = float(to_voxel[row, 3]) + sum(float(to_voxel[row, k]) * anat_mm[k] for k in range(3))
        inside &= (c >= lo[row]) & (c <= hi[row])
        coords.append(c)
    points = np.stack([c[inside] for c in coords])

    def warp(a: np.ndarray) -> np.ndarray:
        out = np.zeros(shape, dtype=np.float32)
        out[inside] = ndimage.map_coordinates(a, points, order=1, mode="constant", cval=0.0, output=np.float32)
        return out

    gm, wm, brain = warp(templates.gm), warp(templates.wm), warp(templates.brain)
    del points
    brain = np.clip(brain, 0.0, 1.0)
    gm = np.clip(np.minimum(gm, brain), 0.0, 1.0)
    wm = np.clip(np.minimum(wm, brain - gm), 0.0, 1.0)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return SubjectTissues(gm=gm, wm=wm, csf=csf, anat_mm=anat_mm, affine=np.asarray(affine, dtype=float))


def match_brain_volume(templates: MniVolumes, anat_mm: np.ndarray, affine: np.ndarray, target_ml: float,
                       centre_mm: Sequence[float] = BRAIN_CENTRE_MM) -> np.ndarray:
    """Template coordinates rescaled about ``centre_mm`` so that the subject's brain holds ``target_ml``.

    The brain volume of the mapping ``anat_mm`` (``(3, *shape)``, on the grid of ``affine``) is
    measured on every ``round(2 mm / voxel)``-th voxel (the brain fraction's sum), and template
    coordinates are scaled by ``(volume / target)^(1/3)``, which scales the subject's brain volume
    by the inverse cube. Returns a new array.
    """
    spacing = float(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)).min())
    step = max(1, int(round(2.0 / spacing)))
    sub = np.ascontiguousarray(anat_mm[:, ::step, ::step, ::step])
    sub_affine = np.asarray(affine, dtype=float).copy()
    sub_affine[:3, :3] *= step
    volume_ml = float(sample_templates(templates, sub, sub_affine).brain.sum()) * voxel_volume_ml(sub_affine)
    if volume_ml <= 0 or target_ml <= 0:
        return anat_mm.copy()
    scale = np.float32((volume_ml / target_ml) ** (1.0 / 3.0))
    centre = np.asarray(centre_mm, dtype=np.float32).reshape(3, *([1] * (anat_mm.ndim - 1)))
    return centre + scale * (anat_mm - centre)
