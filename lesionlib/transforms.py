"""Preprocessing and augmentation: the one place where the image pipeline is defined.

Data flow (MONAI dictionary transforms on ``{'image': ..., 'label': ...}``)::

    preprocessing (deterministic, cached):
        load (validated, lesionlib.io) -> reorient to RAS -> resample to spacing_mm
        -> crop to the brain's bounding box -> z-score inside the brain (nonzero voxels)
        -> pad to at least the patch size
    patch sampling (lesionlib.samplers): lesion-oversampled crops of patch_size
    augmentation (random, per patch; lesionlib.training_settings.AugmentationSettings):
        elastic deformation, bias field, Gaussian noise, motion artefact (torchio), and
        optionally flips and a small affine

Arrays are channel-first ``(C=1, X, Y, Z)`` MONAI ``MetaTensor``s whose ``.affine`` maps voxel
indices to world millimetres (RAS+, NIfTI convention), kept up to date by every spatial step;
:mod:`lesionlib.predict` uses it to map predictions back onto the input image's grid.

"Brain" means nonzero voxels: for skull-stripped images the brain; for whole-head images with a
zero background (ATLAS v2.0, defaced, and the synthetic cohorts) the head; for images with
background noise the whole field of view.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Rand3DElasticd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    Spacingd,
    SpatialPadd,
)

from lesionlib.io import DataValidationError, load_nifti
from lesionlib.training_settings import AugmentationSettings
from lesionlib.space import grid_mismatch

__all__ = [
    "LoadRecordd",
    "RandApplyd",
    "RandMotiond",
    "preprocessing",
    "augmentation",
    "record_to_item",
    "check_record_files",
]

log = logging.getLogger(__name__)

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # NIfTI world axes: +x = R, +y = A, +z = S


def record_to_item(record: Any) -> dict[str, Any]:
    """The dictionary a pipeline starts from: ``{'image': str, 'label': str | None, 'case_id': str}``.

    Accepts an :class:`lesionlib.data.records.ImageRecord` (or anything with ``image_path``,
    ``mask_path`` and ``case_id``).
    """
    return {
        "image": str(record.image_path),
        "label": None if record.mask_path is None else str(record.mask_path),
        "case_id": record.case_id,
    }


def check_record_files(records: Sequence[Any], *, need_mask: bool = True) -> None:
    """Validate every record before a pipeline runs (MONAI wraps errors raised inside transforms).

    Delegates to :func:`lesionlib.data.validate.require_valid` with purpose ``'train'`` (masks
    required, binary, non-empty, on the image's grid) or, without ``need_mask``, ``'predict'``
    (images only). Every record is checked before anything is raised.

    Raises
    ------
    DataValidationError
        A :class:`~lesionlib.data.validate.DataValidationErrors` listing every failing file.
    """
    from lesionlib.data.validate import require_valid

    require_valid(list(records), purpose="train" if need_mask else "predict")


class LoadRecordd(MapTransform):
    """Load ``image`` (and ``label`` if present) with :func:`lesionlib.io.load_nifti`.

    Produces ``MetaTensor``s of shape ``(1, X, Y, Z)`` float32 with the file's affine. The label
    must hold exactly {0, 1} (:func:`lesionlib.data.validate.mask_value_problem`: a {0, 255} or
    label-map mask is an error, never thresholded) and lie on the image's grid
    (:func:`lesionlib.space.same_grid`); otherwise :class:`~lesionlib.io.DataValidationError`
    names the mask file. Run :func:`check_record_files` first: it reports every bad file at once.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.image_key = image_key
        self.label_key = label_key

    @staticmethod
    def _tensor(data: np.ndarray, affine: np.ndarray, path: str) -> MetaTensor:
        return MetaTensor(
            torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32))[None],
            affine=torch.as_tensor(affine, dtype=torch.float64),
            meta={"filename_or_obj": path},
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from lesionlib.data.validate import mask_value_problem

        d = dict(data)
        image_path = str(d[self.image_key])
        img = load_nifti(image_path, role="image")  # finite voxels, plausible header: checked there
        arr = np.asarray(img.dataobj, dtype=np.float32)
        d[self.image_key] = self._tensor(arr, img.affine, image_path)
        label_path = d.get(self.label_key)
        if label_path is not None:
            label_path = str(label_path)
            mask = load_nifti(label_path, role="mask")
            mismatch = grid_mismatch(mask, img)
            if mismatch:
                raise DataValidationError(label_path, f"mask is not on the grid of its image {Path(image_path).name} "
                                                      f"({mismatch})")
            values = np.asarray(mask.dataobj)
            problem = mask_value_problem(values)
            if problem:
                raise DataValidationError(label_path, problem)
            d[self.label_key] = self._tensor(values.astype(np.float32), img.affine, label_path)
        else:
            d.pop(self.label_key, None)
        return d


class RandApplyd(RandomizableTransform, MapTransform):
    """Apply ``transform`` (a dictionary transform built with probability 1) with probability ``prob``.

    MONAI 1.6's ``Rand3DElasticd`` draws its random field and resamples image and label through an
    identity grid even when its own ``prob`` does not fire (about 15 ms per 48^3 patch on one CPU
    thread, a third of the data time of a training step); wrapped here, nothing runs unless it fires.
    Seeding this transform (``set_random_state``) seeds the wrapped one too.
    """

    def __init__(self, transform: RandomizableTransform, prob: float) -> None:
        keys = getattr(transform, "keys", ())
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "RandApplyd":
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize(None)
        return self.transform(data) if self._do_transform else dict(data)


