"""Stroke lesions: how large, where, what shape, how many, and how they change the tissue.

Sampling happens in two steps so that volumes follow the target distribution exactly:

1. :func:`sample_adult_lesion_plan` / :func:`sample_child_lesion_plan` draw the *plan*: a
   total volume (mL) and one or more :class:`LesionSpec` sharing it. Adult totals are a
   log-normal truncated to ATLAS v2.0's range (0.01-470 mL, median ~5 mL, mean ~27 mL); child
   totals are perinatal (mostly MCA) infarcts of 2.5-172 mL, mean ~50 mL. The total is the
   volume law; how it is split does not change it.

   Adult plans are multi-focal in most subjects, as real stroke masks are (68% of 1449 SOOP
   acute masks have more than one 26-connected component; ``/work/shared/NOTES.md``): besides
   the main lesion, 0-5 extra lesions (:data:`ADULT_EXTRA_COUNT_PROBABILITIES`, 64% of plans
   have at least one) of three kinds: *satellites* next to the main lesion (embolic showers,
   cortical islands), *lacunes* (small deep infarcts, at most 1.5 mL, basal ganglia / thalamus /
   corona radiata / pons / cerebellum) and *remote* lesions (another territory, often the other
   hemisphere). A share :data:`ADULT_POSTERIOR_FOSSA_SHARE` (12%) of main lesions lies in the
   posterior fossa (cerebellum, brainstem), whose extra lesions mostly stay there (a main lesion
   larger than its structure holds spills over into the other cerebellar hemisphere, the
   brainstem, then the PCA territory: :data:`POSTERIOR_FOSSA_MAX_ML`); SOOP has about 11% of
   masks centred below z = -20 mm. The cohort generator stratifies the location and the number
   of lesions over subjects.
2. :func:`grow_lesion` realises one spec on a subject's grid as exactly
   ``K = max(1, round(volume / voxel volume))`` parenchyma voxels: those with the highest score

   ``-(1 - w) q(d) / r^2 - w e^2 + a N + b (WM - GM) + v P - 3 max(e - 1, 0)``

   where ``q(d)`` is the squared distance to the seed in an elongated (prolate, volume-keeping)
   metric whose long axis is random (for deep lesions close to the superior-inferior direction
   of the corona radiata and internal capsule: tract-like), ``r`` the radius of a ball of the
   target volume, ``e`` the ellipsoidal radius of the vascular territory (weight ``w``: large
   infarcts fill their territory), ``N`` multi-scale noise (coarse lobes, mid-scale lobulation
   and a fine scale of ~2 mm that roughens the border and leaves holes), ``b`` a grey/white
   preference and ``P`` a corridor towards the lateral ventricle along which the distance
   penalty is lifted (porencephaly in children). Only parenchyma (GM + WM > 0.5) can become
   lesion, so sulci and ventricles carve the shape: cortical lesions follow the gyri. The main
   body is kept connected (largest component refilled from its border up to ``K`` voxels) unless
   the spec keeps its fragments (a few small islands, as manual masks often have). Later lesions
   of a plan never touch earlier ones (a one-voxel gap), so a plan of ``n`` lesions gives at
   least ``n`` components.

Territories are ellipsoids in template (MNI152) coordinates, written for the right
hemisphere (x > 0) and mirrored for the left; they are evaluated on ``anat_mm``, the
template coordinates of each subject voxel, so they follow each subject's anatomy.

:func:`paint_lesions` turns a lesion mask into tissue: a cavity (CSF) in the core, gliosis
(T1 mildly hypointense) in a rim and, with ``heterogeneity``, in patches of the core, residual
damaged tissue (``spared_fraction``), a partial-volume fringe just outside the mask and optional
ex-vacuo enlargement of CSF spaces next to the lesion. :func:`enlarge_ventricles`,
:func:`degenerate_corticospinal_tract` and :func:`thin_cortex_near` model the chronic
consequences (ex-vacuo ventricular enlargement, Wallerian degeneration, cortical thinning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import ndimage

from lesionlib.synth.deform import SubjectTissues, single_threaded, smooth_random_field

log = logging.getLogger(__name__)

__all__ = [
    "Territory", "TERRITORIES", "LesionSpec", "LesionPlan", "GrownLesion", "LesionKind",
    "ADULT_VOLUME_RANGE_ML", "CHILD_VOLUME_RANGE_ML", "POSTERIOR_FOSSA_Z_MM", "ADULT_POSTERIOR_FOSSA_SHARE",
    "ADULT_EXTRA_COUNT_PROBABILITIES", "LACUNE_MAX_ML", "POSTERIOR_FOSSA_MAX_ML",
    "sample_adult_lesion_volume_ml", "sample_child_lesion_volume_ml",
    "sample_adult_lesion_plan", "sample_child_lesion_plan",
    "grow_lesion", "grow_plan", "paint_lesions", "enlarge_ventricles", "enlarge_ipsilateral_ventricle",
    "degenerate_corticospinal_tract", "thin_cortex_near", "is_posterior_fossa", "CORTICOSPINAL_PATH_MM",
]

ADULT_VOLUME_RANGE_ML = (0.01, 470.0)
ADULT_VOLUME_LOG_MEDIAN_ML = 5.4   # log-normal parameters before truncation, tuned so that
ADULT_VOLUME_LOG_SIGMA = 2.2       # the truncated law has median ~5.1 mL and mean ~27 mL
CHILD_VOLUME_RANGE_ML = (2.5, 172.0)
CHILD_VOLUME_LOG_MEDIAN_ML = 42.0  # truncated: median ~40 mL, mean ~50 mL
CHILD_VOLUME_LOG_SIGMA = 0.8
POSTERIOR_FOSSA_Z_MM = -20.0
"""A lesion is 'posterior fossa' when its centroid lies below this MNI z (mm)."""
ADULT_POSTERIOR_FOSSA_SHARE = 0.12
"""Share of adult plans whose main lesion is infratentorial (SOOP: ~11% of masks centred below -20 mm)."""
ADULT_EXTRA_COUNT_PROBABILITIES = (0.36, 0.25, 0.16, 0.10, 0.08, 0.05)
"""Probability of 0, 1, ..., 5 extra lesions besides the main one (64% multi-focal plans)."""
ADULT_FRAGMENT_PROBABILITY = 0.25
"""Probability that a main lesion keeps up to three small detached islands of its own growth."""
POSTERIOR_FOSSA_MAX_ML = {"cerebellum": 40.0, "brainstem": 12.0}
"""Most an infratentorial lesion holds (one cerebellar hemisphere, the brainstem); a larger
posterior-fossa main lesion spills into the other cerebellar hemisphere, the brainstem, then the
posterior cerebral artery territory (multi-territory posterior-circulation infarcts)."""
LACUNE_MAX_ML = 1.5
"""Lacunes are small deep infarcts; a lacune's share of the total above this goes to the main lesion."""
LARGE_LESION_ML = 30.0  # above this a lesion is territorial (no deep/lacunar placement)

