"""Settings of the MONAI networks' training (U-Net, Res-U-Net): one definition, the paper's defaults.

These classes hold no logic and import nothing heavy, so that profiles (:mod:`lesionlib.profile`)
can be read and checked without importing torch. They are used by the profile's method sections
(:mod:`lesionlib.segmenters.monai_nets`), by the training loop (:class:`lesionlib.train.TrainConfig`
extends :class:`OptimisationSettings`) and by the augmentation pipeline
(:func:`lesionlib.transforms.augmentation` reads :class:`AugmentationSettings`).

The paper (Lhermitte et al. 2024): Adam with a learning rate of 0.01, Dice + cross-entropy loss,
augmentation by elastic deformation, Gaussian noise, bias field and motion. Flips and small affine
transforms are extra (``AugmentationSettings.extra_spatial``, off by default).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lesionlib.profile import StrictModel

__all__ = ["AugmentationSettings", "OptimisationSettings"]


class AugmentationSettings(StrictModel):
    """Probabilities (per patch) and ranges of the training augmentation.

    The paper's four: elastic deformation (``p_elastic``; sigma and magnitude in voxels), Gaussian
    noise (``p_noise``; standard deviation in z-score units), bias field (``p_bias_field``; MONAI's
    Legendre coefficients) and MRI motion (``p_motion``; torchio ``RandomMotion``, degrees and mm).
    ``extra_spatial`` adds random flips along each axis (``p_flip`` each) and a small affine
    (``p_affine``: rotation ``± rotate_deg``, zoom ``1 ± scale_fraction``). Spatial transforms move
    image and label together (label by nearest neighbour); intensity transforms change the image only.
    """

    enabled: bool = True
    p_elastic: float = Field(0.2, ge=0, le=1)
    elastic_sigma_vox: tuple[float, float] = (5.0, 7.0)
    elastic_magnitude_vox: tuple[float, float] = (10.0, 50.0)
    p_noise: float = Field(0.15, ge=0, le=1)
    noise_std: float = Field(0.1, ge=0)
    p_bias_field: float = Field(0.3, ge=0, le=1)
    bias_coeff_range: tuple[float, float] = (0.0, 0.1)
    p_motion: float = Field(0.1, ge=0, le=1)
    motion_degrees: float = Field(5.0, ge=0)
    motion_translation_mm: float = Field(5.0, ge=0)
    extra_spatial: bool = False
    p_flip: float = Field(0.5, ge=0, le=1)
    p_affine: float = Field(0.2, ge=0, le=1)
    rotate_deg: float = Field(15.0, ge=0)
    scale_fraction: float = Field(0.1, ge=0, lt=1)

    def describe(self) -> str:
        """One line for tables: which transforms run, with their probabilities."""
        if not self.enabled:
            return "none"
        parts = [f"elastic {self.p_elastic:g}", f"noise {self.p_noise:g}", f"bias field {self.p_bias_field:g}",
                 f"motion {self.p_motion:g}"]
        if self.extra_spatial:
            parts += [f"flips {self.p_flip:g}/axis", f"affine {self.p_affine:g}"]
        return ", ".join(parts)


class OptimisationSettings(StrictModel):
    """How a MONAI network is optimised (everything but the schedule length and the run's identity).

    Attributes
    ----------
    batch_size
        Patches per optimiser step.
    patch_size
        Training patch and sliding-window size in voxels, multiples of the model's ``size_divisor``.
    lr, lr_schedule, weight_decay
        Adam; ``'constant'`` (the paper) or ``'poly'`` (lr x (1 - epoch/epochs)^0.9 per epoch, as nnU-Net).
    foreground_fraction
        Share of patches centred on a lesion voxel (nnU-Net: 1/3); the rest are placed uniformly.
    augmentation
        :class:`AugmentationSettings`.
    val_overlap, val_every
        Sliding-window overlap of the validation, run every ``val_every`` epochs and after the last
        (the best checkpoint is chosen among validated epochs).
    inference_patch_size
        Sliding-window size for validation and segmentation (``None``: ``patch_size``). The networks
        are fully convolutional; a window covering a whole low-resolution image needs one forward
        pass instead of several overlapping ones.
    cache
        Preprocessed volumes kept in memory (``'memory'``), on disk under the results root
        (``'disk'``), or re-read every time (``'none'``). ``'auto'`` (the default) chooses at the
        start of training: memory when the estimated size of the cached training and validation
        volumes (from the image headers: the grid at the working resolution, image and mask in float32;
        times ``1 + num_workers`` when DataLoader workers are not forked) is at most half the available
        memory (``MemAvailable``, or a cgroup limit's headroom), else disk when it fits in the cache
        folder's free space, else none (:func:`lesionlib.resources.decide_cache`). The run logs the
        choice with its numbers and records it in ``params.yaml`` (``cache``).
    num_workers
        DataLoader processes for patch sampling and augmentation (0: in the training process).
    amp
        bf16 autocast on CUDA (ignored on CPU).
    """

    batch_size: int = Field(2, ge=1)
    patch_size: tuple[int, int, int] = (128, 128, 128)
    lr: float = Field(0.01, gt=0)
    lr_schedule: Literal["constant", "poly"] = "constant"
    weight_decay: float = Field(0.0, ge=0)
    foreground_fraction: float = Field(1.0 / 3.0, ge=0, le=1)
    augmentation: AugmentationSettings = AugmentationSettings()
    val_overlap: float = Field(0.25, ge=0, lt=1)
    val_every: int = Field(1, ge=1)
    inference_patch_size: tuple[int, int, int] | None = None
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    num_workers: int = Field(0, ge=0)
    amp: bool = True

    @model_validator(mode="after")
    def _positive_patch(self) -> "OptimisationSettings":
        for name in ("patch_size", "inference_patch_size"):
            value = getattr(self, name)
            if value is not None and any(int(p) < 1 for p in value):
                raise ValueError(f"{name} must be positive, got {value}")
        return self

    @property
    def window(self) -> tuple[int, int, int]:
        """The sliding-window size of validation and segmentation."""
        return tuple(self.inference_patch_size or self.patch_size)  # type: ignore[return-value]
