"""The head around the brain: extra-axial CSF, skull (tables and diploë), scalp fat and soft tissue; defacing.

ATLAS v2.0's released T1w images are whole-head scans: defaced, registered to MNI152 2009a
(197 x 233 x 189 at 1 mm), not brain-extracted (Liew et al., "A large, curated, open-source stroke
neuroimaging dataset to improve lesion segmentation algorithms", Sci Data 9:320, 2022, the
dataset's descriptor; consistent with public ATLAS training code that brain-extracts the images
with HD-BET first, and with the ATLAS v3.0 release being the first to add brain-extracted images,
npnl/ATLAS README). Children's native scans are whole-head too. So the synthetic images carry a
head, and lesion masks stay brain-only.

The head is a stack of layers around the template brain mask, in order outwards (thicknesses in
mm, per subject, :class:`HeadModel`):

====================  ==========================================  ======================
layer                 T1w intensity (relative to mature WM = 1)    adult / child (mm)
====================  ==========================================  ======================
``csf``               extra-axial CSF (the contrast's CSF)         1.5-3.5 / 2.0-5.5
``inner_table``       cortical bone, dark (``Contrast.bone``)      1.2-2.0 / 0.7-1.2
``diploe``            marrow: fatty and bright in adults,          2.0-4.0 / 0.8-2.2
                      red and darker in young children
``outer_table``       cortical bone, dark                          1.2-2.0 / 0.7-1.2
``fat``               subcutaneous fat, bright                     2.0-5.0 / 1.5-3.5
``soft``              skin, galea and muscle, intermediate         1.5-3.0 / 1.0-2.0
====================  ==========================================  ======================

These are modelling assumptions, not measurements (typical adult calvarial thickness 6-7 mm,
thinner in toddlers; extra-axial CSF spaces are wider in infancy). Distances are measured from
the *template* brain mask (:func:`template_outside_distance_mm`, cached per grid) and read at
each subject voxel's template coordinates ``anat_mm``, so the head deforms with the brain; each
layer's thickness also varies smoothly over the head (``thickness_sd``, a 40 mm random field).
Partial volume: a layer's share of a voxel ramps over one voxel width at each boundary, and the
head only fills what the brain does not (``1 - brain fraction``). Thickness variation is clipped
to 0.5-1.5 times the mean.

:func:`deface_mask` is the face region that defacing tools remove (anterior and inferior to a
plane through template points (y, z) = (100, 30) and (20, -50) mm, at least 4 mm outside the
brain and holding none of it); it is set to exactly 0 in the adults' images, as defaced ATLAS
images are.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from lesionlib.space import mni_volumes
from lesionlib.synth.deform import smooth_random_field

__all__ = ["HEAD_LAYERS", "HeadModel", "HeadLayers", "sample_adult_head", "sample_child_head",
           "template_outside_distance_mm", "head_layers", "deface_mask"]

HEAD_LAYERS = ("csf", "inner_table", "diploe", "outer_table", "fat", "soft")
"""Layer names, from the brain outwards."""


@dataclass(frozen=True)
class HeadModel:
    """Mean thickness (mm) of each head layer and the relative smooth variation of the thicknesses."""

    csf: float
    inner_table: float
    diploe: float
    outer_table: float
    fat: float
    soft: float
    thickness_sd: float = 0.2

    def thicknesses_mm(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in HEAD_LAYERS)

    @property
    def total_mm(self) -> float:
        return float(sum(self.thicknesses_mm()))

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def sample_adult_head(rng: np.random.Generator) -> HeadModel:
    """Head layers of an adult stroke patient (extra-axial CSF widened by age-related atrophy)."""
    return HeadModel(csf=float(rng.uniform(1.5, 3.5)), inner_table=float(rng.uniform(1.2, 2.0)),
                     diploe=float(rng.uniform(2.0, 4.0)), outer_table=float(rng.uniform(1.2, 2.0)),
                     fat=float(rng.uniform(2.0, 5.0)), soft=float(rng.uniform(1.5, 3.0)))


def sample_child_head(age_months: float, rng: np.random.Generator) -> HeadModel:
    """Head layers of a child of ``age_months`` (12-48): wider extra-axial CSF, thin skull and scalp.

    Extra-axial CSF: 3.5-5.5 mm at 12 months narrowing to about 2-4.7 mm at 48 months; the skull
    (0.7-1.2 mm tables, 0.8-2.2 mm diploë) thickens with age.
    """
    t = float(np.clip((age_months - 12.0) / 36.0, 0.0, 1.0))
    return HeadModel(csf=float(rng.uniform(3.5, 5.5) - t * rng.uniform(0.8, 1.5)),
                     inner_table=float(rng.uniform(0.7, 0.9) + 0.3 * t),
                     diploe=float(rng.uniform(0.8, 1.2) + t * rng.uniform(0.3, 1.0)),
                     outer_table=float(rng.uniform(0.7, 0.9) + 0.3 * t),
                     fat=float(rng.uniform(1.5, 3.5)), soft=float(rng.uniform(1.0, 2.0)))


@functools.lru_cache(maxsize=4)
def template_outside_distance_mm(resolution_mm: float) -> np.ndarray:
    """Distance (mm) of each voxel of ``mni_grid(resolution_mm)`` to the template brain mask (0 inside).

    The mask is the template's brain fraction > 0.5; read-only float32, cached.
    """
    templates = mni_volumes(float(resolution_mm))
    outside = templates.brain <= 0.5
    dist = ndimage.distance_transform_edt(outside, sampling=(float(resolution_mm),) * 3).astype(np.float32)
    dist.setflags(write=False)
    return dist


@dataclass
class HeadLayers:
    """Fractions (float32, subject grid) of each head layer; they sum to ``occupancy`` <= 1 - brain."""

    fractions: dict[str, np.ndarray]
    distance_mm: np.ndarray
    """Template-space distance outside the brain mask at each voxel (mm)."""

    @property
    def occupancy(self) -> np.ndarray:
        return sum(self.fractions.values())  # type: ignore[return-value]


def _upsample_linear(coarse: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of samples taken every ``factor`` voxels (from index 0) back onto ``shape``."""
    out = coarse
    for axis, n in enumerate(shape):
        pos = np.arange(n, dtype=np.float32) / factor
        i0 = np.minimum(pos.astype(int), out.shape[axis] - 1)
        i1 = np.minimum(i0 + 1, out.shape[axis] - 1)
        w = (pos - i0).reshape([-1 if k == axis else 1 for k in range(out.ndim)]).astype(np.float32)
        out = np.take(out, i0, axis=axis) * (1.0 - w) + np.take(out, i1, axis=axis) * w
    return out.astype(np.float32, copy=False)


