"""Synthetic ATLAS v2.0-like adult cohort on the MNI152 2009a grid.

Each subject ``i`` (0-based) draws everything from its own generator
``numpy.random.default_rng([seed, 0, i])``, so subject ``i`` is the same whatever the cohort
size. Subjects are spread over ``N_SITES`` sites in turn: subject ``i`` is at site
``i % N_SITES + 1`` with number ``i // N_SITES + 1`` there (``r001s001``, ``r002s001``, ...);
each site has its own contrast, drawn from ``default_rng([seed, 2, site])``.

Per subject: a new brain (template warped by a random affine and a smooth displacement
field), a lesion plan (:func:`~lesionlib.synth.lesions.sample_adult_lesion_plan`: irregular,
mostly multi-focal lesions) grown in that brain, ex-vacuo CSF enlargement next to the lesion,
the head around the brain (:mod:`lesionlib.synth.head`: extra-axial CSF, skull, scalp), the T1
synthesis of :mod:`lesionlib.synth.contrast`, then defacing (the face region set to 0), as
ATLAS v2.0's whole-head, defaced images. Whether the main lesion lies in the posterior fossa
and how many extra lesions a plan has are stratified over subject indices
(:func:`posterior_fossa_subject`, :func:`lesion_count_quantile`), so every cohort, small ones
too, has the target shares. Output: ATLAS v2.0 file names (:mod:`lesionlib.bids`), images
float32 and masks uint8 {0, 1} (brain only) on the MNI grid (sform/qform code 4), plus a
``participants.tsv`` with site, lesion volume (mL), number of lesions and components, sphericity,
posterior-fossa flag, brain volume and the image's WM/GM and CSF/WM class-mean ratios.
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
from lesionlib.synth import cohort_files, contrast, deform, head, lesions, realism
from lesionlib.space import mni_grid, mni_volumes

log = logging.getLogger(__name__)

__all__ = ["N_SITES", "AdultSubject", "adult_subject_label", "synthesize_adult_subject", "generate_adult_cohort",
           "ADULT_TABLE_COLUMNS", "posterior_fossa_subject", "lesion_count_quantile", "adult_lesion_plan"]

N_SITES = 6
ADULT_STREAM, CHILD_STREAM, SITE_STREAM, STRATA_STREAM = 0, 1, 2, 3
ADULT_TABLE_COLUMNS = ("participant_id", "subject", "site", "lesion_volume_ml", "target_volume_ml",
                       "n_lesions", "n_components", "sphericity", "posterior_fossa", "territory", "hemisphere",
                       "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "brain_volume_ml", "wm_gm_ratio",
                       "csf_wm_ratio", "nonlinear_residual_mm")
_GOLDEN = (5.0**0.5 - 1.0) / 2.0
_SILVER = 2.0**0.5 - 1.0


def adult_subject_label(index: int) -> str:
    """ATLAS label of subject ``index`` (0-based): site ``index % 6 + 1``, number ``index // 6 + 1``."""
    return bids.atlas_subject(index % N_SITES + 1, index // N_SITES + 1)


def posterior_fossa_subject(seed: int, index: int, share: float = lesions.ADULT_POSTERIOR_FOSSA_SHARE) -> bool:
    """Whether subject ``index``'s main lesion is infratentorial: ``frac(u + index * phi) < share``.

    ``phi`` is the golden ratio's fractional part and ``u`` a per-seed offset
    (``default_rng([seed, 3])``): a low-discrepancy sequence, so any ``n`` consecutive subjects
    hold ``share * n`` posterior-fossa plans up to about one, and subject ``i`` does not depend on
    the cohort size.
    """
    offset = float(np.random.default_rng([seed, STRATA_STREAM]).random())
    return bool((offset + index * _GOLDEN) % 1.0 < share)


def lesion_count_quantile(seed: int, index: int) -> float:
    """Quantile (in [0, 1)) that sets subject ``index``'s number of extra lesions:
    ``frac(u + index * (sqrt(2) - 1))``, a low-discrepancy sequence independent of
    :func:`posterior_fossa_subject`'s (per-seed offset ``u`` from ``default_rng([seed, 3, 1])``)."""
    offset = float(np.random.default_rng([seed, STRATA_STREAM, 1]).random())
    return float((offset + index * _SILVER) % 1.0)


def adult_lesion_plan(seed: int, index: int, rng: np.random.Generator) -> lesions.LesionPlan:
    """Subject ``index``'s lesion plan, with the stratified location and lesion count."""
    return lesions.sample_adult_lesion_plan(rng, posterior_fossa=posterior_fossa_subject(seed, index),
                                            count_quantile=lesion_count_quantile(seed, index))


def site_contrast(seed: int, site_index: int) -> contrast.Contrast:
    """The contrast of ATLAS-like site ``site_index`` (1-based)."""
    return contrast.sample_site_contrast(np.random.default_rng([seed, SITE_STREAM, site_index]))


@dataclass
class AdultSubject:
    """One synthesised adult: image (float32) and mask (uint8) on the MNI grid, plus metadata.

    ``foreground`` is the fraction of each voxel inside the head (brain + head layers, float32);
    ``defaced`` the voxels zeroed by defacing (bool). Neither is written to disk.
    """

    subject: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    info: dict[str, Any]
    tissues: deform.SubjectTissues
    foreground: np.ndarray | None = None
    defaced: np.ndarray | None = None


@deform.single_threaded
def synthesize_adult_subject(index: int, seed: int = 0, resolution_mm: float = 1.0) -> AdultSubject:
    """Build subject ``index`` of the adult cohort in memory (nothing is written).

    Returns arrays of shape :func:`lesionlib.space.mni_grid` ``(resolution_mm)[0]``.
    """
    rng = np.random.default_rng([seed, ADULT_STREAM, index])
    plan = adult_lesion_plan(seed, index, rng)  # first: the same plan at every resolution
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

    grown = lesions.grow_plan(tissues, plan, rng)
    mask = np.zeros(shape, dtype=bool)
    for lesion in grown:
        mask |= lesion.mask
    radius_mm = (3.0 * plan.total_volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    lesions.paint_lesions(tissues, mask, rng, rim_mm=float(rng.uniform(1.5, 3.0)),
                          ex_vacuo_mm=float(np.clip(0.3 * radius_mm, 0.0, 8.0)),
                          heterogeneity=float(rng.uniform(0.1, 0.4)), spared_fraction=float(rng.uniform(0.0, 0.15)))

    site_index = index % N_SITES + 1
    site_params = site_contrast(seed, site_index)
    brain = tissues.brain
    layers = head.head_layers(anat, brain, head.sample_adult_head(rng), rng, float(resolution_mm), tissues.spacing_mm)
    clean = contrast.clean_t1(tissues, site_params, rng, head=layers)
    foreground = brain + layers.occupancy
    image = contrast.acquire(clean, foreground, tissues.spacing_mm, site_params, rng)
    defaced = head.deface_mask(anat, layers.distance_mm, brain)
    image[defaced] = 0.0
    del clean, layers

    voxel_ml = tissues.voxel_volume_ml
    idx = np.argwhere(mask)
    centroid = affine[:3, :3] @ idx.mean(axis=0) + affine[:3, 3]
    n_components = int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
    ratios = realism.contrast_ratios(image, brain > 0.5, seed=index)
    info = {
        "participant_id": f"sub-{subject}",
        "subject": subject,
        "site": site,
        "lesion_volume_ml": float(mask.sum() * voxel_ml),
        "target_volume_ml": plan.total_volume_ml,
        "n_lesions": len(plan.lesions),
        "n_components": n_components,
        "sphericity": realism.sphericity(mask),
        "posterior_fossa": lesions.is_posterior_fossa(centroid),
        "territory": plan.lesions[0].territory,
        "hemisphere": plan.lesions[0].hemisphere,
        "centroid_x_mm": float(centroid[0]),
        "centroid_y_mm": float(centroid[1]),
        "centroid_z_mm": float(centroid[2]),
        "brain_volume_ml": float(brain.sum() * voxel_ml),
        "wm_gm_ratio": ratios["wm_gm_ratio"],
        "csf_wm_ratio": ratios["csf_wm_ratio"],
        "nonlinear_residual_mm": realism.nonlinear_residual_mm(tissues),
    }
    return AdultSubject(subject=subject, image=image, mask=mask.astype(np.uint8), affine=affine, info=info,
                        tissues=tissues, foreground=foreground, defaced=defaced)


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
            "Whole-head, defaced adult T1w images with chronic-stroke-like lesions synthesised from the MNI152 "
            "2009a tissue templates (nilearn): random non-linear deformation, irregular multi-focal lesions, "
            "head layers (extra-axial CSF, skull, scalp), per-site contrast, bias field and Rician noise; "
            "lesion volumes follow ATLAS v2.0 (0.01-470 mL, median ~5 mL, mean ~27 mL).")
    log.info("adult cohort written to %s", root)
    return paths
