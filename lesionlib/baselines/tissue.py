"""Tissue probability maps (GM, WM, CSF) in MNI space: the stand-in for SPM12's unified segmentation.

LesionGnb (Griffis et al. 2016) starts from SPM12 "New Segment" tissue maps normalised to MNI space
(``wc1``/``wc2``/``wc3``). SPM12 is not available here, so this module provides a documented
stand-in with the same ingredients -- a Gaussian mixture on T1w intensities whose per-voxel class
priors are the MNI template's tissue probability maps -- but without SPM's nonlinear warping,
bias-field model or MRF clean-up:

* the image is already in MNI space (affinely registered; see :mod:`lesionlib.register`);
* priors: nilearn's MNI152 2009a GM and WM probability maps, CSF = brain mask - GM - WM (clipped to
  [0, 1]); each is blended with a flat prior, ``(1 - prior_floor) * template + prior_floor / 3``, so
  that tissue in an unexpected place (a CSF-filled lesion in white matter) can still be labelled
  by its intensity, as SPM's TPMs (never exactly 0 inside the brain) allow;
* one Gaussian per class (SPM12's LesionGnb batch uses 1 for GM and WM and 2 for CSF), initialised
  from a 3-component scikit-learn ``GaussianMixture`` on the in-brain intensities (classes ordered
  by mean: CSF < GM < WM on T1w), then refined by EM with the spatial priors:
  ``p(k | y_i) ∝ prior_k(i) N(y_i; mu_k, sigma_k^2)``.

Outputs are probability maps on the MNI grid of :func:`lesionlib.space.mni_grid`, zero outside
the template brain mask (SPM's ``mask_ICV`` in the original toolbox).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from sklearn.mixture import GaussianMixture

from lesionlib.register import mni_template

__all__ = ["TissueMaps", "template_tissue_priors", "segment_tissues"]

log = logging.getLogger(__name__)


class TissueMaps(NamedTuple):
    """Grey matter, white matter and CSF probability maps, each float32 of the same 3D shape."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray


def template_tissue_priors(resolution_mm: float) -> tuple[TissueMaps, np.ndarray]:
    """The MNI152 2009a tissue priors and brain mask on ``mni_grid(resolution_mm)``.

    Returns
    -------
    (TissueMaps, brain)
        GM and WM probabilities from nilearn, CSF = brain - GM - WM clipped to [0, 1]; ``brain`` is
        the template's boolean brain mask. All arrays have ``mni_grid(resolution_mm)[0]`` shape.
    """
    gm = mni_template(resolution_mm, "gm").get_fdata(dtype=np.float32)
    wm = mni_template(resolution_mm, "wm").get_fdata(dtype=np.float32)
    brain = mni_template(resolution_mm, "brain").get_fdata(dtype=np.float32) > 0.5
    gm = np.where(brain, np.clip(gm, 0, 1), 0).astype(np.float32)
    wm = np.where(brain, np.clip(wm, 0, 1), 0).astype(np.float32)
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0, 1), 0).astype(np.float32)
    return TissueMaps(gm, wm, csf), brain


def _normal_pdf(y: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (y[:, None] - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)


def segment_tissues(image: np.ndarray, priors: TissueMaps, brain: np.ndarray, *, prior_floor: float = 0.1,
                    n_iterations: int = 30, tol: float = 1e-5, seed: int = 0) -> TissueMaps:
    """GM/WM/CSF posterior probabilities of a T1w image already on the priors' MNI grid.

    Parameters
    ----------
    image
        T1w intensities, shape ``brain.shape`` (any scale; only the in-brain voxels are used).
    priors
        Template tissue probabilities (:func:`template_tissue_priors`), same shape.
    brain
        Boolean mask of the voxels to segment (the template brain mask).
    prior_floor
        Weight of the flat 1/3 prior blended into the template priors (0 = template only).
    n_iterations, tol
        EM iterations and the stopping tolerance on the mean log-likelihood change.

    Returns
    -------
    TissueMaps
        float32 probabilities summing to 1 inside ``brain`` and 0 outside.
    """
    if image.shape != brain.shape or any(p.shape != brain.shape for p in priors):
        raise ValueError(f"image {image.shape}, priors and brain mask {brain.shape} must share a shape")
    if not 0 <= prior_floor <= 1:
        raise ValueError(f"prior_floor must be in [0, 1], got {prior_floor}")
    inside = brain & np.isfinite(image)
    y = image[inside].astype(np.float64)
    if y.size < 100 or np.ptp(y) == 0:
        raise ValueError(f"cannot segment: {y.size} in-brain voxels with intensity range {np.ptp(y) if y.size else 0}")
    scale = np.percentile(y, 99) or 1.0
    y = y / scale
    # classes in order CSF, GM, WM (T1w: dark, intermediate, bright)
    pri = np.stack([priors.csf[inside], priors.gm[inside], priors.wm[inside]], axis=1).astype(np.float64)
    pri = (1.0 - prior_floor) * pri / np.maximum(pri.sum(axis=1, keepdims=True), 1e-6) + prior_floor / 3.0

    rng = np.random.default_rng(seed)
    sample = y if y.size <= 50_000 else rng.choice(y, 50_000, replace=False)
    gmm = GaussianMixture(3, covariance_type="full", random_state=seed).fit(sample[:, None])
    order = np.argsort(gmm.means_[:, 0])
    mu = gmm.means_[order, 0]
    var = np.maximum(gmm.covariances_[order, 0, 0], 1e-6)

    previous = -np.inf
    for it in range(n_iterations):
        joint = pri * _normal_pdf(y, mu, var) + 1e-300
        evidence = joint.sum(axis=1, keepdims=True)
        resp = joint / evidence
        loglik = float(np.log(evidence).mean())
        weight = resp.sum(axis=0) + 1e-12
        mu = (resp * y[:, None]).sum(axis=0) / weight
        var = np.maximum((resp * (y[:, None] - mu) ** 2).sum(axis=0) / weight, 1e-6)
        if abs(loglik - previous) < tol:
            break
        previous = loglik
    log.debug("tissue EM: %d iterations, means (CSF, GM, WM) %s x %.3g", it + 1, np.round(mu, 3), scale)

    maps = []
    for k in range(3):
        vol = np.zeros(brain.shape, dtype=np.float32)
        vol[inside] = resp[:, k]
        maps.append(vol)
    csf, gm, wm = maps
    return TissueMaps(gm=gm, wm=wm, csf=csf)