Hemisphere = Literal["left", "right", "midline"]
LesionKind = Literal["main", "satellite", "lacune", "remote"]


@dataclass(frozen=True)
class Territory:
    """A vascular-territory-like region: an ellipsoid in template mm (right-hemisphere centre)."""

    name: str
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    posterior_fossa: bool = False
    deep: bool = False
    """Subcortical (perforator) territory: lesions prefer white matter and grow along tracts."""

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
        Territory("deep", (22.0, 0.0, 8.0), (12.0, 18.0, 15.0), deep=True),  # lenticulostriate / capsular
        Territory("thalamus", (12.0, -18.0, 6.0), (8.0, 11.0, 9.0), deep=True),
        Territory("corona", (25.0, -10.0, 28.0), (9.0, 28.0, 10.0), deep=True),  # corona radiata
        Territory("cerebellum", (24.0, -62.0, -36.0), (22.0, 20.0, 15.0), posterior_fossa=True),
        Territory("brainstem", (0.0, -30.0, -32.0), (9.0, 10.0, 18.0), posterior_fossa=True, deep=True),
    )
}
_ADULT_SUPRATENTORIAL = {"mca": 0.52, "deep": 0.16, "corona": 0.06, "thalamus": 0.04, "pca": 0.14, "aca": 0.08}
_ADULT_POSTERIOR = {"cerebellum": 0.65, "brainstem": 0.35}
_SUPRATENTORIAL_LACUNE = {"deep": 0.5, "thalamus": 0.2, "corona": 0.3}
_POSTERIOR_LACUNE = {"brainstem": 0.6, "cerebellum": 0.4}
_CHILD_TERRITORIES = {"mca": 0.82, "pca": 0.10, "aca": 0.08}


@dataclass(frozen=True)
class LesionSpec:
    """One lesion to grow: target volume (mL), territory, hemisphere and shape parameters."""

    volume_ml: float
    territory: str
    hemisphere: Hemisphere
    irregularity: float = 0.8
    """Amplitude of the multi-scale noise in the growth score (0: smooth blob; >1: lobulated, rough)."""
    central_seed: bool = False
    """Seed in the inner half of the territory (large territorial infarcts)."""
    territory_weight: float = 0.0
    """0: shape grows around the seed; towards 1: it fills the territory's ellipsoid shells."""
    kind: LesionKind = "main"
    """``main`` (first of a plan), ``satellite`` (seeded next to the main lesion), ``lacune``, ``remote``."""
    elongation: float = 1.0
    """Ratio of the long to the short axis of the growth metric (1: isotropic)."""
    fine_noise: float = 0.6
    """Relative amplitude of the finest noise scale (~2 mm): border roughness, holes."""
    tissue_bias: float = 0.0
    """Preference for white (> 0) or grey (< 0) matter, in units of the score."""
    keep_fragments: bool = False
    """Keep up to three detached islands of the growth instead of making the lesion one component."""
    toward_ventricle: float = 0.0
    """Strength of a corridor from the seed to the nearest lateral ventricle (porencephaly)."""

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
        return "midline" if rng.random() < 0.5 else ("left" if rng.random() < 0.5 else "right")
    return "left" if rng.random() < p_left else "right"


def _other(hemisphere: Hemisphere) -> Hemisphere:
    return {"left": "right", "right": "left", "midline": "midline"}[hemisphere]


def _adult_main_location(rng: np.random.Generator, volume_ml: float, posterior_fossa: bool) -> tuple[str, Hemisphere]:
    if posterior_fossa:
        territory = _choice(rng, _ADULT_POSTERIOR)
    else:
        weights = dict(_ADULT_SUPRATENTORIAL)
        if volume_ml > LARGE_LESION_ML:  # large infarcts are cortical-territorial, not lacunar
            for deep in ("deep", "thalamus", "corona"):
                weights.pop(deep)
        territory = _choice(rng, weights)
    return territory, _hemisphere_for(territory, rng)


def _shape_for(rng: np.random.Generator, territory: str, kind: LesionKind, volume_ml: float) -> dict:
    """Shape parameters of a lesion of ``kind`` in ``territory`` (see :class:`LesionSpec`)."""
    deep = TERRITORIES[territory].deep
    if kind == "lacune":
        return {"irregularity": float(rng.uniform(0.2, 0.6)), "elongation": float(rng.uniform(1.0, 1.8)),
                "fine_noise": 0.3, "tissue_bias": 0.0}
    irregularity = float(rng.uniform(1.0, 1.8) if kind == "main" else rng.uniform(0.7, 1.4))
    return {
        "irregularity": irregularity,
        "elongation": float(rng.uniform(1.2, 2.4) if deep else rng.uniform(1.0, 2.0)),
        "fine_noise": float(rng.uniform(0.6, 1.0)),
        "tissue_bias": float(rng.uniform(0.1, 0.5) if deep else rng.uniform(-0.3, 0.3)),
        "territory_weight": float(rng.uniform(0.2, 0.5)) if kind == "main" and volume_ml > LARGE_LESION_ML else 0.0,
        "central_seed": kind == "main" and volume_ml > LARGE_LESION_ML,
    }


