"""One training loop for both MONAI models (``unet``, ``resunet``): train, resume, fine-tune.

A run lives in one folder ``out_dir``::

    params.yaml           configuration, encoder_pretrained, split, parent run, versions, status
    history.csv           epoch, train_loss, val_loss, val_dice, lr, seconds (one row per epoch)
    checkpoint_last.pt    written atomically after every epoch (model, optimiser, scheduler,
                          RNG states, sampler position, history) -> exact resume
    checkpoint_best.pt    the epoch with the highest validation Dice (lowest train loss without
                          validation data)
    train.log             the run's log

Reproducibility: weights are initialised after ``torch.manual_seed(seed)``; every training
sample (case, patch position, augmentation) is a pure function of (seed, epoch, slot)
(:func:`lesionlib.samplers.sample_seed`), so the data stream does not depend on the number of
workers or on interruptions. A run killed at any point and restarted with the same ``out_dir``
continues from the last completed epoch and ends with the same weights as an uninterrupted run
(bitwise on CPU; on CUDA set ``deterministic=True`` for the same guarantee).

Precision: bf16 autocast on CUDA (no loss scaling needed), fp32 on CPU. The loss is always
evaluated in fp32.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import atomic_path
from lesionlib.losses import build_loss
from lesionlib.models import build_model
from lesionlib.models.medicalnet import default_weights_path, load_medicalnet_weights
from lesionlib.samplers import PatchDataset
from lesionlib.transforms import (AugmentationConfig, augmentation, check_record_files, preprocessing,
                                  record_to_item)

__all__ = [
    "TrainConfig",
    "RunResult",
    "train",
    "load_checkpoint",
    "model_from_checkpoint",
    "ras_spacing_mm",
    "resolve_device",
    "validate",
]

log = logging.getLogger(__name__)

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
HISTORY_CSV = "history.csv"
PARAMS_YAML = "params.yaml"
CHECKPOINT_FORMAT = 1

# Fields that define what a run computes: a resumed run must agree on them.
_RUN_DEFINING = ("model", "model_kwargs", "iterations_per_epoch", "batch_size", "patch_size", "spacing_mm", "lr",
                 "weight_decay", "scheduler", "seed", "foreground_fraction", "augmentation", "freeze_encoder",
                 "init_from", "val_overlap")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the paper's adult training.

    Paper: Adam, lr 0.01, 200 epochs on adult data (100 when fine-tuning: see
    :meth:`paper_finetune`), 80/20 seeded train/validation split (done by the caller with
    :func:`lesionlib.samplers.train_val_split`).

    Attributes
    ----------
    model, model_kwargs
        Registry name (``'unet'``, ``'resunet'``) and constructor arguments.
    epochs, iterations_per_epoch, batch_size
        An epoch is ``iterations_per_epoch`` optimiser steps on batches of ``batch_size`` patches.
    patch_size
        Training patch and sliding-window size in voxels (multiples of the model's ``size_divisor``).
    spacing_mm
        Resampling target (mm, RAS axes); ``None`` = median spacing of the training images.
    lr, weight_decay, scheduler
        Adam settings; ``scheduler`` is ``'poly'`` (lr x (1 - epoch/epochs)^0.9, stepped per epoch,
        as nnU-Net) or ``'constant'``.
    seed
        Seeds weight initialisation and the whole data stream.
    device
        ``'auto'`` (CUDA if available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
    num_workers
        DataLoader worker processes for patch sampling and augmentation. Augmenting one 128^3
        patch with the default probabilities took about 0.5 s on one CPU thread (elastic
        deformation alone 2.6 s when applied), so a GPU run needs most of the machine's cores here.
        Patches are bitwise the same for any worker count.
    cache, cache_dir
        Preprocessed volumes: ``'memory'`` (MONAI CacheDataset), ``'disk'`` (PersistentDataset
        under ``cache_dir`` or ``<results>/cache/preprocessed``) or ``'none'``.
    foreground_fraction
        Fraction of patches centred on a lesion voxel (nnU-Net: 1/3).
    augmentation
        :class:`lesionlib.transforms.AugmentationConfig`.
    freeze_encoder
        Keep the encoder's weights (and batch-norm statistics) fixed.
    init_from
        Checkpoint to start from (fine-tuning); recorded as the parent run.
    encoder_weights
        MedicalNet ResNet-10 ``.pth`` for ``resunet``; ``None`` = the manifest's asset if any.
    val_overlap
        Sliding-window overlap for per-epoch validation.
    deterministic
        ``torch.use_deterministic_algorithms`` (needed for bitwise resume on CUDA; slower).
    amp
        bf16 autocast on CUDA (ignored on CPU).
    resume
        Continue from ``out_dir/checkpoint_last.pt`` if it exists (else refuse to overwrite).
    progress
        tqdm progress bars.
    """

    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 200
    iterations_per_epoch: int = 250
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (128, 128, 128)
    spacing_mm: tuple[float, float, float] | None = None
    lr: float = 0.01
    weight_decay: float = 0.0
    scheduler: str = "poly"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    cache: str = "memory"
    cache_dir: str | None = None
    foreground_fraction: float = 1.0 / 3.0
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    freeze_encoder: bool = False
    init_from: str | None = None
    encoder_weights: str | None = None
    val_overlap: float = 0.25
    deterministic: bool = False
    amp: bool = True
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.augmentation, dict):
            aug = dict(self.augmentation)
            for key in ("elastic_sigma_vox", "elastic_magnitude_vox", "bias_coeff_range"):
                if key in aug:
                    aug[key] = tuple(aug[key])
            self.augmentation = AugmentationConfig(**aug)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.spacing_mm is not None:
            self.spacing_mm = tuple(float(s) for s in self.spacing_mm)
        if self.init_from is not None:
            self.init_from = str(self.init_from)
        if self.encoder_weights is not None:
            self.encoder_weights = str(self.encoder_weights)
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries, got {self.patch_size}")
        if self.scheduler not in ("poly", "constant"):
            raise ValueError(f"scheduler must be 'poly' or 'constant', got {self.scheduler!r}")
        if self.cache not in ("memory", "disk", "none"):
            raise ValueError(f"cache must be 'memory', 'disk' or 'none', got {self.cache!r}")
        if self.epochs < 1 or self.iterations_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, iterations_per_epoch and batch_size must be >= 1")

    @classmethod
    def paper_adult(cls, **overrides: Any) -> "TrainConfig":
        """The paper's adult training: Adam lr 0.01, 200 epochs."""
        return cls(**{"epochs": 200, "lr": 0.01, **overrides})

    @classmethod
    def paper_finetune(cls, init_from: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        """The paper's fine-tuning: 100 epochs starting from ``init_from``."""
        return cls(**{"epochs": 100, "lr": 0.01, "init_from": str(init_from), **overrides})

    @classmethod
    def from_profile(cls, profile: str, stage: str = "adult", **overrides: Any) -> "TrainConfig":
        """Settings of an ``experiments.yaml`` profile; ``stage`` in 'adult', 'finetune', 'child_only'."""
        from lesionlib.config import load_profile

        p = load_profile(profile)
        epochs_key = {"adult": "epochs_adult", "finetune": "epochs_finetune", "child_only": "epochs_child_only"}
        if stage not in epochs_key:
            raise ValueError(f"stage must be one of {sorted(epochs_key)}, got {stage!r}")
        res = float(p["resolution_mm"])
        settings: dict[str, Any] = {
            "epochs": int(p[epochs_key[stage]]),
            "iterations_per_epoch": int(p["iterations_per_epoch"]),
            "batch_size": int(p["batch_size"]),
            "patch_size": tuple(p["patch_size"]),
            "spacing_mm": (res, res, res),
            "device": p.get("device", "auto"),
        }
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict (tuples become lists, recursively)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples -> lists, Paths -> str, recursively (for YAML and for comparing configurations)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (Path, str)):
        return str(value)  # also plain-str subclasses such as torch's version string
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class RunResult:
    """What :func:`train` returns."""

    out_dir: Path
    params: dict[str, Any]
    history: pd.DataFrame
    epochs_completed: int
    best_epoch: int | None
    best_val_dice: float | None
    encoder_pretrained: bool
    checkpoint_last: Path
    checkpoint_best: Path


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def ras_spacing_mm(path: os.PathLike | str) -> tuple[float, float, float]:
    """Voxel size (mm) along the R, A, S axes of the image once reoriented to RAS (header only)."""
    img = nib.load(str(path))
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    ornt = nib.io_orientation(img.affine)
    out = [0.0, 0.0, 0.0]
    for in_axis, (out_axis, _flip) in enumerate(ornt):
        out[int(out_axis)] = float(zooms[in_axis])
    return tuple(out)  # type: ignore[return-value]


