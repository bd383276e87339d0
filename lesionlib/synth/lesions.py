"""Stroke lesions: how large, where, what shape, and how they change the tissue.

Sampling happens in two steps so that volumes follow the target distribution exactly:

1. :func:`sample_adult_lesion_plan` / :func:`sample_child_lesion_plan` draw the *plan*: a
   total volume (mL) and one or more :class:`LesionSpec` (volume, vascular territory,
   hemisphere). Adult totals are a log-normal truncated to ATLAS v2.0's range
   (0.01-470 mL, median ~5 mL, mean ~27 mL); about 10% of adult plans put the main lesion in
   the posterior fossa (cerebellum or brainstem). Child plans are single large perinatal
   (mostly MCA) infarcts of 2.5-172 mL, mean ~50 mL.
2. :func:`grow_lesion` realises one spec on a subject's grid: a seed voxel inside the
   territory, then the ``K = round(volume / voxel volume)`` voxels (at least 1) with the
   highest score ``-(d / r)^2 + a * noise + territory prior``, where ``d`` is the distance to
   the seed (mm), ``r`` the radius of a sphere of that volume, ``noise`` a smooth random field
   and the prior penalises leaving the territory (for territorial infarcts part of the
   seed distance is replaced by the distance to the territory centre, so they fill it). The result is an irregular, lobulated
   shape of exactly ``K`` voxels (thresholded smoothed noise inside a territory).

Territories are ellipsoids in template (MNI152) coordinates, written for the right
hemisphere (x > 0) and mirrored for the left; they are evaluated on ``anat_mm``, the
template coordinates of each subject voxel, so they follow each subject's anatomy.

:func:`paint_lesions` turns a lesion mask into tissue: a CSF-filled cavity in the core, a
gliotic (T1 mildly hypointense) rim of ``rim_mm``, a partial-volume fringe just outside the
mask, and optional ex-vacuo enlargement of CSF spaces next to the lesion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from lesionlib.synth.deform import SubjectTissues, smooth_random_field

log = logging.getLogger(__name__)

__all__ = [
    "Territory", "TERRITORIES", "LesionSpec", "LesionPlan", "GrownLesion",
    "ADULT_VOLUME_RANGE_ML", "CHILD_VOLUME_RANGE_ML", "POSTERIOR_FOSSA_Z_MM",
    "sample_adult_lesion_volume_ml", "sample_child_lesion_volume_ml",
    "sample_adult_lesion_plan", "sample_child_lesion_plan",
    "grow_lesion", "grow_plan", "paint_lesions", "enlarge_ipsilateral_ventricle", "is_posterior_fossa",
]

ADULT_VOLUME_RANGE_ML = (0.01, 470.0)
ADULT_VOLUME_LOG_MEDIAN_ML = 5.4   # log-normal parameters before truncation, tuned so that
ADULT_VOLUME_LOG_SIGMA = 2.2       # the truncated law has median ~5.1 mL and mean ~27 mL
CHILD_VOLUME_RANGE_ML = (2.5, 172.0)
CHILD_VOLUME_LOG_MEDIAN_ML = 42.0  # truncated: median ~40 mL, mean ~50 mL
CHILD_VOLUME_LOG_SIGMA = 0.8
POSTERIOR_FOSSA_Z_MM = -20.0
"""A lesion is 'posterior fossa' when its centroid lies below this MNI z (mm)."""
ADULT_POSTERIOR_FOSSA_PROBABILITY = 0.10
ADULT_LESION_COUNT_PROBABILITIES = (0.55, 0.25, 0.12, 0.08)  # 1, 2, 3, 4 lesions
LARGE_LESION_ML = 30.0  # above this a lesion is territorial (no deep/lacunar placement)

Hemisphere = Literal["left", "right", "midline"]


@dataclass(frozen=True)
class Territory:
    """A vascular-territory-like region: an ellipsoid in template mm (right-hemisphere centre)."""

    name: str
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    posterior_fossa: bool = False

    def centre_for(self, hemisphere: Hemisphere) -> np.ndarray:
        c = np.array(self.centre_mm, dtype=float)
        if hemisphere == "left":
            c[0] = -c[0]
        elif hemisphere == "midline":
            c[0] = 0.0
        return c

    def normalised_radius(self, anat_mm: np.ndarray, hemisphere: Hemisphere) -> np.ndarray:
        """Ellipsoidal radius (1 on the ellipsoid surface) of template coordinates ``(3, ...)``."""
        c = self.centre_for(hemisphere)
        r2 = sum(((anat_mm[k] - c[k]) / self.radii_mm[k]) ** 2 for k in range(3))
        return np.sqrt(r2)


TERRITORIES: dict[str, Territory] = {
    t.name: t for t in (
        Territory("mca", (46.0, -12.0, 12.0), (22.0, 48.0, 34.0)),
        Territory("aca", (9.0, 16.0, 40.0), (11.0, 48.0, 26.0)),
        Territory("pca", (22.0, -70.0, 4.0), (20.0, 26.0, 18.0)),
        Territory("deep", (22.0, 0.0, 8.0), (12.0, 18.0, 15.0)),  # lenticulostriate / capsular
        Territory("cerebellum", (24.0, -62.0, -36.0), (22.0, 20.0, 15.0), posterior_fossa=True),
        Territory("brainstem", (0.0, -30.0, -32.0), (9.0, 10.0, 18.0), posterior_fossa=True),
    )
}
_ADULT_SUPRATENTORIAL = {"mca": 0.58, "deep": 0.22, "pca": 0.12, "aca": 0.08}
_ADULT_POSTERIOR = {"cerebellum": 0.65, "brainstem": 0.35}
_CHILD_TERRITORIES = {"mca": 0.82, "pca": 0.10, "aca": 0.08}


@dataclass(frozen=True)
class LesionSpec:
    """One lesion to grow: target volume (mL), territory name and hemisphere."""

    volume_ml: float
    territory: str
    hemisphere: Hemisphere
    irregularity: float = 0.8
    """Amplitude of the noise in the growth score (0: smooth blob; ~1: lobulated)."""
    central_seed: bool = False
    """Seed in the inner half of the territory (large territorial infarcts)."""
    territory_weight: float = 0.0
    """0: shape grows around the seed; towards 1: it fills the territory's ellipsoid shells."""

    @property
    def posterior_fossa(self) -> bool:
        return TERRITORIES[self.territory].posterior_fossa