def _adult_extra(rng: np.random.Generator, main: LesionSpec, volume_ml: float) -> tuple[LesionSpec, float]:
    """One extra lesion of an adult plan and the volume it hands back to the main lesion (lacune cap)."""
    u = rng.random()
    if main.posterior_fossa:
        kind: LesionKind = "satellite" if u < 0.5 else ("lacune" if u < 0.7 else "remote")
    else:
        kind = "satellite" if u < 0.5 else ("lacune" if u < 0.8 else "remote")
    give_back = 0.0
    if kind == "satellite":
        territory, hemisphere = main.territory, main.hemisphere
    elif kind == "lacune":
        territory = _choice(rng, _POSTERIOR_LACUNE if main.posterior_fossa else _SUPRATENTORIAL_LACUNE)
        hemisphere = _hemisphere_for(territory, rng)
        capped = min(volume_ml, float(rng.uniform(0.02, LACUNE_MAX_ML)))
        give_back, volume_ml = volume_ml - capped, capped
    elif main.posterior_fossa:  # posterior circulation: other infratentorial territory or PCA/thalamus
        territory = _choice(rng, {"cerebellum": 0.45, "brainstem": 0.25, "pca": 0.2, "thalamus": 0.1})
        hemisphere = _hemisphere_for(territory, rng)
    elif rng.random() < 0.5:  # bilateral: the same territory on the other side
        territory, hemisphere = main.territory, _other(main.hemisphere)
    else:
        territory = _choice(rng, {k: v for k, v in _ADULT_SUPRATENTORIAL.items()})
        hemisphere = _hemisphere_for(territory, rng)
    shape = _shape_for(rng, territory, kind, volume_ml)
    return LesionSpec(volume_ml, territory, hemisphere, kind=kind, **shape), give_back


def sample_adult_lesion_plan(rng: np.random.Generator, posterior_fossa: bool | None = None,
                             count_quantile: float | None = None) -> LesionPlan:
    """An ATLAS-like plan: total volume from :func:`sample_adult_lesion_volume_ml`, 1-6 lesions.

    ``posterior_fossa`` forces the main lesion's location and ``count_quantile`` (in [0, 1)) the
    number of extra lesions (its quantile in :data:`ADULT_EXTRA_COUNT_PROBABILITIES`); the cohort
    generator stratifies both over subjects so that every cohort, small ones too, has the target
    shares. ``None`` draws them: posterior fossa with probability
    :data:`ADULT_POSTERIOR_FOSSA_SHARE`. With extra lesions the main one takes 55-95% of the total
    and the extras share the rest (lacunes at most :data:`LACUNE_MAX_ML` each, the excess going
    back to the main lesion), so the total is always the sampled volume.
    """
    total = sample_adult_lesion_volume_ml(rng)
    if posterior_fossa is None:
        posterior_fossa = bool(rng.random() < ADULT_POSTERIOR_FOSSA_SHARE)
    p = np.asarray(ADULT_EXTRA_COUNT_PROBABILITIES)
    if count_quantile is None:
        n_extra = int(rng.choice(len(p), p=p / p.sum()))
    else:
        n_extra = int(min(np.searchsorted(np.cumsum(p / p.sum()), float(count_quantile), side="right"), len(p) - 1))
    territory, hemisphere = _adult_main_location(rng, total, posterior_fossa)
    main_share = 1.0 if n_extra == 0 else float(rng.uniform(0.55, 0.95))
    main = LesionSpec(total * main_share, territory, hemisphere, kind="main",
                      keep_fragments=bool(rng.random() < ADULT_FRAGMENT_PROBABILITY),
                      **_shape_for(rng, territory, "main", total))
    extras = []
    given_back = 0.0
    if n_extra:
        for share in rng.dirichlet(np.ones(n_extra)) * (1.0 - main_share):
            spec, back = _adult_extra(rng, main, total * float(share))
            extras.append(spec)
            given_back += back
    main = replace(main, volume_ml=main.volume_ml + given_back)
    if main.posterior_fossa and main.volume_ml > POSTERIOR_FOSSA_MAX_ML[main.territory]:
        spill = main.volume_ml - POSTERIOR_FOSSA_MAX_ML[main.territory]
        main = replace(main, volume_ml=POSTERIOR_FOSSA_MAX_ML[main.territory])
        targets = (("cerebellum", _other(main.hemisphere) if main.territory == "cerebellum" else main.hemisphere),
                   ("brainstem", "midline"), ("pca", "left" if rng.random() < 0.5 else "right"))
        for territory, hemisphere in targets:
            if spill <= 0:
                break
            if territory == "brainstem" and main.territory == "brainstem":
                continue
            if territory == "cerebellum" and hemisphere == "midline":
                hemisphere = "left" if rng.random() < 0.5 else "right"
            volume = spill if territory == "pca" else min(spill, POSTERIOR_FOSSA_MAX_ML[territory])
            extras.append(LesionSpec(volume, territory, hemisphere, kind="remote",
                                     **_shape_for(rng, territory, "remote", volume)))
            spill -= volume
    return LesionPlan((main, *extras))


