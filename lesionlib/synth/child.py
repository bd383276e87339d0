"""Synthetic CAP-like paediatric cohort: perinatal stroke, two sessions 90 days apart, native space.

Each child ``i`` (0-based, subject label ``f"{i+1:02d}"``) draws from
``numpy.random.default_rng([seed, 1, i])``; session ``s`` adds its own acquisition generator
``default_rng([seed, 1, i, s])``. One child's anatomy is built once, in an isotropic RAS
working grid (the MNI grid at ``resolution_mm``):

* **brain**: the template scaled to the brain volume expected at that age relative to an adult
  (0.72 at 12 months, 0.83 at 24 months, Knickmeyer et al. 2008; about 0.89 at 48 months;
  :func:`lesionlib.synth.realism.expected_child_brain_fraction`) with 7% between-child spread,
  reshaped (relatively shorter and rounder) and warped by a multi-scale random displacement
  (correlation 45, 22 and 10 mm; several times the adults' single-scale warp), so that an affine
  registration to the template leaves real shape differences; the lesioned hemisphere is
  atrophic (compressed towards the midline by 3-11%); both lateral ventricles are mildly widened
  (more at younger ages);
* **lesion**: one large territorial (mostly MCA) infarct of 2.5-172 mL (sometimes with a small
  satellite), lobulated; half of those over 15 mL reach the lateral ventricle (porencephalic
  cavity). The tissue is *mixed*: cystic encephalomalacia (CSF-like), gliosis and partially spared
  tissue in patches (:func:`lesionlib.synth.lesions.paint_lesions` with heterogeneity and spared
  tissue), an enlarged ipsilateral ventricle, cortical thinning around the lesion and, after
  MCA/ACA infarcts, Wallerian degeneration of the ipsilateral corticospinal tract (capsule,
  peduncle, pons);
* **contrast**: weaker WM/GM and brighter CSF than adults, with darker late-myelinating
  frontal and temporal white matter (:func:`lesionlib.synth.contrast.child_contrast`);
* **head**: whole-head scan (:mod:`lesionlib.synth.head`): wide extra-axial CSF (narrowing with
  age), thin skull with dark red-marrow diploë, thin scalp; no defacing.

Each session is a separate scan of that anatomy in scanner space: an axis-aligned grid in
LPS orientation (voxel axes point Left, Posterior, Superior) with anisotropic voxels
``resolution_mm * (1, 1, 1.2)`` mm, a head pose (session 1: up to 5 degrees / 5 mm; session 2
adds a rigid motion of up to 3 degrees / 3 mm), and its own bias field and noise. The true
mask of each session is the working-space lesion resampled through the same pose
(trilinear, threshold 0.5). The affine written is the scan grid's (qform = sform, code 1).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from lesionlib import bids
from lesionlib.synth import cohort_files, contrast, deform, head, lesions, realism
from lesionlib.synth.adult import CHILD_STREAM
from lesionlib.space import mni_grid, mni_volumes

log = logging.getLogger(__name__)

__all__ = ["CHILD_SITES", "NATIVE_FOV_MM", "NATIVE_SPACING_FACTORS", "SESSION_INTERVAL_DAYS", "ChildSession",
           "Child", "child_subject_label", "native_grid", "synthesize_child", "generate_child_cohort"]

CHILD_SITES = ("C01", "C02")
NATIVE_FOV_MM = (176.0, 208.0, 168.0)
NATIVE_SPACING_FACTORS = (1.0, 1.0, 1.2)
SESSION_INTERVAL_DAYS = 90
AGE_RANGE_MONTHS = (12.0, 48.0)
PARTICIPANT_COLUMNS = ("participant_id", "age_months", "sex", "site", "lesion_hemisphere", "lesion_territory",
                       "lesion_volume_ml", "porencephalic", "brain_volume_ml", "wm_gm_ratio", "csf_wm_ratio",
                       "nonlinear_residual_mm")
CHILD_DEFORMATION_SCALES_MM = (45.0, 22.0, 10.0)
"""Correlation lengths (mm) of the children's three displacement components (coarse to fine)."""