class RandMotiond(RandomizableTransform, MapTransform):
    """Random MRI motion artefact (torchio ``RandomMotion``) as a MONAI dictionary transform.

    MONAI has no motion transform; torchio simulates rigid movements in k-space. Only image keys
    are changed (the lesion does not move in the label). Randomness comes from this transform's
    ``R`` (seeded by ``Compose.set_random_state``), so results are reproducible.

    Parameters
    ----------
    degrees, translation_mm
        Maximum rotation (degrees) and translation (mm) of the simulated movements.
    num_transforms
        Number of simulated movements.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.1, degrees: float = 10.0,
                 translation_mm: float = 10.0, num_transforms: int = 2) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        import torchio as tio

        self._motion = tio.RandomMotion(degrees=degrees, translation=translation_mm,
                                        num_transforms=num_transforms, image_interpolation="linear")
        self._torch_seed = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._torch_seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torchio as tio

        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            affine = img.affine.numpy() if isinstance(img, MetaTensor) else np.eye(4)
            tensor = torch.as_tensor(img).detach().cpu().float()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._torch_seed)
                moved = self._motion(tio.ScalarImage(tensor=tensor, affine=affine)).data
            moved = moved.to(dtype=torch.as_tensor(img).dtype)
            if isinstance(img, MetaTensor):
                out = img.clone()
                out.array = moved  # keep the metadata, replace the voxels
                d[key] = out
            else:
                d[key] = moved
        return d


def preprocessing(spacing_mm: Sequence[float] | None, patch_size: Sequence[int] | None = None,
                  crop_foreground: bool = True) -> Compose:
    """Deterministic pipeline from file paths to a normalised RAS volume at ``spacing_mm``.

    Parameters
    ----------
    spacing_mm
        Target voxel size (mm) along R, A, S; ``None`` keeps each image's own spacing.
    patch_size
        If given, volumes smaller than it are zero-padded (symmetrically) to at least this size.
    crop_foreground
        Crop to the bounding box of nonzero voxels (saves memory on MNI-sized grids).

    Input item: ``{'image': path, 'label': path | None, ...}`` (see :func:`record_to_item`).
    Output: ``image`` float32 ``(1, X, Y, Z)`` z-scored over nonzero voxels; ``label`` float32
    ``(1, X, Y, Z)`` in {0, 1}; both ``MetaTensor`` with the RAS affine of the processed grid.
    """
    keys = ("image", "label")
    steps: list = [
        LoadRecordd(),
        Orientationd(keys=keys, axcodes="RAS", labels=_RAS_LABELS, allow_missing_keys=True),
    ]
    if spacing_mm is not None:
        steps.append(Spacingd(keys=keys, pixdim=tuple(float(s) for s in spacing_mm), mode=("bilinear", "nearest"),
                              allow_missing_keys=True))
    if crop_foreground:
        steps.append(CropForegroundd(keys=keys, source_key="image", margin=2, allow_smaller=True,
                                     allow_missing_keys=True))
    steps.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    if patch_size is not None:
        steps.append(SpatialPadd(keys=keys, spatial_size=tuple(int(p) for p in patch_size), allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, allow_missing_keys=True))
    return Compose(steps)


def augmentation(config: AugmentationSettings | None = None) -> Compose:
    """Random training augmentation of a patch ``{'image': (1, X, Y, Z), 'label': (1, X, Y, Z)}``.

    The paper's four transforms (elastic deformation, bias field, Gaussian noise, motion), preceded
    by random flips and a small affine when ``config.extra_spatial``. Seed it with
    ``Compose.set_random_state(seed)`` for reproducible output. Returns an empty ``Compose`` when
    ``config.enabled`` is false.
    """
    cfg = config or AugmentationSettings()
    if not cfg.enabled:
        return Compose([])
    keys = ("image", "label")
    steps: list = []
    if cfg.extra_spatial:
        rotate = float(np.deg2rad(cfg.rotate_deg))
        steps += [RandFlipd(keys=keys, prob=cfg.p_flip, spatial_axis=axis) for axis in range(3)]
        steps.append(RandAffined(keys=keys, prob=cfg.p_affine, rotate_range=(rotate,) * 3,
                                 scale_range=(cfg.scale_fraction,) * 3, mode=("bilinear", "nearest"),
                                 padding_mode="zeros"))
    steps += [
        RandApplyd(Rand3DElasticd(keys=keys, prob=1.0, sigma_range=tuple(cfg.elastic_sigma_vox),
                                  magnitude_range=tuple(cfg.elastic_magnitude_vox), mode=("bilinear", "nearest"),
                                  padding_mode="zeros"), prob=cfg.p_elastic),
        RandBiasFieldd(keys="image", prob=cfg.p_bias_field, coeff_range=tuple(cfg.bias_coeff_range)),
        RandGaussianNoised(keys="image", prob=cfg.p_noise, std=cfg.noise_std),
        RandMotiond(keys="image", prob=cfg.p_motion, degrees=cfg.motion_degrees,
                    translation_mm=cfg.motion_translation_mm),
    ]
    return Compose(steps)