def sample_child_lesion_plan(rng: np.random.Generator) -> LesionPlan:
    """A perinatal arterial ischaemic stroke: one large territorial (mostly MCA) infarct.

    Left-sided in 60% of children (as reported for perinatal stroke), seeded centrally in the
    territory, with a lobulated outline. Half of the infarcts over 15 mL reach the lateral
    ventricle (porencephalic cavity); a quarter of children have one small satellite (3-10% of
    the total) next to the main lesion.
    """
    volume = sample_child_lesion_volume_ml(rng)
    territory = _choice(rng, _CHILD_TERRITORIES)
    hemisphere = _hemisphere_for(territory, rng, p_left=0.6)
    porencephalic = volume > 15.0 and rng.random() < 0.5
    satellite_share = float(rng.uniform(0.03, 0.10)) if rng.random() < 0.25 else 0.0
    main = LesionSpec(volume * (1.0 - satellite_share), territory, hemisphere,
                      irregularity=float(rng.uniform(0.6, 1.0)), central_seed=True,
                      territory_weight=float(rng.uniform(0.3, 0.6)), kind="main",
                      elongation=float(rng.uniform(1.0, 1.6)), fine_noise=float(rng.uniform(0.3, 0.6)),
                      tissue_bias=float(rng.uniform(-0.2, 0.2)),
                      toward_ventricle=float(rng.uniform(0.6, 1.2)) if porencephalic else 0.0)
    if not satellite_share:
        return LesionPlan((main,))
    satellite = LesionSpec(volume * satellite_share, territory, hemisphere, kind="satellite",
                           **_shape_for(rng, territory, "satellite", volume * satellite_share))
    return LesionPlan((main, satellite))


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


Box = tuple[slice, slice, slice]


