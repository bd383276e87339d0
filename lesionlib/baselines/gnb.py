"""LesionGnb: Gaussian naive Bayes lesion segmentation (Griffis et al. 2016), in Python.

Griffis, Allendorfer & Szaflarski, "Voxel-based Gaussian naive Bayes classification of ischemic
stroke lesions in individual T1-weighted MRI scans", J Neurosci Methods 257:97-108 (2016); the
MATLAB/SPM12 toolbox is ``jcgriffis/lesion_gnb``. This is a re-implementation of its pipeline:

1. **MNI space.** Images not already in MNI space (children, native space) are registered affinely
   (12 dof, mutual information) to the MNI152 2009a template (:func:`lesionlib.register.register_to_mni`)
   and resampled (linear) on the working grid :func:`lesionlib.space.mni_grid` at ``resolution_mm``
   (default 1.5 mm, the grid of SPM12's TPM on which the toolbox's normalised ``wc*`` maps live).
   Adult ATLAS images are in MNI152 2009a space already and are only resampled. ATLAS v2.0 and the
   children's native scans are whole-head images while the template is skull-stripped, so what is
   registered is a brain-extracted copy (:func:`lesionlib.baselines.brain.brain_extracted`, a
   morphological mask), as FSL pipelines run BET before FLIRT; the toolbox's SPM12 normalisation
   models skull and scalp with tissue classes of its own instead. The transform then moves the
   whole-head image.
2. **Tissue maps** GM/WM/CSF inside the template's brain mask (the registered MNI brain mask, the
   toolbox's ``mask_ICV``; skull and scalp outside it are never analysed): SPM12 segmentation is
   replaced by the stand-in of :mod:`lesionlib.baselines.tissue` (intensity Gaussian mixture with
   MNI template priors).
3. **Features** (:func:`lesion_features`): subject maps and template priors are smoothed with the
   same Gaussian kernel (8 mm FWHM; sigma = FWHM / (2 sqrt(2 ln 2)) / spacing, in voxels), subject
   maps are zeroed outside the brain mask, the brain is split at the midline (MNI x = 0) and the
   affected hemisphere ``a`` is compared with the mirrored unaffected hemisphere ``u`` and the
   template ``t``:

   * F1, missing tissue:  mean of (CSF_a - CSF_t)((GM_t+WM_t) - (GM_a+WM_a)) and
     (CSF_a - CSF_u)((GM_u+WM_u) - (GM_a+WM_a));
   * F2, abnormal tissue: mean of (GM_a - GM_u)(WM_u - WM_a) and (GM_a - GM_t)(WM_t - WM_a);

   each rounded to 2 decimals and with negatives set to 0, as in the toolbox.
   The toolbox asks the user for the affected hemisphere. Here it is taken from the lesion mask
   when training, and at prediction chosen automatically (``affected='auto'``, the default) as the
   hemisphere with more template-referenced abnormality (the sum over each hemisphere of the
   positive parts of the two template terms). The mirror terms cannot decide it: they are
   symmetric (a lesion on the left makes the same mirror term on the right).
4. **Classifier**: scikit-learn ``GaussianNB`` with class priors [0.8936, 0.1064] (the toolbox's),
   trained on (F1, F2) of voxels of the affected hemisphere's brain mask of every training image,
   subsampled per image (all lesion voxels up to half the budget, the rest background); with fixed
   priors the sampling ratio does not bias the classifier. The class variances are floored at
   the variance of the features' 0.01 rounding (step^2 / 12): a class whose feature is constant
   (F2 = 0 in every voxel of CSF-filled lesions) would otherwise get a near-zero variance and
   claim every voxel where that feature is 0.
5. **Post-processing**: the binary label map is smoothed (8 mm FWHM), kept where > 0.25, and clusters
   smaller than ``min_cluster_ml`` (26-connectivity) are dropped. The toolbox's threshold is 100
   voxels on its 1.5 mm grid, i.e. 0.3375 mL; it is applied here as a volume, converted to voxels of
   the working grid, so that it means the same at any ``resolution_mm``.
6. The MNI-space mask is mapped back to the image's own grid (inverse transform, linear
   interpolation of the binary map, threshold 0.5).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import joblib
import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from sklearn.naive_bayes import GaussianNB
from tqdm.auto import tqdm

from lesionlib.baselines.brain import brain_extracted
from lesionlib.baselines.tissue import TissueMaps, segment_tissues, template_tissue_priors
from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, atomic_path, load_nifti
from lesionlib.register import RegistrationSettings, register_to_mni, resample_to
from lesionlib.space import grid_mismatch, mni_grid

__all__ = [
    "ORIGINAL_PRIORS",
    "fwhm_to_sigma_voxels",
    "smooth_fwhm",
    "lesion_features",
    "choose_affected_hemisphere",
    "postprocess_labels",
    "MniCase",
    "prepare_case",
    "LesionGnb",
]

log = logging.getLogger(__name__)

ORIGINAL_PRIORS: tuple[float, float] = (0.8936, 0.1064)
Hemisphere = Literal["L", "R"]
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- smoothing & features
def fwhm_to_sigma_voxels(fwhm_mm: float, spacing_mm: Sequence[float]) -> tuple[float, ...]:
    """Gaussian sigma per axis, in voxels, of a kernel with ``fwhm_mm`` full width at half maximum."""
    sigma_mm = fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return tuple(sigma_mm / float(s) for s in spacing_mm)


def smooth_fwhm(volume: np.ndarray, fwhm_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing with ``fwhm_mm`` (zero padding outside the volume, as SPM's ``spm_smooth``)."""
    if fwhm_mm <= 0:
        return volume.astype(np.float32, copy=True)
    return ndimage.gaussian_filter(volume.astype(np.float32), fwhm_to_sigma_voxels(fwhm_mm, spacing_mm),
                                   mode="constant", cval=0.0)


