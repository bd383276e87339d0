"""Synthetic ATLAS v2.0-like adult cohort on the MNI152 2009a grid.

Each subject ``i`` (0-based) draws everything from its own generator
``numpy.random.default_rng([seed, 0, i])``, so subject ``i`` is the same whatever the cohort
size. Subjects are spread over ``N_SITES`` sites in turn: subject ``i`` is at site
``i % N_SITES + 1`` with number ``i // N_SITES + 1`` there (``r001s001``, ``r002s001``, ...);
each site has its own contrast, drawn from ``default_rng([seed, 2, site])``.

Per subject: a new brain (template warped by a random affine and a smooth displacement
field), a lesion plan (:func:`~lesionlib.synth.lesions.sample_adult_lesion_plan`) grown in
that brain, ex-vacuo CSF enlargement next to the lesion, then the T1 synthesis of
:mod:`lesionlib.synth.contrast`. Output: ATLAS v2.0 file names (:mod:`lesionlib.bids`),
images float32 and masks uint8 {0, 1} on the MNI grid (sform/qform code 4), plus a
``participants.tsv`` with site, lesion volume (mL), number of lesions, posterior-fossa flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from lesionlib import bids
from lesionlib.synth import cohort_files, contrast, deform, lesions
from lesionlib.space import mni_grid, mni_volumes

log = logging.getLogger(__name__)

__all__ = ["N_SITES", "AdultSubject", "adult_subject_label", "synthesize_adult_subject", "generate_adult_cohort",
           "ADULT_TABLE_COLUMNS"]

N_SITES = 6
ADULT_STREAM, CHILD_STREAM, SITE_STREAM = 0, 1, 2
ADULT_TABLE_COLUMNS = ("participant_id", "subject", "site", "lesion_volume_ml", "target_volume_ml",
                       "n_lesions", "n_components", "posterior_fossa", "territory", "hemisphere",
                       "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "brain_volume_ml")


def adult_subject_label(index: int) -> str:
    """ATLAS label of subject ``index`` (0-based): site ``index % 6 + 1``, number ``index // 6 + 1``."""
    return bids.atlas_subject(index % N_SITES + 1, index // N_SITES + 1)


def site_contrast(seed: int, site_index: int) -> contrast.Contrast:
    """The contrast of ATLAS-like site ``site_index`` (1-based)."""
    return contrast.sample_site_contrast(np.random.default_rng([seed, SITE_STREAM, site_index]))


@dataclass
class AdultSubject:
    """One synthesised adult: image (float32) and mask (uint8) on the MNI grid, plus metadata."""

    subject: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    info: dict[str, Any]
    tissues: deform.SubjectTissues


def synthesize_adult_subject(index: int, seed: int = 0, resolution_mm: float = 1.0) -> AdultSubject:
    """Build subject ``index`` of the adult cohort in memory (nothing is written).

    Returns arrays of shape :func:`lesionlib.space.mni_grid` ``(resolution_mm)[0]``.
    """
    rng = np.random.default_rng([seed, ADULT_STREAM, index])
    subject = adult_subject_label(index)
    site = bids.atlas_site_of(subject)
    templates = mni_volumes(float(resolution_mm))
    shape, affine = mni_grid(resolution_mm)

    forward = deform.random_affine(rng, max_rotation_deg=3.0, scale=1.0, scale_sd=0.03, max_translation_mm=2.0)
    displacement = float(rng.uniform(1.5, 3.5)) * deform.smooth_random_field(
        shape, resolution_mm, float(rng.uniform(14.0, 22.0)), rng, n_fields=3)
    anat = deform.deformation_coordinates(shape, affine, forward, displacement)
    del displacement
    tissues = deform.sample_templates(templates, anat, affine)

    plan = lesions.sample_adult_lesion_plan(rng)
    grown = lesions.grow_plan(tissues, plan, rng)
    mask = np.zeros(shape, dtype=bool)
    for lesion in grown:
        mask |= lesion.mask
    radius_mm = (3.0 * plan.total_volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    lesions.paint_lesions(tissues, mask, rim_mm=float(rng.uniform(1.5, 3.0)),
                          ex_vacuo_mm=float(np.clip(0.3 * radius_mm, 0.0, 8.0)))

    site_index = index % N_SITES + 1
    site_params = site_contrast(seed, site_index)
    clean = contrast.clean_t1(tissues, site_params, rng)
    image = contrast.acquire(clean, tissues.brain, tissues.spacing_mm, site_params, rng)

    voxel_ml = tissues.voxel_volume_ml
    idx = np.argwhere(mask)
    centroid = affine[:3, :3] @ idx.mean(axis=0) + affine[:3, 3]
    n_components = int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
    info = {
        "participant_id": f"sub-{subject}",
        "subject": subject,
        "site": site,
        "lesion_volume_ml": float(mask.sum() * voxel_ml),
        "target_volume_ml": plan.total_volume_ml,
        "n_lesions": len(plan.lesions),
        "n_components": n_components,
        "posterior_fossa": lesions.is_posterior_fossa(centroid),
        "territory": plan.lesions[0].territory,
        "hemisphere": plan.lesions[0].hemisphere,
        "centroid_x_mm": float(centroid[0]),
        "centroid_y_mm": float(centroid[1]),
        "centroid_z_mm": float(centroid[2]),
        "brain_volume_ml": float(tissues.brain.sum() * voxel_ml),
    }
    return AdultSubject(subject=subject, image=image, mask=mask.astype(np.uint8), affine=affine, info=info,
                        tissues=tissues)


def adult_cohort_paths(root: Path, n_subjects: int) -> list[Path]:
    """T1w paths of an adult cohort of ``n_subjects`` under ``root`` (ATLAS v2.0 names)."""
    return [bids.atlas_t1w_path(Path(root), adult_subject_label(i)) for i in range(n_subjects)]


def generate_adult_cohort(root: Path, n_subjects: int, resolution_mm: float = 1.0, seed: int = 0,
                          progress: bool = True, *, force: bool = False) -> list[Path]:
    """Write an ATLAS v2.0-like synthetic cohort under ``root`` and return its T1w paths.

    Layout: ``root/Training/R00S/sub-r00Ssnnn/ses-1/anat/`` with the ATLAS T1w and lesion-mask
    names, ``root/dataset_description.json`` (``"Synthetic": true``, generator version, seed,
    parameters) and ``root/participants.tsv`` (:data:`ADULT_TABLE_COLUMNS`).

    Idempotent: if ``root`` already holds this exact cohort (same parameters and generator
    version) nothing is done unless ``force``. Otherwise the cohort is built in a staging
    folder and renamed onto ``root`` at the end.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    root = Path(root)
    params = cohort_files.generator_parameters("adult", n_subjects=int(n_subjects),
                                               resolution_mm=float(resolution_mm), seed=int(seed),
                                               n_sites=N_SITES)
    paths = adult_cohort_paths(root, n_subjects)
    expected = paths + [bids.atlas_mask_path(root, adult_subject_label(i)) for i in range(n_subjects)]
    if not force and cohort_files.cohort_is_current(root, params, expected):
        log.info("adult cohort at %s is up to date (%d subjects, %.3g mm, seed %d): skipped",
                 root, n_subjects, resolution_mm, seed)
        return paths
    log.info("generating %d synthetic adult subjects at %.3g mm (seed %d) into %s",
             n_subjects, resolution_mm, seed, root)
    rows = []
    with cohort_files.staged_cohort(root) as staging:
        for i in tqdm(range(n_subjects), desc="adult cohort", unit="subject", disable=not progress):
            subj = synthesize_adult_subject(i, seed=seed, resolution_mm=resolution_mm)
            cohort_files.save_volume(subj.image, subj.affine, bids.atlas_t1w_path(staging, subj.subject),
                                     xform_code=4)
            cohort_files.save_volume(subj.mask, subj.affine, bids.atlas_mask_path(staging, subj.subject),
                                     xform_code=4)
            rows.append(subj.info)
        cohort_files.write_tsv_atomic(staging / "participants.tsv", rows, ADULT_TABLE_COLUMNS)
        cohort_files.write_dataset_description(
            staging, "lesionlib synthetic ATLAS v2.0-like adult cohort", params,
            "Adult T1w images with chronic-stroke-like lesions synthesised from the MNI152 2009a tissue "
            "templates (nilearn): random non-linear deformation, per-site contrast, bias field and Rician "
            "noise; lesion volumes follow ATLAS v2.0 (0.01-470 mL, median ~5 mL, mean ~27 mL).")
    log.info("adult cohort written to %s", root)
    return paths