def _box_around(centre: np.ndarray, half: np.ndarray, shape: tuple[int, ...]) -> Box:
    lo = np.maximum(np.asarray(centre) - half, 0)
    hi = np.minimum(np.asarray(centre) + half + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _box_start(box: Box) -> np.ndarray:
    return np.array([s.start for s in box])


def _sub(anat_mm: np.ndarray, box: Box) -> np.ndarray:
    return anat_mm[(slice(None), *box)]


def _territory_box(tissues: SubjectTissues, territory: Territory, hemisphere: Hemisphere, limit: float) -> Box | None:
    """Voxel box holding the part of the territory's ellipsoid within ``limit`` (found on a coarse
    ~4 mm sub-grid of ``anat_mm``); ``None`` if it is not on the grid."""
    spacing = np.asarray(tissues.spacing_mm)
    stride = max(1, int(round(4.0 / spacing.min())))
    coarse = tissues.anat_mm[:, ::stride, ::stride, ::stride]
    inside = np.argwhere(territory.normalised_radius(coarse, hemisphere) <= limit)
    if inside.size == 0:
        return None
    lo = inside.min(axis=0) * stride - stride
    hi = inside.max(axis=0) * stride + stride
    return _box_around((lo + hi) // 2, (hi - lo) // 2 + 1, tissues.shape)


def _territory_seed(tissues: SubjectTissues, spec: LesionSpec, candidates: np.ndarray, exclude: np.ndarray | None,
                    rng: np.random.Generator) -> np.ndarray | None:
    """A seed voxel in the territory (its inner half first for ``central_seed``), then within 1.5x of it,
    then anywhere allowed; supratentorial seeds above z = -15 mm, infratentorial below -24 mm."""
    territory = TERRITORIES[spec.territory]
    limits = ((0.5, 1.0) if spec.central_seed else (1.0,)) + (1.5, np.inf)
    for limit in limits:
        box = _territory_box(tissues, territory, spec.hemisphere, limit) if np.isfinite(limit) else None
        if box is None:
            box = _box_around(np.array(tissues.shape) // 2, np.array(tissues.shape), tissues.shape)
        anat = _sub(tissues.anat_mm, box)
        ok = (candidates[box] & _allowed_region(anat, spec)
              & (territory.normalised_radius(anat, spec.hemisphere) <= limit))
        if exclude is not None:
            ok &= ~exclude[box]
        seeds = np.flatnonzero(ok)
        z = anat[2].ravel()[seeds]
        deep = seeds[z < POSTERIOR_FOSSA_Z_MM - 4.0] if territory.posterior_fossa else seeds[z > -15.0]
        seeds = deep if deep.size else seeds
        if seeds.size:
            local = np.array(np.unravel_index(int(seeds[rng.integers(seeds.size)]), ok.shape))
            return local + _box_start(box)
    return None


def _seed_near(near: np.ndarray, near_box: Box, ok: np.ndarray, spacing: np.ndarray, gap_mm: float,
               reach_mm: float, rng: np.random.Generator, tries: int = 400) -> np.ndarray | None:
    """A voxel where ``ok`` (full-grid bool) holds, between ``gap_mm`` and ``gap_mm + reach_mm`` from
    the mask ``near`` (full grid; all of it inside ``near_box``): random steps from its surface."""
    local = near[near_box]
    surface = np.argwhere(local & ~ndimage.binary_erosion(local)) + _box_start(near_box)
    if surface.size == 0:
        return None
    shape = np.array(near.shape)
    for _ in range(tries):
        start = surface[rng.integers(len(surface))]
        direction = rng.standard_normal(3)
        direction /= max(float(np.linalg.norm(direction)), 1e-9)
        step_mm = rng.uniform(gap_mm, gap_mm + reach_mm)
        point = np.rint(start + direction * step_mm / spacing).astype(int)
        if np.any(point < 0) or np.any(point >= shape) or not ok[tuple(point)]:
            continue
        nearest_mm = np.sqrt((((surface - point) * spacing) ** 2).sum(axis=1).min())
        if gap_mm < nearest_mm <= gap_mm + reach_mm:
            return point
    return None


def _long_axis(rng: np.random.Generator, deep: bool) -> np.ndarray:
    """Unit vector of the growth metric's long axis: near superior-inferior (tracts) for deep lesions."""
    v = rng.standard_normal(3)
    if deep:
        v = np.array([0.0, 0.0, 1.0]) + 0.45 * v
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _multiscale_noise(shape: tuple[int, ...], spacing: np.ndarray, radius_mm: float, fine_weight: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Sum of three smooth fields (coarse ~0.7 r, mid ~0.3 r, fine ~2 mm), unit standard deviation."""
    finest = float(max(1.5 * spacing.min(), 2.0))
    scales = (float(np.clip(0.7 * radius_mm, 2.0 * spacing.min(), 20.0)),
              float(np.clip(0.3 * radius_mm, 1.5 * spacing.min(), 8.0)), finest)
    weights = (1.0, 0.7, fine_weight)
    out = np.zeros(shape, dtype=np.float32)
    for scale, weight in zip(scales, weights):
        if weight > 0:
            out += np.float32(weight) * smooth_random_field(shape, spacing, scale, rng)[0]
    return out / np.float32(np.sqrt(sum(w * w for w in weights)))


def _ventricle_target(tissues: SubjectTissues, seed: np.ndarray, hemisphere: Hemisphere) -> np.ndarray | None:
    """Voxel of the lesion side's lateral ventricle nearest to ``seed`` (None if there is none)."""
    box = _territory_box(tissues, Territory("ventricles", (0.0, -7.0, 15.0), (28.0, 35.0, 17.0)), "midline", 1.0)
    if box is None:
        return None
    x, y, z = _sub(tissues.anat_mm, box)
    central = (np.abs(x) < 28.0) & (y > -42.0) & (y < 28.0) & (z > -2.0) & (z < 32.0) & (tissues.csf[box] > 0.5)
    if hemisphere in ("left", "right"):
        central &= (x < -1.0) if hemisphere == "left" else (x > 1.0)
    idx = np.argwhere(central) + _box_start(box)
    if idx.size == 0:
        return None
    spacing = np.asarray(tissues.spacing_mm)
    d2 = (((idx - seed) * spacing) ** 2).sum(axis=1)
    return idx[int(np.argmin(d2))]


def _connect_and_refill(box_mask: np.ndarray, score: np.ndarray, cand: np.ndarray, n_voxels: int,
                        keep_islands: int) -> np.ndarray:
    """Largest 26-connected component (plus the ``keep_islands`` next largest), grown back to ``n_voxels``
    from its border by the best-scored candidates."""
    labels, n = ndimage.label(box_mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return box_mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    order = np.argsort(-sizes, kind="stable")[: 1 + keep_islands]
    kept = np.isin(labels, order[sizes[order] > 0])
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(64):
        deficit = n_voxels - int(kept.sum())
        if deficit <= 0:
            break
        shell = np.flatnonzero(ndimage.binary_dilation(kept, structure) & cand & ~kept)
        if shell.size == 0:
            shell = np.flatnonzero(cand & ~kept)
            if shell.size == 0:
                break
        take = shell if shell.size <= deficit else shell[np.argpartition(-score.ravel()[shell], deficit - 1)[:deficit]]
        kept.ravel()[take] = True
    return kept


def grow_lesion(tissues: SubjectTissues, spec: LesionSpec, rng: np.random.Generator,
                exclude: np.ndarray | None = None, near: GrownLesion | None = None,
                parenchyma: np.ndarray | None = None) -> GrownLesion:
    """Realise ``spec`` on the subject grid as exactly ``max(1, round(volume / voxel))`` voxels.

    Parameters
    ----------
    tissues
        The subject's tissue fractions and template coordinates.
    spec
        Target volume (mL), territory, hemisphere and shape parameters.
    exclude
        Boolean mask of voxels that must stay outside (earlier lesions and their one-voxel
        margin), subject grid.
    near
        For ``spec.kind == 'satellite'``: the lesion the satellite is seeded next to (2 voxels to
        ~max(8 mm, 0.8 r) away); otherwise ignored.
    parenchyma
        The subject's parenchyma mask (GM + WM > 0.5), if already computed.

    Returns
    -------
    GrownLesion
        The lesion mask (fewer voxels only if the allowed region is smaller than the target);
        ``extra['box']`` is the voxel box holding it.
    """
    spacing = np.asarray(tissues.spacing_mm)
    voxel_ml = tissues.voxel_volume_ml
    n_voxels = max(1, int(round(spec.volume_ml / voxel_ml)))
    if parenchyma is None:
        parenchyma = _parenchyma(tissues)
    radius_mm = (3.0 * spec.volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    seed = _lesion_seed(tissues, spec, rng, exclude, near, parenchyma, radius_mm)
    box, target = _growth_box(tissues, spec, seed, radius_mm)
    box_shape = tuple(s.stop - s.start for s in box)
    anat = _sub(tissues.anat_mm, box)
    cand_box = parenchyma[box] & _allowed_region(anat, spec)
    if exclude is not None:
        cand_box &= ~exclude[box]
    score = _growth_score(tissues, spec, rng, box, seed, target, radius_mm, anat)
    box_mask = _select_voxels(score, cand_box, n_voxels, spec)
    mask = np.zeros(tissues.shape, dtype=bool)
    mask[box] = box_mask
    idx = np.argwhere(box_mask).mean(axis=0) + _box_start(box)
    centroid = tissues.affine[:3, :3] @ idx + tissues.affine[:3, 3]
    return GrownLesion(spec=spec, mask=mask, volume_ml=float(box_mask.sum() * voxel_ml), centroid_mm=centroid,
                       extra={"seed_voxel": seed.tolist(), "radius_mm": radius_mm, "box": box})


def _lesion_seed(tissues: SubjectTissues, spec: LesionSpec, rng: np.random.Generator, exclude: np.ndarray | None,
                 near: GrownLesion | None, parenchyma: np.ndarray, radius_mm: float) -> np.ndarray:
    """The seed voxel: next to ``near`` for a satellite, else inside the territory (:func:`_territory_seed`)."""
    spacing = np.asarray(tissues.spacing_mm)
    seed = None
    if spec.kind == "satellite" and near is not None and near.mask.any():
        main_radius_mm = float(near.extra.get("radius_mm", radius_mm))
        reach_mm = max(8.0, 0.8 * main_radius_mm)
        gap_mm = 1.5 * spacing.max() + 0.5 * radius_mm
        margin = np.ceil((gap_mm + reach_mm) / spacing).astype(int) + 1
        zone = _box_around(np.array([(s.start + s.stop) // 2 for s in near.extra["box"]]),
                           np.array([(s.stop - s.start) // 2 for s in near.extra["box"]]) + margin + 1, tissues.shape)
        ok = np.zeros(tissues.shape, dtype=bool)
        ok[zone] = parenchyma[zone] & _allowed_region(_sub(tissues.anat_mm, zone), spec)
        if exclude is not None:
            ok[zone] &= ~exclude[zone]
        seed = _seed_near(near.mask, near.extra["box"], ok, spacing, gap_mm, reach_mm, rng)
    if seed is None:
        seed = _territory_seed(tissues, spec, parenchyma, exclude, rng)
    if seed is None:
        raise RuntimeError(f"no parenchyma left for a {spec.territory} lesion ({spec.hemisphere})")
    return seed


def _growth_box(tissues: SubjectTissues, spec: LesionSpec, seed: np.ndarray,
                radius_mm: float) -> tuple[tuple[slice, ...], np.ndarray | None]:
    """The voxel box a lesion may grow in (reaching the ventricle when it must), and that ventricle target."""
    spacing = np.asarray(tissues.spacing_mm)
    territory = TERRITORIES[spec.territory]
    long_axis_factor = max(float(spec.elongation), 1.0) ** (2.0 / 3.0)
    reach = 1.9 * radius_mm * long_axis_factor
    if spec.territory_weight > 0:  # territorial lesions also spread over the territory's shells
        reach = max(reach, 1.2 * radius_mm * max(territory.radii_mm) / float(np.cbrt(np.prod(territory.radii_mm))))
    half = np.ceil(reach / spacing).astype(int) + 2
    target = None
    if spec.toward_ventricle > 0:
        target = _ventricle_target(tissues, seed, spec.hemisphere)
        if target is not None:  # the box must reach the ventricle
            half = np.maximum(half, np.abs(target - seed) + 3)
    return _box_around(seed, half, tissues.shape), target


def _growth_score(tissues: SubjectTissues, spec: LesionSpec, rng: np.random.Generator, box: tuple[slice, ...],
                  seed: np.ndarray, target: np.ndarray | None, radius_mm: float, anat: np.ndarray) -> np.ndarray:
    """Score of every voxel of ``box`` (float32): elongated distance, ventricle corridor, territory,
    multi-scale noise and grey/white preference; the lesion is the top-scoring candidates."""
    spacing = np.asarray(tissues.spacing_mm)
    territory = TERRITORIES[spec.territory]
    elongation = max(float(spec.elongation), 1.0)
    long_axis_factor = elongation ** (2.0 / 3.0)
    offsets = np.meshgrid(*[((np.arange(s.start, s.stop) - c) * sp).astype(np.float32)
                            for s, c, sp in zip(box, seed, spacing)], indexing="ij", sparse=True)
    axis = _long_axis(rng, territory.deep or spec.kind == "lacune").astype(np.float32)
    along = offsets[0] * axis[0] + offsets[1] * axis[1] + offsets[2] * axis[2]
    dist2 = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2
    short_axis_factor = elongation ** (-1.0 / 3.0)
    radial = (along**2 / np.float32(long_axis_factor**2) + (dist2 - along**2) / np.float32(short_axis_factor**2)) \
        / np.float32(radius_mm**2)
    del along, dist2
    lift = None
    if target is not None:
        # corridor (Gaussian profile, width ~ half the radius, at least 3 mm) around the seed-to-ventricle
        # segment: along it the distance and territory penalties are lifted, so the lesion reaches the
        # ventricle wall
        seg = ((target - seed) * spacing).astype(np.float32)
        length2 = max(float(seg @ seg), 1e-6)
        t = np.clip((offsets[0] * seg[0] + offsets[1] * seg[1] + offsets[2] * seg[2]) / length2, 0.0, 1.0)
        d2 = sum((offsets[k] - t * seg[k]) ** 2 for k in range(3))
        width = max(3.0, 0.5 * radius_mm)
        corridor = np.exp(-0.5 * d2 / np.float32(width**2)).astype(np.float32)
        lift = 1.0 - np.float32(min(spec.toward_ventricle, 1.0)) * corridor
        radial *= lift
        radial -= np.float32(0.5 * spec.toward_ventricle) * corridor
        del t, d2, corridor
    score = -(1.0 - spec.territory_weight) * radial
    del radial
    ell = territory.normalised_radius(anat, spec.hemisphere)
    if spec.territory_weight > 0:
        territory_scale = max(float(np.cbrt(np.prod(territory.radii_mm))), 1e-6)
        score -= np.float32(spec.territory_weight) * (ell * np.float32(territory_scale / radius_mm)) ** 2
    outside = 3.0 * np.maximum(ell - 1.0, 0.0)
    score -= outside if lift is None else outside * lift
    del ell, outside, lift
    score = score.astype(np.float32, copy=False)
    box_shape = tuple(s.stop - s.start for s in box)
    if spec.irregularity > 0:
        score += np.float32(spec.irregularity) * _multiscale_noise(box_shape, spacing, radius_mm, spec.fine_noise, rng)
    if spec.tissue_bias:
        score += np.float32(spec.tissue_bias) * (tissues.wm[box] - tissues.gm[box])
    return score


def _select_voxels(score: np.ndarray, cand_box: np.ndarray, n_voxels: int, spec: LesionSpec) -> np.ndarray:
    """The ``n_voxels`` best-scoring candidates of the box (fewer when fewer are allowed), made connected."""
    flat_idx = np.flatnonzero(cand_box)
    if flat_idx.size < n_voxels:
        log.debug("lesion %s/%s: only %d of %d voxels available", spec.territory, spec.hemisphere,
                  flat_idx.size, n_voxels)
        n_voxels = flat_idx.size
    if n_voxels == 0:
        raise RuntimeError(f"no parenchyma left for a {spec.territory} lesion ({spec.hemisphere})")
    cand_scores = score.ravel()[flat_idx]
    top = flat_idx[np.argpartition(-cand_scores, n_voxels - 1)[:n_voxels]] if n_voxels < flat_idx.size else flat_idx
    box_mask = np.zeros(score.shape, dtype=bool)
    box_mask.ravel()[top] = True
    if n_voxels > 1:
        box_mask = _connect_and_refill(box_mask, score, cand_box, n_voxels, 3 if spec.keep_fragments else 0)
    return box_mask


@single_threaded
def grow_plan(tissues: SubjectTissues, plan: LesionPlan, rng: np.random.Generator) -> list[GrownLesion]:
    """Grow every lesion of ``plan`` in order; later lesions never touch earlier ones (one-voxel gap).

    Satellites are seeded next to the main lesion (``plan.lesions[0]``); a lesion whose territory
    is already full is grown next to the main lesion instead.
    """
    parenchyma = _parenchyma(tissues)
    blocked = np.zeros(tissues.shape, dtype=bool)
    grown: list[GrownLesion] = []
    for spec in plan.lesions:
        near = grown[0] if grown else None
        try:
            lesion = grow_lesion(tissues, spec, rng, exclude=blocked, near=near, parenchyma=parenchyma)
        except RuntimeError:
            if not grown:
                raise
            lesion = grow_lesion(tissues, replace(spec, territory=plan.lesions[0].territory,
                                                  hemisphere=plan.lesions[0].hemisphere, kind="satellite"),
                                 rng, exclude=blocked, near=near, parenchyma=parenchyma)
        box = _box_around(np.array([(s.start + s.stop) // 2 for s in lesion.extra["box"]]),
                          np.array([(s.stop - s.start) // 2 for s in lesion.extra["box"]]) + 2, tissues.shape)
        blocked[box] |= ndimage.binary_dilation(lesion.mask[box], structure=np.ones((3, 3, 3), dtype=bool))
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


def paint_lesions(tissues: SubjectTissues, lesion_mask: np.ndarray, rng: np.random.Generator | None = None, *,
                  rim_mm: float = 2.0, ex_vacuo_mm: float = 0.0, ex_vacuo_strength: float = 0.6,
                  heterogeneity: float = 0.0, spared_fraction: float = 0.0) -> None:
    """Write lesions into the tissue maps (in place).

    Inside ``lesion_mask`` the tissue becomes lesion: CSF (cavity) where deeper than ``rim_mm``
    from the lesion border, gliosis (``tissues.gliosis``) in the rim, blended linearly in between.
    ``heterogeneity`` (0-1, needs ``rng``) blends that depth profile with random patches (a smooth
    ~4 mm field) so that the core holds gliotic patches and the rim cystic ones (mixed signal of
    encephalomalacia; the cavity share of the core falls from 1 towards ~0.5); ``spared_fraction``
    (0-1) keeps up to that fraction of the original GM/WM inside the mask, varying smoothly
    (partially damaged tissue). Just outside the mask a partial-volume fringe (up to 60% lesion)
    softens the edge. With ``ex_vacuo_mm > 0``, CSF spaces within that distance of the lesion widen
    (a local grey-scale dilation of the CSF map, ``ex_vacuo_strength`` of the way).
    """
    if not lesion_mask.any():
        return
    if (heterogeneity > 0 or spared_fraction > 0) and rng is None:
        raise ValueError("heterogeneity and spared_fraction need a random generator")
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
    if heterogeneity > 0:  # blend the depth profile with random cystic / gliotic patches
        patches = np.clip(0.5 + 0.6 * smooth_random_field(m.shape, spacing, 4.0, rng)[0], 0.0, 1.0)
        core = (1.0 - heterogeneity) * core + heterogeneity * patches * np.clip(depth / spacing.min(), 0.0, 1.0)
    spared = np.zeros(m.shape, dtype=np.float32)
    if spared_fraction > 0:
        spared = spared_fraction * np.clip(0.5 + 0.5 * smooth_random_field(m.shape, spacing, 6.0, rng)[0], 0.0, 1.0)
    fringe = 0.6 * ndimage.gaussian_filter(m.astype(np.float32), sigma=0.6)
    fraction = np.where(m, 1.0 - spared, np.minimum(fringe, 0.6)).astype(np.float32)
    if tissues.gliosis is None:
        tissues.gliosis = np.zeros(tissues.shape, dtype=np.float32)
    gm, wm, csf, gl = tissues.gm[box], tissues.wm[box], tissues.csf[box], tissues.gliosis[box]
    brain = gm + wm + csf + gl
    # inside the mask the lesion fills the whole voxel, even where the brain fraction is partial
    lesion = np.where(m, np.maximum(brain, 0.95) * (1.0 - spared), fraction * brain)
    keep = np.where(m, np.where(gm + wm > 0, spared, 0.0), 1.0 - fraction)
    cavity = np.where(m, core, 0.0)
    tissues.gm[box] = gm * keep
    tissues.wm[box] = wm * keep
    tissues.csf[box] = np.where(m, 0.0, csf * keep) + lesion * cavity
    tissues.gliosis[box] = np.where(m, 0.0, gl * keep) + lesion * (1.0 - cavity)


def enlarge_ventricles(tissues: SubjectTissues, hemisphere: Hemisphere | Literal["both"],
                       enlargement_mm: float) -> None:
    """Dilate the lateral ventricles (one side or both) by about ``enlargement_mm`` (in place).

    The ventricle is the CSF (fraction > 0.4) in a central box of template space
    (|x| < 28, -42 < y < 28, -2 < z < 32 mm) on the chosen side(s); its grey-scale dilation
    replaces surrounding GM/WM by CSF.
    """
    if enlargement_mm <= 0 or hemisphere == "midline":
        return
    x, y, z = tissues.anat_mm
    if hemisphere == "both":
        side = np.abs(x) > 1.0
    else:
        side = (x < -1.0) if hemisphere == "left" else (x > 1.0)
    central = (np.abs(x) < 28.0) & (y > -42.0) & (y < 28.0) & (z > -2.0) & (z < 32.0)
    ventricle = np.where(central & side & (tissues.csf > 0.4), tissues.csf, 0.0).astype(np.float32)
    if not ventricle.any():
        return
    spacing = np.asarray(tissues.spacing_mm)
    steps = max(1, int(round(enlargement_mm / spacing.min())))
    fraction = min(1.0, enlargement_mm / (steps * spacing.min()))
    box = _bounding_box(ventricle > 0, steps + 2)
    grown = ventricle[box]
    for _ in range(steps):
        grown = ndimage.grey_dilation(grown, footprint=ndimage.generate_binary_structure(3, 1))
    allowed = side[box] & (tissues.gm[box] + tissues.wm[box] > 0)
    gain = np.where(allowed, fraction * np.maximum(grown - tissues.csf[box], 0.0), 0.0)
    _move_to_csf(tissues, box, gain)


def enlarge_ipsilateral_ventricle(tissues: SubjectTissues, hemisphere: Hemisphere, enlargement_mm: float) -> None:
    """:func:`enlarge_ventricles` on the lesion's side only."""
    enlarge_ventricles(tissues, hemisphere, enlargement_mm)


CORTICOSPINAL_PATH_MM: tuple[tuple[float, float, float], ...] = (
    (30.0, -22.0, 58.0),   # precentral gyrus / corona radiata
    (25.0, -18.0, 28.0),   # corona radiata
    (21.0, -14.0, 6.0),    # posterior limb of the internal capsule
    (13.0, -18.0, -10.0),  # cerebral peduncle
    (7.0, -26.0, -28.0),   # pons
    (4.0, -34.0, -48.0),   # medullary pyramid
)
"""Centre line of the right corticospinal tract in template mm (x mirrored for the left)."""


def _distance_to_polyline(anat_mm: np.ndarray, points: np.ndarray) -> np.ndarray:
    best = np.full(anat_mm.shape[1:], np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        seg = b - a
        t = sum((anat_mm[k] - a[k]) * seg[k] for k in range(3)) / float(seg @ seg)
        t = np.clip(t, 0.0, 1.0)
        d2 = sum((anat_mm[k] - (a[k] + t * seg[k])) ** 2 for k in range(3))
        best = np.minimum(best, d2)
    return np.sqrt(best)


def degenerate_corticospinal_tract(tissues: SubjectTissues, hemisphere: Hemisphere, severity: float,
                                   radius_mm: float = 4.0) -> np.ndarray:
    """Wallerian degeneration of the corticospinal tract on the lesion's side (in place).

    Within ``radius_mm`` (soft, Gaussian profile) of :data:`CORTICOSPINAL_PATH_MM` below the
    corona radiata (template z < 40 mm), a ``severity`` (0-1) fraction of the white matter becomes
    T1-hypointense scar (``tissues.gliosis``) and a third of that fraction is lost (CSF: atrophy of
    the peduncle and pons). Returns the tract weight (float32, 0-1) on the subject grid. The
    lesion mask is not changed: degeneration is not part of a stroke lesion tracing.
    """
    if severity <= 0 or hemisphere not in ("left", "right"):
        return np.zeros(tissues.shape, dtype=np.float32)
    points = np.array(CORTICOSPINAL_PATH_MM, dtype=float)
    if hemisphere == "left":
        points[:, 0] *= -1.0
    box_lo = points.min(axis=0) - 3 * radius_mm
    box_hi = points.max(axis=0) + 3 * radius_mm
    x, y, z = tissues.anat_mm
    near = ((x > box_lo[0]) & (x < box_hi[0]) & (y > box_lo[1]) & (y < box_hi[1]) & (z > box_lo[2])
            & (z < min(box_hi[2], 40.0)))
    if not near.any():
        return np.zeros(tissues.shape, dtype=np.float32)
    box = _bounding_box(near, 0)
    anat = tissues.anat_mm[(slice(None), *box)]
    dist = _distance_to_polyline(anat, points)
    same_side = (anat[0] < 0) if hemisphere == "left" else (anat[0] > 0)  # the tract does not cross above the pyramids
    weight = np.where(near[box] & same_side, np.exp(-0.5 * (dist / radius_mm) ** 2), 0.0).astype(np.float32)
    if tissues.gliosis is None:
        tissues.gliosis = np.zeros(tissues.shape, dtype=np.float32)
    wm = tissues.wm[box]
    changed = severity * weight * wm
    lost = changed / 3.0
    tissues.wm[box] = wm - changed
    tissues.gliosis[box] = tissues.gliosis[box] + changed - lost
    tissues.csf[box] = tissues.csf[box] + lost
    out = np.zeros(tissues.shape, dtype=np.float32)
    out[box] = weight
    return out


def thin_cortex_near(tissues: SubjectTissues, lesion_mask: np.ndarray, reach_mm: float, strength: float) -> None:
    """Cortical thinning around a lesion (in place): within ``reach_mm`` of the mask, on its side of the
    midline, a fraction ``strength`` (fading linearly with distance) of the grey matter that borders
    CSF becomes CSF."""
    if strength <= 0 or reach_mm <= 0 or not lesion_mask.any():
        return
    spacing = np.asarray(tissues.spacing_mm)
    box = _bounding_box(lesion_mask, int(np.ceil(reach_mm / spacing.min())) + 1)
    dist = ndimage.distance_transform_edt(~lesion_mask[box], sampling=spacing)
    fade = np.clip(1.0 - dist / reach_mm, 0.0, 1.0) * (dist > 0)
    side = np.sign(tissues.anat_mm[0][lesion_mask].mean())
    fade *= (np.sign(tissues.anat_mm[0][box]) == side)
    csf_near = ndimage.maximum_filter(tissues.csf[box], size=3) > 0.3
    gain = np.where(csf_near, strength * fade * tissues.gm[box], 0.0).astype(np.float32)
    _move_to_csf(tissues, box, gain)