@dataclass(frozen=True)
class LesionPlan:
    """All lesions of one subject; ``lesions[0]`` is the main one."""

    lesions: tuple[LesionSpec, ...]

    @property
    def total_volume_ml(self) -> float:
        return float(sum(s.volume_ml for s in self.lesions))

    @property
    def posterior_fossa(self) -> bool:
        return self.lesions[0].posterior_fossa


def _truncated_lognormal(rng: np.random.Generator, median_ml: float, sigma: float,
                         bounds_ml: tuple[float, float]) -> float:
    lo, hi = bounds_ml
    while True:  # rejection: acceptance is > 99% for the parameters used here
        v = float(np.exp(np.log(median_ml) + sigma * rng.standard_normal()))
        if lo <= v <= hi:
            return v


def sample_adult_lesion_volume_ml(rng: np.random.Generator) -> float:
    """Total lesion volume (mL) of one ATLAS-like adult: truncated log-normal on [0.01, 470]."""
    return _truncated_lognormal(rng, ADULT_VOLUME_LOG_MEDIAN_ML, ADULT_VOLUME_LOG_SIGMA, ADULT_VOLUME_RANGE_ML)


def sample_child_lesion_volume_ml(rng: np.random.Generator) -> float:
    """Perinatal-stroke lesion volume (mL): truncated log-normal on [2.5, 172], mean ~50."""
    return _truncated_lognormal(rng, CHILD_VOLUME_LOG_MEDIAN_ML, CHILD_VOLUME_LOG_SIGMA, CHILD_VOLUME_RANGE_ML)


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _hemisphere_for(territory: str, rng: np.random.Generator, p_left: float = 0.5) -> Hemisphere:
    if territory == "brainstem":
        return "midline"
    return "left" if rng.random() < p_left else "right"


def _adult_location(rng: np.random.Generator, volume_ml: float) -> tuple[str, Hemisphere]:
    if rng.random() < ADULT_POSTERIOR_FOSSA_PROBABILITY:
        territory = _choice(rng, _ADULT_POSTERIOR)
    else:
        weights = dict(_ADULT_SUPRATENTORIAL)
        if volume_ml > LARGE_LESION_ML:  # large infarcts are cortical-territorial, not lacunar
            weights.pop("deep")
        territory = _choice(rng, weights)
    return territory, _hemisphere_for(territory, rng)