def _median_spacing(records: Sequence[ImageRecord]) -> tuple[float, float, float]:
    spacings = np.array([ras_spacing_mm(r.image_path) for r in records])
    return tuple(float(round(v, 4)) for v in np.median(spacings, axis=0))  # type: ignore[return-value]


def _poly_factor(epoch: int, total: int, power: float = 0.9) -> float:
    return max(0.0, 1.0 - epoch / max(total, 1)) ** power


def _constant_factor(epoch: int) -> float:
    return 1.0


def _rng_states(device: torch.device) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_yaml(data: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(data), sort_keys=False))


def _write_history(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"])
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df


def load_checkpoint(path: os.PathLike | str) -> dict[str, Any]:
    """Read a lesionlib checkpoint (our own files: full unpickling is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model_name" not in ckpt:
        raise ValueError(f"{path}: not a lesionlib training checkpoint (no model_state/model_name)")
    return ckpt


def model_from_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint with its weights; returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model_state"])
    model.encoder_pretrained = bool(ckpt.get("encoder_pretrained", False))
    return model.to(device).eval(), ckpt


def _set_encoder_trainable(model: torch.nn.Module, trainable: bool) -> None:
    for module in model.encoder_modules():
        for p in module.parameters():
            p.requires_grad_(trainable)


def _train_mode(model: torch.nn.Module, freeze_encoder: bool) -> None:
    model.train()
    if freeze_encoder:  # frozen layers keep their batch-norm statistics too
        for module in model.encoder_modules():
            module.eval()


def _cached_dataset(items: list[dict], transform, config: TrainConfig, spacing: Sequence[float],
                    name: str) -> Sequence[dict]:
    if config.cache == "memory":
        return CacheDataset(items, transform=transform, num_workers=max(config.num_workers, 1),
                            progress=config.progress, copy_cache=False)
    if config.cache == "disk":
        from lesionlib.config import results_root

        base = Path(config.cache_dir) if config.cache_dir else results_root() / "cache" / "preprocessed"
        key = "spacing-" + "x".join(f"{s:g}" for s in spacing) + "_pad-" + "x".join(map(str, config.patch_size))
        return PersistentDataset(items, transform=transform, cache_dir=base / key / name)
    return Dataset(items, transform=transform)


def _items(records: Sequence[ImageRecord]) -> list[dict]:
    items = []
    for rec in records:
        item = record_to_item(rec)
        stat = Path(rec.image_path).stat()
        item["stamp"] = f"{stat.st_mtime_ns}-{stat.st_size}"  # disk cache invalidation on changed files
        items.append(item)
    return items


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def validate(model: torch.nn.Module, volumes: Sequence[dict], patch_size: Sequence[int], loss_fn: torch.nn.Module,
             device: torch.device, *, batch_size: int = 2, overlap: float = 0.25,
             amp: bool = True) -> tuple[float, float]:
    """Mean full-volume loss and Dice (lesion class) over preprocessed ``volumes``.

    Sliding-window inference with Gaussian weighting; Dice is 1 when prediction and truth are
    both empty. Returns ``(nan, nan)`` for no volumes.
    """
    if len(volumes) == 0:
        return math.nan, math.nan
    model.eval()
    losses, dices = [], []
    with torch.no_grad():
        for i in range(len(volumes)):
            item = volumes[i]
            image = torch.as_tensor(item["image"]).as_subclass(torch.Tensor)[None].to(device)
            label = torch.as_tensor(item["label"]).as_subclass(torch.Tensor)[None].to(device)
            with _autocast(device, amp):
                logits = sliding_window_inference(image, tuple(patch_size), sw_batch_size=batch_size,
                                                  predictor=model, overlap=overlap, mode="gaussian")
            logits = torch.as_tensor(logits).as_subclass(torch.Tensor).float()
            losses.append(float(loss_fn(logits, label)))
            pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes=2)
            dices.append(float(compute_dice(pred, one_hot(label.long(), num_classes=2), include_background=False,
                                            ignore_empty=False).mean()))
    return float(np.mean(losses)), float(np.mean(dices))


def _check_resume_compatible(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
             for k in _RUN_DEFINING if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"{path}: cannot resume, the configuration changed ({'; '.join(diffs)}); "
                         "use another out_dir or resume=False with a fresh folder")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------

def train(config: TrainConfig, train_records: Sequence[ImageRecord], val_records: Sequence[ImageRecord],
          out_dir: os.PathLike | str, *, split_info: dict[str, Any] | None = None,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``config.model`` on ``train_records``, validating on ``val_records`` every epoch.

    Parameters
    ----------
    config
        :class:`TrainConfig`.
    train_records, val_records
        Records with masks; validation may be empty (then ``checkpoint_best`` = lowest train loss).
    out_dir
        Run folder (see the module docstring). An existing ``checkpoint_last.pt`` is resumed
        when ``config.resume`` (the run-defining settings must match).
    split_info
        Extra split description stored under ``split`` in ``params.yaml`` (e.g. a few-shot
        selection); the train/val case ids are always stored.
    on_epoch_end
        Called as ``on_epoch_end(epoch, history_row)`` after each epoch's checkpoint is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not train_records:
        raise ValueError("train() needs at least one training record")
    check_record_files([*train_records, *val_records], need_mask=True)
    package_logger = logging.getLogger("lesionlib")
    previous_level = package_logger.level
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)  # the run's log file gets INFO even if the console does not
    file_handler = logging.FileHandler(out_dir / "train.log")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(file_handler)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(config, list(train_records), list(val_records), out_dir, split_info or {}, on_epoch_end)
    finally:
        package_logger.removeHandler(file_handler)
        package_logger.setLevel(previous_level)
        file_handler.close()
        torch.use_deterministic_algorithms(deterministic_before)


def _train(config: TrainConfig, train_records: list[ImageRecord], val_records: list[ImageRecord], out_dir: Path,
           split_info: dict[str, Any], on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> RunResult:
    device = resolve_device(config.device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    last_path, best_path = out_dir / CHECKPOINT_LAST, out_dir / CHECKPOINT_BEST
    resume_ckpt = None
    if last_path.exists():
        if not config.resume:
            raise FileExistsError(f"{last_path}: a run already exists here; set resume=True or use another folder")
        resume_ckpt = load_checkpoint(last_path)

    spacing = config.spacing_mm or (tuple(resume_ckpt["spacing_mm"]) if resume_ckpt else _median_spacing(train_records))
    if config.spacing_mm is None:
        config = dataclasses.replace(config, spacing_mm=tuple(spacing))
    if resume_ckpt is not None and config.init_from is not None and not config.model_kwargs:
        config = dataclasses.replace(config, model_kwargs=dict(resume_ckpt["model_kwargs"]))
    if resume_ckpt is not None:
        _check_resume_compatible(resume_ckpt["config"], config, last_path)

    # ---- model -----------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    parent: dict[str, Any] | None = None
    encoder_weights_used: str | None = None
    if config.init_from is not None and resume_ckpt is None:
        parent_ckpt = load_checkpoint(config.init_from)
        if parent_ckpt["model_name"] != config.model:
            raise ValueError(f"{config.init_from}: checkpoint holds a {parent_ckpt['model_name']!r} model, "
                             f"config asks for {config.model!r}")
        model_kwargs = dict(parent_ckpt["model_kwargs"])
        if config.model_kwargs and config.model_kwargs != model_kwargs:
            raise ValueError(f"{config.init_from}: model_kwargs {model_kwargs} differ from config {config.model_kwargs}")
        config = dataclasses.replace(config, model_kwargs=model_kwargs)
        model = build_model(config.model, **model_kwargs)
        model.load_state_dict(parent_ckpt["model_state"])
        encoder_pretrained = bool(parent_ckpt.get("encoder_pretrained", False))
        parent = {"checkpoint": str(Path(config.init_from).resolve()), "run_dir": parent_ckpt.get("run_dir"),
                  "epoch": parent_ckpt.get("epoch"), "encoder_pretrained": encoder_pretrained}
        log.info("fine-tuning from %s (epoch %s)", config.init_from, parent_ckpt.get("epoch"))
    elif resume_ckpt is not None:
        model = build_model(config.model, **config.model_kwargs)
        encoder_pretrained = bool(resume_ckpt["encoder_pretrained"])
        parent = resume_ckpt.get("parent")
        encoder_weights_used = resume_ckpt.get("encoder_weights")
    else:
        model = build_model(config.model, **config.model_kwargs)
        if hasattr(model, "encoder") and config.model == "resunet":
            weights = config.encoder_weights or default_weights_path()
            if weights is not None:
                load_medicalnet_weights(model, weights)
                encoder_weights_used = str(weights)
            else:
                log.warning("resunet: no MedicalNet weights given (TrainConfig.encoder_weights or manifest asset "
                            "'medicalnet_resnet10'); the encoder starts from random weights "
                            "(recorded as encoder_pretrained: false)")
        encoder_pretrained = bool(getattr(model, "encoder_pretrained", False))
    divisor = int(getattr(model, "size_divisor", 1))
    if any(p % divisor for p in config.patch_size):
        raise ValueError(f"patch_size {config.patch_size} must be a multiple of {divisor} for model {config.model!r}")
    model.encoder_pretrained = encoder_pretrained
    model.to(device)
    if config.freeze_encoder:
        _set_encoder_trainable(model, False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    factor = (functools.partial(_poly_factor, total=config.epochs) if config.scheduler == "poly" else _constant_factor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
    loss_fn = build_loss()

    history: list[dict[str, Any]] = []
    best_score, best_epoch = -math.inf, None
    start_epoch = 0
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model_state"])
        optimizer.load_state_dict(resume_ckpt["optimizer_state"])
        scheduler.load_state_dict(resume_ckpt["scheduler_state"])
        _set_rng_states(resume_ckpt["rng_states"])
        history = list(resume_ckpt["history"])
        best_score, best_epoch = resume_ckpt["best_score"], resume_ckpt["best_epoch"]
        start_epoch = int(resume_ckpt["sampler"]["next_epoch"])
        log.info("resuming %s at epoch %d of %d", out_dir, start_epoch, config.epochs)

    params = {
        "config": config.to_dict(),
        "model": config.model,
        "encoder_pretrained": encoder_pretrained,
        "encoder_weights": encoder_weights_used,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "n_trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "spacing_mm": list(spacing),
        "split": {"train": [f"{r.dataset}/{r.case_id}" for r in train_records],
                  "val": [f"{r.dataset}/{r.case_id}" for r in val_records], **split_info},
        "parent": parent,
        "device": str(device),
        "precision": "bf16-autocast" if (device.type == "cuda" and config.amp) else "fp32",
        "versions": {"torch": torch.__version__, "monai": __import__("monai").__version__},
        "status": "running",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if resume_ckpt is not None and (out_dir / PARAMS_YAML).exists():
        earlier = yaml.safe_load((out_dir / PARAMS_YAML).read_text()) or {}
        params["started"] = earlier.get("started", params["started"])
        params["resumed"] = [*earlier.get("resumed", []), {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "from_epoch": start_epoch}]
    _write_yaml(params, out_dir / PARAMS_YAML)

    # ---- data ------------------------------------------------------------------------------
    samples_per_epoch = config.iterations_per_epoch * config.batch_size
    if start_epoch < config.epochs:
        prep = preprocessing(spacing, config.patch_size)
        train_volumes = _cached_dataset(_items(train_records), prep, config, spacing, "train")
        val_volumes = _cached_dataset(_items(val_records), prep, config, spacing, "val") if val_records else []
        patches = PatchDataset(train_volumes, config.patch_size, samples_per_epoch, config.epochs, config.seed,
                               foreground_fraction=config.foreground_fraction,
                               augment=augmentation(config.augmentation))
        loader = torch.utils.data.DataLoader(
            patches, batch_size=config.batch_size,
            sampler=range(start_epoch * samples_per_epoch, config.epochs * samples_per_epoch),
            num_workers=config.num_workers, pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        batches = iter(loader)

    # ---- epochs ----------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        _train_mode(model, config.freeze_encoder)
        lr = optimizer.param_groups[0]["lr"]
        running = []
        bar = tqdm(range(config.iterations_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not config.progress, leave=False, unit="it")
        for _ in bar:
            batch = next(batches)
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, config.amp):
                logits = model(image)
            loss = loss_fn(logits.float(), label)
            loss.backward()
            optimizer.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{running[-1]:.4f}")
        scheduler.step()
        val_loss, val_dice = validate(model, val_volumes, config.patch_size, loss_fn, device,
                                      batch_size=config.batch_size, overlap=config.val_overlap, amp=config.amp)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(running)), "val_loss": val_loss, "val_dice": val_dice,
               "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        score = val_dice if val_records else -row["train_loss"]
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val Dice %.4f%s", epoch + 1, config.epochs,
                 row["train_loss"], val_loss, val_dice, " (best)" if improved else "")
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "model_name": config.model,
            "model_kwargs": dict(config.model_kwargs),
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(),
            "rng_states": _rng_states(device),
            "sampler": {"next_epoch": epoch + 1, "next_slot": 0, "samples_per_epoch": samples_per_epoch,
                        "seed": config.seed},
            "epoch": epoch + 1,
            "history": history,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "config": config.to_dict(),
            "spacing_mm": list(spacing),
            "patch_size": list(config.patch_size),
            "encoder_pretrained": encoder_pretrained,
            "encoder_weights": encoder_weights_used,
            "parent": parent,
            "run_dir": str(out_dir.resolve()),
        }
        if improved:
            _save_atomic(ckpt, best_path)
        _save_atomic(ckpt, last_path)
        _write_history(history, out_dir / HISTORY_CSV)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    history_df = _write_history(history, out_dir / HISTORY_CSV)
    best_val = None
    if best_epoch is not None and val_records:
        best_val = float(history_df.loc[history_df["epoch"] == best_epoch, "val_dice"].iloc[0])
    params.update({"status": "complete", "epochs_completed": len(history), "best_epoch": best_epoch,
                   "best_val_dice": best_val,
                   "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    _write_yaml(params, out_dir / PARAMS_YAML)
    return RunResult(out_dir=out_dir, params=params, history=history_df, epochs_completed=len(history),
                     best_epoch=best_epoch, best_val_dice=best_val, encoder_pretrained=encoder_pretrained,
                     checkpoint_last=last_path, checkpoint_best=best_path)