def _hemisphere_mask(x_mm: np.ndarray, shape: tuple[int, ...], hemisphere: Hemisphere) -> np.ndarray:
    """Boolean volume of one hemisphere: left is x < 0, right is x > 0 (RAS); the x = 0 column is neither."""
    side = x_mm < 0 if hemisphere == "L" else x_mm > 0
    return np.broadcast_to(side[:, None, None], shape)


def _check_symmetric(x_mm: np.ndarray, shape: tuple[int, ...]) -> None:
    if x_mm.shape != (shape[0],):
        raise ValueError(f"x_mm must hold one x coordinate per index of axis 0 ({shape[0]}), got {x_mm.shape}")
    if not np.allclose(x_mm, -x_mm[::-1], atol=1e-3):
        raise ValueError("the grid is not symmetric about x = 0: flipping axis 0 would not mirror the hemispheres")


def _smoothed(maps: TissueMaps, fwhm_mm: float, spacing_mm: Sequence[float]) -> TissueMaps:
    return TissueMaps(*(smooth_fwhm(m, fwhm_mm, spacing_mm) for m in maps))


def lesion_features(subject: TissueMaps, template: TissueMaps, brain: np.ndarray, x_mm: np.ndarray,
                    affected: Hemisphere, spacing_mm: Sequence[float], *, fwhm_mm: float = 8.0,
                    round_decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LesionGnb's missing-tissue (F1) and abnormal-tissue (F2) feature maps.

    Parameters
    ----------
    subject, template
        Unsmoothed GM/WM/CSF probability maps of the image and the template priors, all on one
        MNI grid of shape ``(X, Y, Z)`` whose axis 0 runs left to right (RAS).
    brain
        Boolean brain mask ``(X, Y, Z)``; smoothed subject maps are zeroed outside it.
    x_mm
        World x coordinate (mm, RAS) of each index along axis 0; must be symmetric about 0.
    affected
        ``'L'`` (x < 0) or ``'R'`` (x > 0).
    spacing_mm
        Voxel size (mm) per axis, to convert ``fwhm_mm`` into voxels.
    round_decimals
        The toolbox rounds the feature maps to 2 decimals; ``None`` keeps full precision.

    Returns
    -------
    (f1, f2, region)
        float32 feature maps ``(X, Y, Z)`` (>= 0, zero outside ``region``) and the boolean region
        where they are defined: the brain mask within the affected hemisphere.
    """
    shape = brain.shape
    _check_symmetric(x_mm, shape)
    if affected not in ("L", "R"):
        raise ValueError(f"affected must be 'L' or 'R', got {affected!r}")
    subj = TissueMaps(*(np.where(brain, m, 0.0) for m in _smoothed(subject, fwhm_mm, spacing_mm)))
    tmpl = _smoothed(template, fwhm_mm, spacing_mm)
    mirror = TissueMaps(*(m[::-1] for m in subj))
    region = brain & _hemisphere_mask(x_mm, shape, affected)

    tissue_a = subj.gm + subj.wm
    missing_t = (subj.csf - tmpl.csf) * ((tmpl.gm + tmpl.wm) - tissue_a)
    missing_u = (subj.csf - mirror.csf) * ((mirror.gm + mirror.wm) - tissue_a)
    abnormal_u = (subj.gm - mirror.gm) * (mirror.wm - subj.wm)
    abnormal_t = (subj.gm - tmpl.gm) * (tmpl.wm - subj.wm)
    f1 = (missing_t + missing_u) / 2.0
    f2 = (abnormal_u + abnormal_t) / 2.0
    out = []
    for f in (f1, f2):
        if round_decimals is not None:
            f = np.round(f, round_decimals)
        f = np.where(region & (f > 0), f, 0.0).astype(np.float32)
        out.append(f)
    return out[0], out[1], region


def choose_affected_hemisphere(subject: TissueMaps, template: TissueMaps, brain: np.ndarray, x_mm: np.ndarray,
                               spacing_mm: Sequence[float], *, fwhm_mm: float = 8.0) -> Hemisphere:
    """The hemisphere that departs more from the template: larger sum of the positive template terms.

    Sums, per hemisphere, ``max(0, (CSF - CSF_t)((GM_t+WM_t) - (GM+WM))) + max(0, (GM - GM_t)(WM_t - WM))``
    over the brain mask (smoothed maps as in :func:`lesion_features`). Ties go to the left.
    """
    shape = brain.shape
    _check_symmetric(x_mm, shape)
    subj = TissueMaps(*(np.where(brain, m, 0.0) for m in _smoothed(subject, fwhm_mm, spacing_mm)))
    tmpl = _smoothed(template, fwhm_mm, spacing_mm)
    score = (np.maximum(0, (subj.csf - tmpl.csf) * ((tmpl.gm + tmpl.wm) - (subj.gm + subj.wm)))
             + np.maximum(0, (subj.gm - tmpl.gm) * (tmpl.wm - subj.wm)))
    score = np.where(brain, score, 0.0)
    left = float(score[_hemisphere_mask(x_mm, shape, "L")].sum())
    right = float(score[_hemisphere_mask(x_mm, shape, "R")].sum())
    return "L" if left >= right else "R"


def postprocess_labels(labels: np.ndarray, spacing_mm: Sequence[float], *, fwhm_mm: float = 8.0,
                       threshold: float = 0.25, min_cluster_voxels: int = 100) -> np.ndarray:
    """The toolbox's clean-up of a binary label map: smooth, keep > ``threshold``, drop small clusters.

    Clusters are 26-connected; those with fewer than ``min_cluster_voxels`` voxels are removed.
    Returns a boolean array of ``labels.shape``.
    """
    smoothed = smooth_fwhm((labels > 0).astype(np.float32), fwhm_mm, spacing_mm) if fwhm_mm > 0 else labels > 0
    kept = smoothed > threshold
    if min_cluster_voxels > 1 and kept.any():
        components, n = ndimage.label(kept, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        big = sizes >= min_cluster_voxels
        big[0] = False
        kept = big[components]
    return kept


# --------------------------------------------------------------------------- one image in MNI space
class MniCase(NamedTuple):
    """One image brought to the MNI working grid.

    image
        The T1w image (nibabel) on ``mni_grid(resolution_mm)``.
    tissue
        Its GM/WM/CSF probability maps on that grid.
    to_native
        ITK transform mapping MNI physical points to the native image's points (``None`` when the
        image was already in MNI space).
    native
        The original image (its grid is where predictions go back to).
    """

    image: nib.Nifti1Image
    tissue: TissueMaps
    to_native: sitk.Transform | None
    native: nib.Nifti1Image


def prepare_case(image: nib.Nifti1Image, *, resolution_mm: float, register: bool, dof: int = 12,
                 prior_floor: float = 0.1, settings: RegistrationSettings = RegistrationSettings(),
                 brain_extraction: bool = True) -> MniCase:
    """Register (if ``register``; a brain-extracted copy if ``brain_extraction``) and resample ``image``
    to the MNI grid, then segment GM/WM/CSF inside the template's brain mask."""
    shape, affine = mni_grid(resolution_mm)
    reference = nib.Nifti1Image(np.zeros(shape, dtype=np.float32), affine)
    transform = None
    if register:
        moving = brain_extracted(image) if brain_extraction else image
        transform = register_to_mni(moving, resolution_mm=max(resolution_mm, 2.0), dof=dof, settings=settings)
    in_mni = resample_to(image, reference, transform, interpolation="linear")
    priors, brain = template_tissue_priors(resolution_mm)
    tissue = segment_tissues(in_mni.get_fdata(dtype=np.float32), priors, brain, prior_floor=prior_floor)
    return MniCase(in_mni, tissue, transform, image)