def child_subject_label(index: int) -> str:
    """BIDS label of child ``index`` (0-based): ``'01'``, ``'02'``, ..."""
    return f"{index + 1:02d}"


def native_grid(resolution_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a child scan: LPS, voxels ``resolution_mm * (1, 1, 1.2)`` mm, centred on 0.

    The affine maps voxel (i, j, k) to scanner mm (RAS+): x decreases with i (towards the
    left), y decreases with j (posterior), z increases with k (superior).
    """
    spacing = np.asarray(NATIVE_SPACING_FACTORS) * resolution_mm
    shape = tuple(int(np.ceil(f / s)) for f, s in zip(NATIVE_FOV_MM, spacing))
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return shape, affine  # type: ignore[return-value]


def _pose(rotation_deg: np.ndarray, translation_mm: np.ndarray) -> np.ndarray:
    """Rigid 4x4 mapping working-space mm to scanner mm: brain centre -> translation."""
    rot = deform.rotation_matrix(rotation_deg)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = translation_mm - rot @ deform.BRAIN_CENTRE_MM
    return out


@dataclass
class ChildSession:
    """One scan: image (float32), true mask (uint8) and affine (LPS, anisotropic) of the native grid."""

    session: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    pose: np.ndarray
    """Rigid 4x4 from working-space mm to this scan's scanner mm."""
    acq_time: str
    age_months: float
    brain: np.ndarray | None = None
    """Brain fraction resampled on the native grid (float32), for measurements; not written."""


@dataclass
class Child:
    """One synthesised child: both sessions, the working-grid anatomy and lesion, and metadata."""

    subject: str
    age_months: float
    sex: str
    site: str
    sessions: list[ChildSession]
    info: dict[str, Any]
    tissues: deform.SubjectTissues
    lesion_mask: np.ndarray
    """Lesion on the working grid (bool)."""
    extra: dict[str, Any] = field(default_factory=dict)


@deform.single_threaded
def synthesize_child(index: int, seed: int = 0, resolution_mm: float = 1.0) -> Child:
    """Build child ``index`` with both sessions in memory (nothing is written)."""
    rng = np.random.default_rng([seed, CHILD_STREAM, index])
    subject = child_subject_label(index)
    age = float(np.round(rng.uniform(*AGE_RANGE_MONTHS), 1))
    sex = "F" if rng.random() < 0.45 else "M"
    site = CHILD_SITES[index % len(CHILD_SITES)]
    plan = lesions.sample_child_lesion_plan(rng)
    spec = plan.lesions[0]
    tissues, anat, volume_fraction, atrophy = _child_anatomy(age, spec, rng, float(resolution_mm))
    lesion_mask, wallerian = _child_lesions(tissues, plan, rng)
    params = contrast.child_contrast(age, rng)
    brain = tissues.brain
    layers = head.head_layers(anat, brain, head.sample_child_head(age, rng), rng, float(resolution_mm),
                              tissues.spacing_mm)
    clean = contrast.clean_t1(tissues, params, rng, head=layers)
    foreground = brain + layers.occupancy
    del layers
    sessions = _scan_sessions(clean, foreground, brain, lesion_mask, params, age, rng, (seed, index),
                              float(resolution_mm))
    voxel_ml = float(abs(np.linalg.det(sessions[0].affine[:3, :3]))) / 1000.0
    ratios = realism.contrast_ratios(sessions[0].image, sessions[0].brain > 0.5, seed=index)
    info = {
        "participant_id": f"sub-{subject}",
        "age_months": age,
        "sex": sex,
        "site": site,
        "lesion_hemisphere": spec.hemisphere,
        "lesion_territory": spec.territory,
        "lesion_volume_ml": float(sessions[0].mask.sum() * voxel_ml),
        "porencephalic": bool(spec.toward_ventricle > 0),
        "brain_volume_ml": float(brain.sum() * tissues.voxel_volume_ml),
        "wm_gm_ratio": ratios["wm_gm_ratio"],
        "csf_wm_ratio": ratios["csf_wm_ratio"],
        "nonlinear_residual_mm": realism.nonlinear_residual_mm(tissues),
    }
    return Child(subject=subject, age_months=age, sex=sex, site=site, sessions=sessions, info=info,
                 tissues=tissues, lesion_mask=lesion_mask,
                 extra={"contrast": params.as_dict(), "target_volume_ml": plan.total_volume_ml,
                        "brain_volume_fraction": volume_fraction, "atrophy": atrophy, "wallerian": wallerian,
                        "n_lesions": len(plan.lesions)})


def _child_anatomy(age: float, spec: lesions.LesionSpec, rng: np.random.Generator, resolution_mm: float
                   ) -> tuple[deform.SubjectTissues, np.ndarray, float, float]:
    """A child's brain on the working grid: age-scaled, reshaped, warped at three scales, atrophic on the
    lesion's side, its volume matched to the drawn fraction; returns (tissues, template coordinates,
    brain volume fraction, atrophy)."""
    templates = mni_volumes(resolution_mm)
    shape, affine = mni_grid(resolution_mm)
    volume_fraction = float(np.clip(realism.expected_child_brain_fraction(age) * (1 + 0.07 * rng.standard_normal()),
                                    0.6, 1.0))
    reshape = np.array([1.03, 0.95, 1.02]) * (1.0 + 0.04 * rng.standard_normal(3))
    reshape /= np.prod(reshape) ** (1.0 / 3.0)
    forward = deform.random_affine(rng, max_rotation_deg=4.0, scale=volume_fraction ** (1.0 / 3.0) * reshape,
                                   max_translation_mm=2.0)
    amplitudes = (float(rng.uniform(4.0, 7.0)), float(rng.uniform(2.5, 4.5)), float(rng.uniform(1.0, 2.0)))
    displacement = deform.multiscale_displacement(shape, resolution_mm,
                                                  tuple(zip(CHILD_DEFORMATION_SCALES_MM, amplitudes)), rng)
    anat = deform.deformation_coordinates(shape, affine, forward, displacement)
    del displacement
    atrophy = 0.03 + 0.08 * spec.volume_ml / lesions.CHILD_VOLUME_RANGE_ML[1]
    side = -1.0 if spec.hemisphere == "left" else 1.0
    anat[0] *= 1.0 + atrophy / (1.0 + np.exp(-side * anat[0] / 4.0))  # ipsilateral hemisphere shrinks
    # the large warps change the brain volume by up to ~15%: rescale so the volume is the drawn one
    anat = deform.match_brain_volume(templates, anat, affine, volume_fraction * float(templates.brain.sum())
                                     * deform.voxel_volume_ml(templates.affine))
    tissues = deform.sample_templates(templates, anat, affine)
    youth = float(np.clip((48.0 - age) / 36.0, 0.0, 1.0))
    lesions.enlarge_ventricles(tissues, "both", float(rng.uniform(0.5, 1.5)) * (0.5 + 0.5 * youth))
    return tissues, anat, volume_fraction, atrophy


def _child_lesions(tissues: deform.SubjectTissues, plan: lesions.LesionPlan, rng: np.random.Generator
                   ) -> tuple[np.ndarray, float]:
    """Grow the plan's lesions and paint them (mixed signal, enlarged ventricle, thinned cortex, Wallerian
    degeneration); returns the lesion mask on the working grid and the degeneration strength."""
    spec = plan.lesions[0]
    grown = lesions.grow_plan(tissues, plan, rng)
    lesion_mask = np.zeros(tissues.shape, dtype=bool)
    for lesion in grown:
        lesion_mask |= lesion.mask
    lesions.enlarge_ventricles(tissues, spec.hemisphere,
                               2.0 + 6.0 * spec.volume_ml / lesions.CHILD_VOLUME_RANGE_ML[1])
    lesions.paint_lesions(tissues, lesion_mask, rng, rim_mm=float(rng.uniform(1.0, 2.0)),
                          heterogeneity=float(rng.uniform(0.4, 0.8)), spared_fraction=float(rng.uniform(0.05, 0.3)))
    lesions.thin_cortex_near(tissues, lesion_mask, reach_mm=15.0, strength=float(rng.uniform(0.2, 0.5)))
    wallerian = 0.0
    if spec.territory in ("mca", "aca"):
        wallerian = float(np.clip(0.15 + 0.7 * spec.volume_ml / lesions.CHILD_VOLUME_RANGE_ML[1], 0.0, 0.8))
        lesions.degenerate_corticospinal_tract(tissues, spec.hemisphere, wallerian)
    return lesion_mask, wallerian


def _scan_sessions(clean: np.ndarray, foreground: np.ndarray, brain: np.ndarray, lesion_mask: np.ndarray,
                   params: contrast.Contrast, age: float, rng: np.random.Generator, stream: tuple[int, int],
                   resolution_mm: float) -> list[ChildSession]:
    """The two scans of a child in scanner space: head poses (session 2 = session 1 + a rigid motion),
    acquisition (own bias field and noise, generator ``default_rng([seed, 1, index, s])``), true masks."""
    seed, index = stream
    _, affine = mni_grid(resolution_mm)
    lesion_float = lesion_mask.astype(np.float32)
    pose1 = _pose(rng.uniform(-5.0, 5.0, 3), rng.uniform(-5.0, 5.0, 3))
    motion = _pose(rng.uniform(-3.0, 3.0, 3), rng.uniform(-3.0, 3.0, 3)) @ np.linalg.inv(_pose(np.zeros(3),
                                                                                                np.zeros(3)))
    pose2 = motion @ pose1
    first_scan = dt.datetime(2021, 1, 4, 9, 0) + dt.timedelta(days=int(rng.integers(0, 730)),
                                                             minutes=int(rng.integers(0, 8 * 60)))
    native_shape, native_affine = native_grid(resolution_mm)
    spacing = tuple(float(v) for v in np.sqrt((native_affine[:3, :3] ** 2).sum(axis=0)))
    sessions = []
    for s, pose in enumerate((pose1, pose2), start=1):
        # native voxel -> scanner mm -> working mm -> working voxel
        to_working = np.linalg.inv(affine) @ np.linalg.inv(pose) @ native_affine

        def resample(a: np.ndarray) -> np.ndarray:
            return ndimage.affine_transform(a, to_working[:3, :3], offset=to_working[:3, 3],
                                            output_shape=native_shape, order=1, mode="constant", cval=0.0,
                                            output=np.float32)

        srng = np.random.default_rng([seed, CHILD_STREAM, index, s])
        image = contrast.acquire(resample(clean), resample(foreground), spacing, params, srng)
        mask = (resample(lesion_float) > 0.5).astype(np.uint8)
        when = first_scan + dt.timedelta(days=SESSION_INTERVAL_DAYS * (s - 1))
        sessions.append(ChildSession(
            session=str(s), image=image, mask=mask, affine=native_affine.copy(), pose=pose,
            acq_time=when.strftime("%Y-%m-%dT%H:%M:%S"),
            age_months=round(age + (s - 1) * SESSION_INTERVAL_DAYS / 30.4375, 1), brain=resample(brain)))
    return sessions


def child_cohort_paths(root: Path, n_children: int) -> list[Path]:
    """T1w paths (both sessions, child by child) of a cohort of ``n_children`` under ``root``."""
    return [bids.child_t1w_path(Path(root), child_subject_label(i), s) for i in range(n_children) for s in ("1", "2")]


def generate_child_cohort(root: Path, n_children: int = 20, resolution_mm: float = 1.0, seed: int = 0,
                          progress: bool = True, *, force: bool = False) -> list[Path]:
    """Write the synthetic paediatric BIDS cohort under ``root``; return the T1w paths (2 per child).

    Layout: ``sub-XX/ses-{1,2}/anat/sub-XX_ses-N_T1w.nii.gz``, masks under
    ``derivatives/lesion_masks/`` (:func:`lesionlib.bids.child_mask_path`, both sessions),
    ``participants.tsv`` (participant_id, age_months, sex, site, lesion details),
    ``sub-XX/sub-XX_sessions.tsv`` and per-session ``*_scans.tsv`` with acquisition times
    90 days apart, and ``dataset_description.json`` files (root and derivative).
    Idempotent and staged like :func:`lesionlib.synth.generate_adult_cohort`.
    """
    if n_children < 1:
        raise ValueError(f"n_children must be >= 1, got {n_children}")
    root = Path(root)
    params = cohort_files.generator_parameters("child", n_children=int(n_children),
                                               resolution_mm=float(resolution_mm), seed=int(seed),
                                               spacing_factors=list(NATIVE_SPACING_FACTORS),
                                               session_interval_days=SESSION_INTERVAL_DAYS)
    paths = child_cohort_paths(root, n_children)
    expected = paths + [bids.child_mask_path(root, child_subject_label(i), s)
                        for i in range(n_children) for s in ("1", "2")]
    if not force and cohort_files.cohort_is_current(root, params, expected):
        log.info("child cohort at %s is up to date (%d children, %.3g mm, seed %d): skipped",
                 root, n_children, resolution_mm, seed)
        return paths
    log.info("generating %d synthetic children (2 sessions) at %.3g mm (seed %d) into %s",
             n_children, resolution_mm, seed, root)
    rows = []
    with cohort_files.staged_cohort(root) as staging:
        for i in tqdm(range(n_children), desc="child cohort", unit="child", disable=not progress):
            child = synthesize_child(i, seed=seed, resolution_mm=resolution_mm)
            sub = child.subject
            for ses in child.sessions:
                t1w = bids.child_t1w_path(staging, sub, ses.session)
                cohort_files.save_volume(ses.image, ses.affine, t1w, xform_code=1)
                cohort_files.save_volume(ses.mask, ses.affine, bids.child_mask_path(staging, sub, ses.session),
                                         xform_code=1)
                cohort_files.write_tsv_atomic(
                    t1w.parent.parent / f"sub-{sub}_ses-{ses.session}_scans.tsv",
                    [{"filename": f"anat/{t1w.name}", "acq_time": ses.acq_time}], ("filename", "acq_time"))
            cohort_files.write_tsv_atomic(
                staging / f"sub-{sub}" / f"sub-{sub}_sessions.tsv",
                [{"session_id": f"ses-{s.session}", "acq_time": s.acq_time, "age_months": s.age_months}
                 for s in child.sessions], ("session_id", "acq_time", "age_months"))
            rows.append(child.info)
        cohort_files.write_tsv_atomic(staging / "participants.tsv", rows, PARTICIPANT_COLUMNS)
        cohort_files.write_dataset_description(
            staging / "derivatives" / bids.CHILD_MASK_DERIVATIVE, "lesionlib synthetic child lesion masks",
            params, "True lesion masks of the synthetic child cohort, one per session (native space).",
            dataset_type="derivative")
        cohort_files.write_dataset_description(
            staging, "lesionlib synthetic CAP-like paediatric cohort", params,
            "Children aged 12-48 months with perinatal-stroke lesions (mixed-signal, sometimes porencephalic, "
            "with Wallerian degeneration), two whole-head T1w sessions 90 days apart in native scanner space "
            "(LPS, anisotropic voxels), synthesised from the MNI152 2009a templates (nilearn) with age-scaled, "
            "multi-scale-warped brains, wide extra-axial CSF, immature contrast and rigid motion between sessions.")
    log.info("child cohort written to %s", root)
    return paths