def head_layers(anat_mm: np.ndarray, brain: np.ndarray, model: HeadModel, rng: np.random.Generator,
                resolution_mm: float, spacing_mm: Sequence[float]) -> HeadLayers:
    """Head-layer fractions on a subject grid.

    Parameters
    ----------
    anat_mm
        Template coordinates (mm) of each subject voxel, ``(3, *shape)``.
    brain
        The subject's brain fraction on the same grid (the head fills ``1 - brain``).
    model
        Layer thicknesses.
    resolution_mm
        Resolution of the template grid to read distances from (:func:`template_outside_distance_mm`).
    spacing_mm
        Voxel size of the subject grid (width of the partial-volume ramps).

    Notes
    -----
    The template distance is read every ``round(2 mm / voxel)`` voxels and interpolated linearly in
    between (a distance map is 1-Lipschitz, so this costs well under a millimetre of accuracy and
    saves most of the interpolation time on 1 mm grids); the layers are then computed only where
    the head can be (outside the brain, within the thickest possible head).
    """
    templates = mni_volumes(float(resolution_mm))
    dist_map = template_outside_distance_mm(float(resolution_mm))
    to_voxel = np.linalg.inv(templates.affine)
    shape = tuple(anat_mm.shape[1:])
    spacing = np.asarray(spacing_mm, dtype=float)
    step = max(1, int(round(2.0 / float(spacing.min()))))
    sub = anat_mm[:, ::step, ::step, ::step]
    coords = np.stack([(float(to_voxel[row, 3]) + sum(float(to_voxel[row, k]) * sub[k] for k in range(3))).ravel()
                       for row in range(3)]).astype(np.float32)
    dist = ndimage.map_coordinates(dist_map, coords, order=1, mode="nearest", output=np.float32)
    dist = dist.reshape(sub.shape[1:])
    del coords, sub
    if step > 1:
        dist = _upsample_linear(dist, step, shape)
    variation = np.clip(1.0 + model.thickness_sd * smooth_random_field(shape, spacing, 40.0, rng)[0], 0.5, 1.5)
    width = np.float32(spacing.mean())
    reach = 1.5 * model.total_mm + 2.0 * float(width)
    where = np.flatnonzero((dist.ravel() < reach) & (brain.ravel() < 1.0))
    d = dist.ravel()[where]
    var = variation.ravel()[where]
    outside = np.clip(1.0 - brain.ravel()[where], 0.0, 1.0)
    fractions: dict[str, np.ndarray] = {}
    boundary = np.zeros(where.size, dtype=np.float32)
    below = np.ones(where.size, dtype=np.float32)  # share of the voxel beyond the previous layer's inner edge
    for name, thickness in zip(HEAD_LAYERS, model.thicknesses_mm()):
        boundary += np.float32(thickness) * var
        beyond = np.clip((d - boundary) / width + np.float32(0.5), 0.0, 1.0)
        full = np.zeros(int(np.prod(shape)), dtype=np.float32)
        full[where] = (below - beyond) * outside
        fractions[name] = full.reshape(shape)
        below = beyond
    return HeadLayers(fractions=fractions, distance_mm=dist)


def deface_mask(anat_mm: np.ndarray, distance_mm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The face region removed by defacing (bool, subject grid): anterior-inferior to the plane
    ``z = y - 70`` (template mm), more than 4 mm outside the template brain mask and free of brain
    (``brain`` fraction < 0.01), as defacing tools spare the brain."""
    y, z = anat_mm[1], anat_mm[2]
    return (z < y - 70.0) & (distance_mm > 4.0) & (brain < 0.01)