def _mask_to_mni(mask: nib.Nifti1Image, case: MniCase) -> np.ndarray:
    """A native-space binary mask on the MNI grid (linear interpolation, >= 0.5)."""
    binary = nib.Nifti1Image((np.asanyarray(mask.dataobj) > 0).astype(np.float32), mask.affine)
    moved = resample_to(binary, case.image, case.to_native, interpolation="linear")
    return moved.get_fdata() >= 0.5


def _mask_to_native(mask_mni: np.ndarray, case: MniCase) -> nib.Nifti1Image:
    src = nib.Nifti1Image(mask_mni.astype(np.float32), case.image.affine)
    inverse = case.to_native.GetInverse() if case.to_native is not None else None
    moved = resample_to(src, case.native, inverse, interpolation="linear")
    out = nib.Nifti1Image((moved.get_fdata() >= 0.5).astype(np.uint8), case.native.affine, case.native.header.copy())
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1, 0)
    return out


# --------------------------------------------------------------------------- the estimator
@dataclass
class LesionGnb:
    """LesionGnb as a scikit-learn-like estimator: ``fit(records)``, ``predict(record)``, ``save``/``load``.

    Parameters
    ----------
    resolution_mm
        Isotropic voxel size of the MNI working grid (1.5 mm in the toolbox).
    fwhm_mm
        Smoothing of tissue maps and template priors before computing features.
    class_priors
        GaussianNB priors (background, lesion); the toolbox's are [0.8936, 0.1064].
    label_fwhm_mm, label_threshold, min_cluster_ml
        Post-processing: smooth the label map, keep > threshold, drop clusters < ``min_cluster_ml``
        (0.3375 mL = 100 voxels of 1.5 mm).
    max_voxels_per_case
        Training voxels sampled per image (all lesion voxels up to half of it, then background).
    round_decimals
        Rounding of the feature maps (2 in the toolbox).
    register_domains
        Record domains registered to MNI before processing; others (ATLAS, adult) are in MNI already.
    registration_dof
        12 (affine, as in the issue) or 6.
    prior_floor
        Flat-prior weight of the tissue-segmentation stand-in.
    affected
        ``'auto'``, ``'L'`` or ``'R'``: hemisphere analysed at prediction time.
    brain_extraction
        Register a brain-extracted copy of native-space images (whole-head T1w; see step 1);
        ``False`` for images that are brain-extracted already.
    seed
        For voxel subsampling and the segmentation's initialisation.
    """

    resolution_mm: float = 1.5
    fwhm_mm: float = 8.0
    class_priors: tuple[float, float] = ORIGINAL_PRIORS
    label_fwhm_mm: float = 8.0
    label_threshold: float = 0.25
    min_cluster_ml: float = 0.3375
    max_voxels_per_case: int = 20_000
    round_decimals: int | None = 2
    register_domains: tuple[str, ...] = ("child",)
    registration_dof: int = 12
    prior_floor: float = 0.1
    affected: Literal["auto", "L", "R"] = "auto"
    brain_extraction: bool = True
    seed: int = 0
    classifier_: GaussianNB | None = field(default=None, repr=False)
    n_training_voxels_: dict[str, int] = field(default_factory=dict, repr=False)

    # ---- helpers
    def get_params(self) -> dict:
        """Constructor parameters (not the fitted state)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_")}

    @property
    def min_cluster_voxels(self) -> int:
        """``min_cluster_ml`` in voxels of the working grid (rounded up, at least 1)."""
        return max(1, int(math.ceil(self.min_cluster_ml * 1000.0 / self.resolution_mm**3 - 1e-9)))

    def _grid(self) -> tuple[np.ndarray, tuple[float, float, float]]:
        shape, affine = mni_grid(self.resolution_mm)
        x_mm = affine[0, 0] * np.arange(shape[0]) + affine[0, 3]
        return x_mm, (self.resolution_mm,) * 3

    def _needs_registration(self, record: ImageRecord) -> bool:
        return record.domain in self.register_domains

    def _prepare(self, image: nib.Nifti1Image, register: bool) -> MniCase:
        return prepare_case(image, resolution_mm=self.resolution_mm, register=register,
                            dof=self.registration_dof, prior_floor=self.prior_floor,
                            settings=RegistrationSettings(seed=self.seed), brain_extraction=self.brain_extraction)

    def features(self, case: MniCase, affected: Hemisphere | Literal["auto"] = "auto"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Hemisphere]:
        """(F1, F2, region, hemisphere) of a prepared case on the MNI grid."""
        template, brain = template_tissue_priors(self.resolution_mm)
        x_mm, spacing = self._grid()
        if affected == "auto":
            affected = choose_affected_hemisphere(case.tissue, template, brain, x_mm, spacing, fwhm_mm=self.fwhm_mm)
        f1, f2, region = lesion_features(case.tissue, template, brain, x_mm, affected, spacing,
                                         fwhm_mm=self.fwhm_mm, round_decimals=self.round_decimals)
        return f1, f2, region, affected

    # ---- training
    def fit(self, records: Sequence[ImageRecord], progress: bool = True) -> "LesionGnb":
        """Train the classifier on the (F1, F2) features of labelled records.

        The affected hemisphere of each training image is the one holding most of its lesion
        (``'auto'`` for an empty mask). Raises ``ValueError`` if no record has a mask or no lesion
        voxel is found, ``DataValidationError`` for a mask whose grid differs from its image's.
        """
        labelled = [r for r in records if r.mask_path is not None]
        if not labelled:
            raise ValueError("LesionGnb.fit needs records with lesion masks; none given")
        from lesionlib.data.validate import require_valid

        require_valid(labelled, purpose="train", progress=False)  # a {0, 255} mask is an error, not lesion
        rng = np.random.default_rng(self.seed)
        x_mm, _ = self._grid()
        xs, ys = [], []
        for record in tqdm(labelled, desc="LesionGnb features", disable=not progress):
            image = load_nifti(record.image_path)
            mask = load_nifti(record.mask_path)
            mismatch = grid_mismatch(mask, image)
            if mismatch:
                raise DataValidationError(record.mask_path, f"mask is not on the grid of its image "
                                                            f"{record.image_path} ({mismatch})")
            case = self._prepare(image, self._needs_registration(record))
            lesion = _mask_to_mni(mask, case)
            left = int(lesion[x_mm < 0].sum())
            right = int(lesion[x_mm > 0].sum())
            hemi: Hemisphere | Literal["auto"] = "auto" if left + right == 0 else ("L" if left >= right else "R")
            f1, f2, region, _ = self.features(case, hemi)
            idx = np.flatnonzero(region)
            y = lesion.ravel()[idx]
            pos, neg = idx[y], idx[~y]
            n_pos = min(pos.size, self.max_voxels_per_case // 2)
            n_neg = min(neg.size, self.max_voxels_per_case - n_pos)
            chosen = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
            xs.append(np.stack([f1.ravel()[chosen], f2.ravel()[chosen]], axis=1))
            ys.append(lesion.ravel()[chosen].astype(np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if y.sum() == 0:
            raise ValueError("no lesion voxel in the training masks (after resampling to MNI space)")
        self.classifier_ = GaussianNB(priors=list(self.class_priors),
                                      var_smoothing=self._var_smoothing(x)).fit(x, y)
        self.n_training_voxels_ = {"lesion": int(y.sum()), "background": int((y == 0).sum())}
        log.info("LesionGnb trained on %d images, %s voxels; class means (F1, F2): %s", len(labelled),
                 self.n_training_voxels_, np.round(self.classifier_.theta_, 4).tolist())
        return self

    def _var_smoothing(self, x: np.ndarray) -> float:
        """GaussianNB's relative variance floor, set to the variance of the features' rounding.

        Rounding to ``d`` decimals leaves each value uncertain by a uniform step of ``10**-d``,
        variance ``step**2 / 12``. Without that floor a class whose feature is constant (e.g. F2 = 0
        in every lesion voxel of CSF-filled lesions) gets a near-zero variance and then claims
        every voxel where that feature is 0. scikit-learn expresses the floor relative to the
        largest feature variance.
        """
        step = 10.0 ** -(self.round_decimals if self.round_decimals is not None else 4)
        largest = float(np.var(x, axis=0).max())
        return float(step**2 / 12.0 / largest) if largest > 0 else 1e-9

    # ---- prediction
    def _check_fitted(self) -> GaussianNB:
        if self.classifier_ is None:
            raise RuntimeError("LesionGnb is not fitted: call fit(records) or LesionGnb.load(path) first")
        return self.classifier_

    def predict_mni(self, case: MniCase, affected: Hemisphere | Literal["auto"] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw voxel labels and post-processed mask of a prepared case, both on the MNI grid (bool).

        ``affected``: the lesioned hemisphere (``'L'``/``'R'``), as the toolbox asks of its user;
        ``None`` uses the estimator's ``affected`` setting (``'auto'`` by default).
        """
        clf = self._check_fitted()
        f1, f2, region, hemi = self.features(case, affected or self.affected)
        labels = np.zeros(region.shape, dtype=bool)
        idx = np.flatnonzero(region)
        labels.ravel()[idx] = clf.predict(np.stack([f1.ravel()[idx], f2.ravel()[idx]], axis=1)) == 1
        _, spacing = self._grid()
        mask = postprocess_labels(labels, spacing, fwhm_mm=self.label_fwhm_mm, threshold=self.label_threshold,
                                  min_cluster_voxels=self.min_cluster_voxels)
        log.debug("LesionGnb: hemisphere %s, %d voxels labelled, %d after post-processing", hemi,
                  int(labels.sum()), int(mask.sum()))
        return labels, mask

    def predict(self, record: ImageRecord | nib.Nifti1Image | str | os.PathLike, *,
                register: bool | None = None) -> nib.Nifti1Image:
        """Lesion mask of one image, on the image's own grid (uint8 0/1, the image's affine).

        ``record`` is an :class:`ImageRecord` (registered to MNI if its domain is in
        ``register_domains``), or an image / NIfTI path, for which ``register`` must say whether it
        is in native space (``True``) or MNI152 2009a space already (``False``). The lesioned
        hemisphere is the record's ``lesion_hemisphere`` (from ``participants.tsv``) when known, as the
        toolbox takes it from its user; otherwise it is chosen automatically.
        """
        self._check_fitted()
        affected = None
        if isinstance(record, ImageRecord):
            image = load_nifti(record.image_path)
            needs = self._needs_registration(record) if register is None else register
            affected = {"left": "L", "right": "R"}.get(record.extra.get("lesion_hemisphere"))
        else:
            if register is None:
                raise ValueError("predict(image) needs register=True (native space) or False (MNI space)")
            image = record if isinstance(record, nib.spatialimages.SpatialImage) else load_nifti(record)
            needs = register
        case = self._prepare(image, needs)
        _, mask = self.predict_mni(case, affected)
        return _mask_to_native(mask, case)

    # ---- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model with joblib (atomically)."""
        clf = self._check_fitted()
        payload = {"format_version": _FORMAT_VERSION, "params": self.get_params(), "classifier": clf,
                   "n_training_voxels": self.n_training_voxels_}
        path = Path(path)
        with atomic_path(path) as tmp:
            joblib.dump(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LesionGnb":
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(path, "LesionGnb model file does not exist")
        try:
            payload = joblib.load(path)
        except Exception as exc:  # joblib/pickle raise many types for a bad file
            raise DataValidationError(path, f"not a readable LesionGnb model ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format_version") != _FORMAT_VERSION:
            raise DataValidationError(path, "not a LesionGnb model file (unknown format)")
        params = dict(payload["params"])
        params["class_priors"] = tuple(params["class_priors"])
        params["register_domains"] = tuple(params["register_domains"])
        model = cls(**params)
        model.classifier_ = payload["classifier"]
        model.n_training_voxels_ = dict(payload["n_training_voxels"])
        return model