def sample_adult_lesion_plan(rng: np.random.Generator) -> LesionPlan:
    """An ATLAS-like plan: total volume from :func:`sample_adult_lesion_volume_ml`, 1-4 lesions.

    With several lesions the main one takes 55-95% of the total and the satellites share the
    rest; a satellite usually (75%) sits in the main lesion's territory, otherwise anywhere.
    """
    total = sample_adult_lesion_volume_ml(rng)
    p = np.asarray(ADULT_LESION_COUNT_PROBABILITIES)
    n = int(rng.choice(len(p), p=p / p.sum())) + 1
    territory, hemisphere = _adult_location(rng, total)
    irregularity = float(rng.uniform(0.5, 1.1))
    if n == 1:
        return LesionPlan((LesionSpec(total, territory, hemisphere, irregularity),))
    main_share = float(rng.uniform(0.55, 0.95))
    rest = rng.dirichlet(np.ones(n - 1)) * (1.0 - main_share)
    specs = [LesionSpec(total * main_share, territory, hemisphere, irregularity)]
    for share in rest:
        if rng.random() < 0.75:
            t, h = territory, hemisphere
        else:
            t, h = _adult_location(rng, total * float(share))
        specs.append(LesionSpec(total * float(share), t, h, float(rng.uniform(0.5, 1.1))))
    return LesionPlan(tuple(specs))


def sample_child_lesion_plan(rng: np.random.Generator) -> LesionPlan:
    """A perinatal arterial ischaemic stroke: one large territorial (mostly MCA) infarct.

    Left-sided in 60% of children (as reported for perinatal stroke); smoother outline
    than adult lesions and seeded centrally in the territory.
    """
    volume = sample_child_lesion_volume_ml(rng)
    territory = _choice(rng, _CHILD_TERRITORIES)
    hemisphere = _hemisphere_for(territory, rng, p_left=0.6)
    return LesionPlan((LesionSpec(volume, territory, hemisphere, float(rng.uniform(0.4, 0.7)),
                                  central_seed=True, territory_weight=float(rng.uniform(0.3, 0.6))),))


def is_posterior_fossa(centroid_mm: np.ndarray) -> bool:
    """Whether a lesion centroid (MNI mm) lies in the posterior fossa (below z = -20 mm)."""
    return bool(centroid_mm[2] < POSTERIOR_FOSSA_Z_MM)


@dataclass
class GrownLesion:
    """A realised lesion: voxel mask on the subject grid plus what was asked and obtained."""

    spec: LesionSpec
    mask: np.ndarray  # bool, subject grid
    volume_ml: float
    centroid_mm: np.ndarray  # subject-space mm (RAS+)
    extra: dict = field(default_factory=dict)


def _allowed_region(anat: np.ndarray, spec: LesionSpec) -> np.ndarray:
    """Hard anatomical constraints in template mm (``anat``: ``(3, ...)``)."""
    x, y, z = anat
    posterior_fossa = ((y < -36.0) & (z < -18.0)) | ((np.abs(x) < 14.0) & (y > -46.0) & (y < -12.0) & (z < -10.0))
    if spec.posterior_fossa:
        region = posterior_fossa
    else:
        region = ~posterior_fossa & (z > -45.0)
    if spec.hemisphere == "left":
        region &= x < -1.0
    elif spec.hemisphere == "right":
        region &= x > 1.0
    return region


def _parenchyma(tissues: SubjectTissues) -> np.ndarray:
    tissue = tissues.gm + tissues.wm
    return (tissue > 0.5) & (tissue > 0.6 * tissues.brain)


