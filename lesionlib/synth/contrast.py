"""From tissue fractions to a T1-weighted image: site contrast, texture, bias field and noise.

The noiseless image is a partial-volume mixture of pure-tissue intensities,
``T1 = scale * (gm*I_gm + wm*I_wm(x) + csf*I_csf + gliosis*I_gliosis) * texture``, with WM set
to 1 before scaling. Reference values from the MNI152 2009a template (pure-tissue voxels):
WM/GM 1.34, CSF/WM 0.33. Sites (ATLAS pools 33 cohorts) differ in WM/GM ratio, CSF/WM
ratio, global scale, noise and bias-field strength.

Children (12-48 months) have weaker contrast: the class-mean WM/GM ratio measured on real
scans is 1.11-1.15 at 9-11 months, 1.16-1.19 at 19-23 months against 1.24 for the adult
template (``/work/shared/NOTES.md``), i.e. 55-90% of the adult WM-GM gap. Late-myelinating
frontal and temporal white matter ("terminal zones") is darker still: there WM intensity
moves a further ``unmyelinated_fraction`` of the way towards GM.

Outside the brain the head (:mod:`lesionlib.synth.head`) adds extra-axial CSF, dark cortical
bone, diploë (fatty, bright marrow in adults; red, darker marrow in young children), bright scalp
fat and intermediate soft tissue, with intensities relative to WM drawn per site / child.

Acquisition adds a smooth multiplicative bias field ``exp(a * field)`` and Rician noise
(magnitude of complex Gaussian noise) inside the head; the background outside the head is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lesionlib.synth.deform import SubjectTissues, smooth_random_field
from lesionlib.synth.head import HeadLayers

__all__ = [
    "Contrast", "sample_site_contrast", "child_contrast", "terminal_zone_weight", "clean_t1", "acquire",
    "child_contrast_fraction", "head_intensities",
]


@dataclass(frozen=True)
class Contrast:
    """Pure-tissue intensities relative to WM (=1) and acquisition settings of one scan/site.

    Attributes
    ----------
    gm, csf, gliosis
        Intensities relative to mature WM.
    scale
        Global intensity scale (arbitrary scanner units).
    noise_sd
        Standard deviation of each Gaussian noise channel, as a fraction of WM intensity.
    bias_amplitude
        Standard deviation of the log bias field (0.1 ~ ±10% slow intensity drift).
    unmyelinated_fraction
        How far terminal-zone WM moves towards GM (0 adults, up to ~0.5 at 12 months).
    bone, marrow, fat, soft_tissue
        Head-layer intensities relative to mature WM: cortical bone, diploic marrow, scalp fat,
        skin/muscle (modelling assumptions for T1w MPRAGE-like contrast).
    """

    gm: float
    csf: float
    gliosis: float
    scale: float
    noise_sd: float
    bias_amplitude: float
    unmyelinated_fraction: float = 0.0
    bone: float = 0.1
    marrow: float = 0.8
    fat: float = 1.25
    soft_tissue: float = 0.55

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def sample_site_contrast(rng: np.random.Generator) -> Contrast:
    """One adult acquisition site: WM/GM 1.25-1.42, CSF/WM 0.25-0.40, its own scale and noise."""
    wm_gm = rng.uniform(1.25, 1.42)
    gm = 1.0 / wm_gm
    csf = rng.uniform(0.25, 0.40)
    return Contrast(
        gm=float(gm),
        csf=float(csf),
        gliosis=float(csf + rng.uniform(0.35, 0.55) * (gm - csf)),
        scale=float(rng.choice([100.0, 250.0, 1000.0]) * rng.uniform(0.8, 1.2)),
        noise_sd=float(rng.uniform(0.015, 0.045)),
        bias_amplitude=float(rng.uniform(0.04, 0.15)),
        bone=float(rng.uniform(0.05, 0.15)),
        marrow=float(rng.uniform(0.65, 1.0)),
        fat=float(rng.uniform(1.1, 1.45)),
        soft_tissue=float(rng.uniform(0.45, 0.65)),
    )


def child_contrast_fraction(age_months: float) -> float:
    """Fraction of the adult WM-GM intensity gap reached at ``age_months`` (0.58 at 12, 0.88 at 48).

    Piecewise linear through the class-mean ratios of NOTES.md: (ratio - 1) / 0.24 is about
    0.58 at 12 months, 0.73 at 21 months, and approaches adult values (~0.88) by 48 months.
    """
    return float(np.interp(age_months, [12.0, 21.0, 48.0], [0.58, 0.73, 0.88]))


def child_contrast(age_months: float, rng: np.random.Generator) -> Contrast:
    """Contrast of a child's scan: weaker WM/GM, brighter CSF relative to WM, immature terminal zones."""
    k = child_contrast_fraction(age_months) * rng.uniform(0.95, 1.05)
    adult_wm_gm = rng.uniform(1.30, 1.38)
    gm = 1.0 / (1.0 + k * (adult_wm_gm - 1.0))
    csf = rng.uniform(0.38, 0.45)  # CSF/WM is higher in children (class means 0.65-0.70 vs 0.57)
    return Contrast(
        gm=float(gm),
        csf=float(csf),
        gliosis=float(csf + rng.uniform(0.35, 0.5) * (gm - csf)),
        scale=float(500.0 * rng.uniform(0.9, 1.1)),
        noise_sd=float(rng.uniform(0.02, 0.04)),
        bias_amplitude=float(rng.uniform(0.05, 0.12)),
        unmyelinated_fraction=float(np.interp(age_months, [12.0, 48.0], [0.5, 0.15])),
        bone=float(rng.uniform(0.05, 0.15)),
        marrow=float(rng.uniform(0.35, 0.55) + np.interp(age_months, [12.0, 48.0], [0.0, 0.15])),
        fat=float(rng.uniform(1.0, 1.3)),
        soft_tissue=float(rng.uniform(0.45, 0.65)),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def terminal_zone_weight(anat_mm: np.ndarray) -> np.ndarray:
    """Soft membership (0-1) of the late-myelinating frontal and temporal white matter.

    ``anat_mm``: template coordinates ``(3, ...)``. Frontal: anterior to y = +10 mm;
    temporal: lateral (|x| > 28 mm), below z = 0 and between y = -45 and +15 mm. Edges are
    logistic with a 4 mm scale, so the myelination front is gradual.
    """
    x, y, z = anat_mm
    frontal = _sigmoid((y - 10.0) / 4.0)
    temporal = _sigmoid((np.abs(x) - 28.0) / 4.0) * _sigmoid(-z / 4.0) * _sigmoid((y + 45.0) / 4.0) \
        * _sigmoid((15.0 - y) / 4.0)
    return np.clip(frontal + temporal, 0.0, 1.0).astype(np.float32)


def head_intensities(contrast: Contrast) -> dict[str, float]:
    """Intensity (relative to mature WM) of each head layer of :data:`lesionlib.synth.head.HEAD_LAYERS`."""
    return {"csf": contrast.csf, "inner_table": contrast.bone, "diploe": contrast.marrow,
            "outer_table": contrast.bone, "fat": contrast.fat, "soft": contrast.soft_tissue}


def clean_t1(tissues: SubjectTissues, contrast: Contrast, rng: np.random.Generator,
             texture_sd: float = 0.02, head: HeadLayers | None = None) -> np.ndarray:
    """Noise-free T1 of the subject (float32, ``tissues.shape``): tissue (and head) mixture times texture.

    ``texture_sd`` is the relative amplitude of a fine (6 mm) multiplicative texture, so that
    tissues are not perfectly flat. ``head`` adds the head layers outside the brain.
    """
    wm_intensity: np.ndarray | float = 1.0
    if contrast.unmyelinated_fraction > 0:
        wm_intensity = 1.0 - contrast.unmyelinated_fraction * (1.0 - contrast.gm) * terminal_zone_weight(
            tissues.anat_mm)
    image = tissues.gm * contrast.gm + tissues.wm * wm_intensity + tissues.csf * contrast.csf
    if tissues.gliosis is not None:
        image = image + tissues.gliosis * contrast.gliosis
    if head is not None:
        for name, value in head_intensities(contrast).items():
            image = image + head.fractions[name] * np.float32(value)
    if texture_sd > 0:
        texture = smooth_random_field(tissues.shape, tissues.spacing_mm, 6.0, rng)[0]
        image = image * (1.0 + texture_sd * texture)
    return (contrast.scale * image).astype(np.float32)


def acquire(clean: np.ndarray, foreground: np.ndarray, spacing_mm: tuple[float, float, float], contrast: Contrast,
            rng: np.random.Generator) -> np.ndarray:
    """Simulated acquisition of ``clean`` (float32, same shape): bias field, Rician noise, background 0.

    ``foreground`` is the fraction of each voxel inside the head (brain + head layers) on the same
    grid; voxels with ``foreground < 0.05`` are background (air) and stay exactly 0.
    """
    bias = np.exp(contrast.bias_amplitude * smooth_random_field(clean.shape, spacing_mm, 60.0, rng)[0])
    signal = clean * bias
    sigma = contrast.noise_sd * contrast.scale
    real = signal + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag)
    image[foreground < 0.05] = 0.0
    return image.astype(np.float32)