def grow_lesion(tissues: SubjectTissues, spec: LesionSpec, rng: np.random.Generator,
                exclude: np.ndarray | None = None) -> GrownLesion:
    """Realise ``spec`` on the subject grid as exactly ``max(1, round(volume / voxel))`` voxels.

    Parameters
    ----------
    tissues
        The subject's tissue fractions and template coordinates.
    spec
        Target volume (mL), territory and hemisphere.
    exclude
        Boolean mask of voxels that must stay outside (earlier lesions), subject grid.

    Returns
    -------
    GrownLesion
        The lesion mask (fewer voxels only if the allowed region is smaller than the target).
    """
    spacing = np.asarray(tissues.spacing_mm)
    voxel_ml = tissues.voxel_volume_ml
    n_voxels = max(1, int(round(spec.volume_ml / voxel_ml)))
    territory = TERRITORIES[spec.territory]
    candidates = _parenchyma(tissues) & _allowed_region(tissues.anat_mm, spec)
    if exclude is not None:
        candidates &= ~exclude
    if not candidates.any():
        raise RuntimeError(f"no parenchyma left for a {spec.territory} lesion ({spec.hemisphere})")

    # seed: inside the territory (its inner half for territorial infarcts), else nearest to it
    ell = territory.normalised_radius(tissues.anat_mm, spec.hemisphere)
    for limit in ((0.5, 1.0) if spec.central_seed else (1.0,)) + (1.5, np.inf):
        seeds = np.flatnonzero(candidates & (ell <= limit))
        if territory.posterior_fossa:
            deep = seeds[tissues.anat_mm[2].ravel()[seeds] < POSTERIOR_FOSSA_Z_MM - 4.0]
        else:
            deep = seeds[tissues.anat_mm[2].ravel()[seeds] > -15.0]
        seeds = deep if deep.size else seeds
        if seeds.size:
            break
    seed = np.array(np.unravel_index(int(seeds[rng.integers(seeds.size)]), tissues.shape))

    radius_mm = (3.0 * spec.volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    correlation_mm = float(np.clip(0.6 * radius_mm, 2.0 * spacing.min(), 14.0))
    half = np.ceil((2.5 * radius_mm + 2.0 * correlation_mm) / spacing).astype(int) + 2
    lo = np.maximum(seed - half, 0)
    hi = np.minimum(seed + half + 1, tissues.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    box_shape = tuple(int(b - a) for a, b in zip(lo, hi))

    offsets = np.meshgrid(*[(np.arange(a, b) - s) * sp for a, b, s, sp in zip(lo, hi, seed, spacing)],
                          indexing="ij", sparse=True)
    dist2 = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2
    noise = smooth_random_field(box_shape, spacing, correlation_mm, rng)[0]
    ell_box = ell[box]
    # the territory term is an ellipsoidal distance scaled like the seed distance
    territory_scale = max(float(np.cbrt(np.prod(territory.radii_mm))), 1e-6)
    ell2 = (ell_box * territory_scale / radius_mm) ** 2
    score = (-(1.0 - spec.territory_weight) * dist2 / radius_mm**2 - spec.territory_weight * ell2
             + spec.irregularity * noise - 3.0 * np.maximum(ell_box - 1.0, 0.0))
    cand_box = candidates[box]
    flat_idx = np.flatnonzero(cand_box)
    if flat_idx.size < n_voxels:
        log.debug("lesion %s/%s: only %d of %d voxels available", spec.territory, spec.hemisphere,
                  flat_idx.size, n_voxels)
        n_voxels = flat_idx.size
    cand_scores = score.ravel()[flat_idx]
    top = flat_idx[np.argpartition(-cand_scores, n_voxels - 1)[:n_voxels]] if n_voxels < flat_idx.size else flat_idx
    box_mask = np.zeros(box_shape, dtype=bool)
    box_mask.ravel()[top] = True
    mask = np.zeros(tissues.shape, dtype=bool)
    mask[box] = box_mask
    idx = np.argwhere(mask).mean(axis=0)
    centroid = tissues.affine[:3, :3] @ idx + tissues.affine[:3, 3]
    return GrownLesion(spec=spec, mask=mask, volume_ml=float(mask.sum() * voxel_ml), centroid_mm=centroid,
                       extra={"seed_voxel": seed.tolist(), "radius_mm": radius_mm})


def grow_plan(tissues: SubjectTissues, plan: LesionPlan, rng: np.random.Generator) -> list[GrownLesion]:
    """Grow every lesion of ``plan`` in order; later lesions never overlap earlier ones."""
    union = np.zeros(tissues.shape, dtype=bool)
    grown = []
    for spec in plan.lesions:
        lesion = grow_lesion(tissues, spec, rng, exclude=union)
        union |= lesion.mask
        grown.append(lesion)
    return grown


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _move_to_csf(tissues: SubjectTissues, box: tuple[slice, ...], gain: np.ndarray) -> None:
    """Turn ``gain`` (fraction, >= 0, box-shaped) of GM+WM into CSF, proportionally."""
    gm, wm, csf = tissues.gm[box], tissues.wm[box], tissues.csf[box]
    parenchyma = gm + wm
    gain = np.minimum(gain, parenchyma)
    keep = np.where(parenchyma > 0, 1.0 - gain / np.maximum(parenchyma, 1e-6), 1.0)
    tissues.gm[box] = gm * keep
    tissues.wm[box] = wm * keep
    tissues.csf[box] = csf + gain


def paint_lesions(tissues: SubjectTissues, lesion_mask: np.ndarray, *, rim_mm: float = 2.0,
                  ex_vacuo_mm: float = 0.0, ex_vacuo_strength: float = 0.6) -> None:
    """Write lesions into the tissue maps (in place).

    Inside ``lesion_mask`` all tissue becomes lesion: CSF (cavity) where deeper than
    ``rim_mm`` from the lesion border, gliosis (``tissues.gliosis``) in the rim, blended
    linearly in between. Just outside the mask a partial-volume fringe (up to 60% lesion)
    softens the edge. With ``ex_vacuo_mm > 0``, CSF spaces within that distance of the
    lesion widen (a local grey-scale dilation of the CSF map, ``ex_vacuo_strength`` of the way).
    """
    if not lesion_mask.any():
        return
    spacing = np.asarray(tissues.spacing_mm)
    margin = int(np.ceil(max(rim_mm, ex_vacuo_mm, 2.0 * spacing.max()) / spacing.min())) + 2
    box = _bounding_box(lesion_mask, margin)
    m = lesion_mask[box]
    if ex_vacuo_mm > 0:
        dist_out = ndimage.distance_transform_edt(~m, sampling=spacing)
        zone = (dist_out > 0) & (dist_out <= ex_vacuo_mm)
        csf = tissues.csf[box]
        widened = ndimage.maximum_filter(csf, size=3)
        _move_to_csf(tissues, box, np.where(zone, ex_vacuo_strength * np.maximum(widened - csf, 0.0), 0.0))
    depth = ndimage.distance_transform_edt(m, sampling=spacing)
    core = np.clip((depth - 0.5 * spacing.min()) / rim_mm, 0.0, 1.0)
    fringe = 0.6 * ndimage.gaussian_filter(m.astype(np.float32), sigma=0.6)
    fraction = np.where(m, 1.0, np.minimum(fringe, 0.6)).astype(np.float32)
    if tissues.gliosis is None:
        tissues.gliosis = np.zeros(tissues.shape, dtype=np.float32)
    gm, wm, csf, gl = tissues.gm[box], tissues.wm[box], tissues.csf[box], tissues.gliosis[box]
    brain = gm + wm + csf + gl
    # inside the mask the lesion fills the whole voxel, even where the brain fraction is partial
    lesion = np.where(m, np.maximum(brain, 0.95), fraction * brain)
    keep = 1.0 - fraction
    cavity = np.where(m, core, 0.0)
    tissues.gm[box] = gm * keep
    tissues.wm[box] = wm * keep
    tissues.csf[box] = csf * keep + lesion * cavity
    tissues.gliosis[box] = gl * keep + lesion * (1.0 - cavity)


def enlarge_ipsilateral_ventricle(tissues: SubjectTissues, hemisphere: Hemisphere, enlargement_mm: float) -> None:
    """Dilate the lateral ventricle on one side by about ``enlargement_mm`` (in place).

    The ventricle is the CSF (fraction > 0.4) in a central box of template space
    (|x| < 28, -42 < y < 28, -2 < z < 32 mm) on the lesion's side; its grey-scale dilation
    replaces surrounding GM/WM by CSF.
    """
    if enlargement_mm <= 0 or hemisphere == "midline":
        return
    x, y, z = tissues.anat_mm
    side = (x < -1.0) if hemisphere == "left" else (x > 1.0)
    central = (np.abs(x) < 28.0) & (y > -42.0) & (y < 28.0) & (z > -2.0) & (z < 32.0)
    ventricle = np.where(central & side & (tissues.csf > 0.4), tissues.csf, 0.0).astype(np.float32)
    if not ventricle.any():
        return
    spacing = np.asarray(tissues.spacing_mm)
    steps = max(1, int(round(enlargement_mm / spacing.min())))
    box = _bounding_box(ventricle > 0, steps + 2)
    grown = ventricle[box]
    for _ in range(steps):
        grown = ndimage.grey_dilation(grown, footprint=ndimage.generate_binary_structure(3, 1))
    allowed = side[box] & (tissues.gm[box] + tissues.wm[box] > 0)
    gain = np.where(allowed, np.maximum(grown - tissues.csf[box], 0.0), 0.0)
    _move_to_csf(tissues, box, gain)
