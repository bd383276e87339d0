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

import datetime as _dt
import functools
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import atomic_path
from lesionlib.losses import build_loss
from lesionlib.models import build_model
from lesionlib.resources import CacheDecision, resolve_cache
from lesionlib.samplers import PatchDataset
from lesionlib.training_settings import OptimisationSettings
from lesionlib.transforms import augmentation, check_record_files, preprocessing, record_to_item

__all__ = [
    "TrainConfig",
    "autocast",
    "RunResult",
    "train",
    "load_checkpoint",
    "model_from_checkpoint",
    "ras_spacing_mm",
    "resolve_device",
    "on_device",
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
                 "weight_decay", "lr_schedule", "seed", "foreground_fraction", "augmentation", "freeze_encoder",
                 "init_from", "val_overlap", "val_every", "inference_patch_size")


class TrainConfig(OptimisationSettings):
    """Everything one training run depends on: the optimisation settings plus the run's identity.

    The optimisation fields and their defaults (Adam lr 0.01 fixed, batch 2, patches, augmentation...)
    are those of :class:`lesionlib.training_settings.OptimisationSettings`; a profile's method
    section resolves into a ``TrainConfig`` per cell (:mod:`lesionlib.segmenters.monai_nets`).

    Attributes
    ----------
    model, model_kwargs
        Registry name (``'unet'``, ``'resunet'``) and constructor arguments (:mod:`lesionlib.models`).
    epochs, iterations_per_epoch
        An epoch is ``iterations_per_epoch`` optimiser steps on batches of ``batch_size`` patches.
    spacing_mm
        Resampling target (mm, RAS axes); ``None`` = median spacing of the training images.
    seed
        Seeds weight initialisation and the whole data stream.
    device
        ``'auto'`` (CUDA if available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
    cache_dir
        Folder of the ``'disk'`` cache (default ``<results>/cache/preprocessed``). ``cache: auto`` (the
        default of :class:`~lesionlib.training_settings.OptimisationSettings`) is resolved at the start of
        :func:`train` (:func:`lesionlib.resources.resolve_cache`), logged, and recorded in ``params.yaml``
        under ``cache``; the run's ``config.cache`` is then the chosen value.
    freeze_encoder
        Keep the encoder's weights (and batch-norm statistics) fixed.
    init_from
        Checkpoint to start from (fine-tuning); recorded as the parent run.
    encoder_weights
        Pretrained encoder file given to the model registry (MedicalNet ResNet-10 for ``resunet``);
        ``None``: the encoder starts from random weights (recorded as ``encoder_pretrained: false``).
    deterministic
        ``torch.use_deterministic_algorithms`` (needed for bitwise resume on CUDA; slower).
    resume
        Continue from ``out_dir/checkpoint_last.pt`` if it exists (else refuse to overwrite).
    progress
        tqdm progress bars.
    """

    model: str = "unet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(1, ge=1)
    iterations_per_epoch: int = Field(1, ge=1)
    spacing_mm: tuple[float, float, float] | None = None
    seed: int = 0
    device: str = "auto"
    cache_dir: str | None = None
    freeze_encoder: bool = False
    init_from: str | None = None
    encoder_weights: str | None = None
    deterministic: bool = False
    resume: bool = True
    progress: bool = True

    @field_validator("init_from", "encoder_weights", "cache_dir", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @field_validator("model_kwargs", mode="before")
    @classmethod
    def _plain_kwargs(cls, value: Any) -> Any:
        return _plain(dict(value or {}))  # tuples -> lists, so a configuration equals its YAML round trip

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict (tuples become lists, recursively)."""
        return _plain(self.model_dump(mode="json"))


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
    cache: dict[str, Any] | None = None  # CacheDecision.to_dict(): the cache used and why


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


def on_device(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` on ``device``; on the CPU with its 3D convolution weights in channels-last layout.

    oneDNN's CPU convolutions are faster in channels-last (NDHWC) layout: a training step of 48^3 patches
    measured 0.47 -> 0.30 s for the quick Res-U-Net and 0.26 -> 0.22 s for the quick U-Net
    (``benchmarks/bench_networks.py``). The layout changes how the arithmetic is ordered, not what is computed;
    checkpoints load either way. CUDA keeps PyTorch's default layout.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return model.to(device, memory_format=torch.channels_last_3d)
    return model.to(device)


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
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign files raise several types (RuntimeError, EOFError, pickle)
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc}); train its cell "
                         "again (delete the run folder and run `make book`)") from exc
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model_name" not in ckpt:
        raise ValueError(f"{path}: not a lesionlib training checkpoint (no model_state/model_name)")
    return ckpt


def model_from_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint with its weights; returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model_state"])
    model.encoder_pretrained = bool(ckpt.get("encoder_pretrained", False))
    return on_device(model, device).eval(), ckpt


def _set_encoder_trainable(model: torch.nn.Module, trainable: bool) -> None:
    for module in model.encoder_modules():
        for p in module.parameters():
            p.requires_grad_(trainable)


def _train_mode(model: torch.nn.Module, freeze_encoder: bool) -> None:
    model.train()
    if freeze_encoder:  # frozen layers keep their batch-norm statistics too
        for module in model.encoder_modules():
            module.eval()


def _disk_cache_base(config: TrainConfig) -> Path:
    from lesionlib.config import results_root

    return Path(config.cache_dir) if config.cache_dir else results_root() / "cache" / "preprocessed"


def _resolve_cache(config: TrainConfig, records: Sequence[ImageRecord]) -> tuple[TrainConfig, CacheDecision]:
    """``config`` with ``cache`` resolved (``auto`` -> memory / disk / none from the estimated size of the
    cached training and validation volumes against the available memory), and the decision, logged."""
    decision = resolve_cache(config.cache, [r.image_path for r in records], spacing_mm=config.spacing_mm,
                             patch_size=config.patch_size, num_workers=config.num_workers,
                             cache_dir=_disk_cache_base(config))
    log.info("%s", decision.message())
    return config.model_copy(update={"cache": decision.cache}), decision


def _cached_dataset(items: list[dict], transform, config: TrainConfig, name: str) -> Sequence[dict]:
    if config.cache == "auto":
        raise ValueError("cache 'auto' must be resolved first (_resolve_cache)")
    if config.cache == "memory":
        return CacheDataset(items, transform=transform, num_workers=max(config.num_workers, 1),
                            progress=config.progress, copy_cache=False)
    if config.cache == "disk":
        key = "spacing-" + "x".join(f"{s:g}" for s in config.spacing_mm or ()) + "_pad-" + "x".join(map(str, config.patch_size))
        return PersistentDataset(items, transform=transform, cache_dir=_disk_cache_base(config) / key / name)
    return Dataset(items, transform=transform)


def _items(records: Sequence[ImageRecord]) -> list[dict]:
    items = []
    for rec in records:
        item = record_to_item(rec)
        stat = Path(rec.image_path).stat()
        item["stamp"] = f"{stat.st_mtime_ns}-{stat.st_size}"  # disk cache invalidation on changed files
        items.append(item)
    return items


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on CUDA when ``enabled``; a disabled context on any other device (fp32 on CPU)."""
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
            with autocast(device, amp):
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
# the loop, in named steps
# ---------------------------------------------------------------------------------------------

@dataclass
class _ModelState:
    """The model a run trains, and where its weights came from."""

    model: torch.nn.Module
    config: TrainConfig
    encoder_pretrained: bool
    encoder_weights: str | None
    parent: dict[str, Any] | None


@dataclass
class _Progress:
    """What a run has done so far (restored on resume)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int | None = None
    start_epoch: int = 0


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
        Every file is validated first (:func:`lesionlib.transforms.check_record_files`): nothing is
        trained on a file that validation rejects.
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
    if not train_records:
        raise ValueError("train() needs at least one training record")
    check_record_files([*train_records, *val_records], need_mask=True)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    device = _setup_device(config)
    resume_ckpt = _resume_checkpoint(config, out_dir)
    spacing = config.spacing_mm or (tuple(resume_ckpt["spacing_mm"]) if resume_ckpt else _median_spacing(train_records))
    config = config.model_copy(update={"spacing_mm": tuple(spacing)})
    state = _build_model(config, resume_ckpt, out_dir)
    config, model = state.config, on_device(state.model, device)
    config, cache = _resolve_cache(config, [*train_records, *val_records])
    if config.freeze_encoder:
        _set_encoder_trainable(model, False)
    optimizer, scheduler = _optimiser(config, model)
    progress = _restore(resume_ckpt, model, optimizer, scheduler, out_dir, config)
    params = _start_params(config, state, train_records, val_records, split_info, device, out_dir, progress, cache)
    loss_fn = build_loss()
    if progress.start_epoch < config.epochs:
        batches, val_volumes = _data_stream(config, train_records, val_records, progress.start_epoch, device)
    for epoch in range(progress.start_epoch, config.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = _train_one_epoch(model, batches, optimizer, loss_fn, config, device, epoch)
        scheduler.step()
        validating = (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
        val_loss, val_dice = validate(model, val_volumes if validating else [], config.window, loss_fn, device,
                                      batch_size=config.batch_size, overlap=config.val_overlap, amp=config.amp)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
               "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
        improved = _record_epoch(progress, row, has_validation=bool(val_records)) if validating or not val_records \
            else _append_epoch(progress, row)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val Dice %.4f%s", epoch + 1, config.epochs,
                 train_loss, val_loss, val_dice, " (best)" if improved else "")
        _save_epoch(_checkpoint(config, state, model, optimizer, scheduler, device, progress, epoch, out_dir),
                    out_dir, progress.history, improved)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    return _finish(config, state, params, progress, out_dir, bool(val_records))


def _setup_device(config: TrainConfig) -> torch.device:
    device = resolve_device(config.device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def _resume_checkpoint(config: TrainConfig, out_dir: Path) -> dict[str, Any] | None:
    """The run's ``checkpoint_last.pt`` if it exists (``FileExistsError`` when resuming is off)."""
    last_path = out_dir / CHECKPOINT_LAST
    if not last_path.exists():
        return None
    if not config.resume:
        raise FileExistsError(f"{last_path}: a run already exists here; set resume=True or use another folder")
    return load_checkpoint(last_path)


def _build_model(config: TrainConfig, resume_ckpt: dict[str, Any] | None, out_dir: Path) -> _ModelState:
    """Seed, then build the model: from the parent checkpoint (fine-tuning), for a resume, or fresh.

    A fresh model gets its pretrained encoder (``config.encoder_weights``) through the model
    registry. Raises ``ValueError`` when the configuration cannot be resumed or fine-tuned.
    """
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    if resume_ckpt is not None:
        if config.init_from is not None and not config.model_kwargs:
            config = config.model_copy(update={"model_kwargs": dict(resume_ckpt["model_kwargs"])})
        _check_resume_compatible(resume_ckpt["config"], config, out_dir / CHECKPOINT_LAST)
        model = build_model(config.model, **config.model_kwargs)
        state = _ModelState(model, config, bool(resume_ckpt["encoder_pretrained"]),
                            resume_ckpt.get("encoder_weights"), resume_ckpt.get("parent"))
    elif config.init_from is not None:
        parent_ckpt = load_checkpoint(config.init_from)
        if parent_ckpt["model_name"] != config.model:
            raise ValueError(f"{config.init_from}: checkpoint holds a {parent_ckpt['model_name']!r} model, "
                             f"config asks for {config.model!r}")
        model_kwargs = dict(parent_ckpt["model_kwargs"])
        if config.model_kwargs and config.model_kwargs != model_kwargs:
            raise ValueError(f"{config.init_from}: model_kwargs {model_kwargs} differ from config {config.model_kwargs}")
        config = config.model_copy(update={"model_kwargs": model_kwargs})
        model = build_model(config.model, **model_kwargs)
        model.load_state_dict(parent_ckpt["model_state"])
        pretrained = bool(parent_ckpt.get("encoder_pretrained", False))
        parent = {"checkpoint": str(Path(config.init_from).resolve()), "run_dir": parent_ckpt.get("run_dir"),
                  "epoch": parent_ckpt.get("epoch"), "encoder_pretrained": pretrained}
        log.info("fine-tuning from %s (epoch %s)", config.init_from, parent_ckpt.get("epoch"))
        state = _ModelState(model, config, pretrained, parent_ckpt.get("encoder_weights"), parent)
    else:
        model = build_model(config.model, encoder_weights=config.encoder_weights, **config.model_kwargs)
        state = _ModelState(model, config, bool(getattr(model, "encoder_pretrained", False)), config.encoder_weights,
                            None)
    divisor = int(getattr(state.model, "size_divisor", 1))
    for name, size in (("patch_size", config.patch_size), ("inference_patch_size", config.window)):
        if any(p % divisor for p in size):
            raise ValueError(f"{name} {tuple(size)} must be a multiple of {divisor} for model {config.model!r}")
    state.model.encoder_pretrained = state.encoder_pretrained
    return state


def _optimiser(config: TrainConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """Adam over the trainable parameters and the per-epoch learning-rate schedule."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel over all parameters; a third of a CPU step for the 17 M-parameter Res-U-Net otherwise
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    factor = (functools.partial(_poly_factor, total=config.epochs) if config.lr_schedule == "poly"
              else _constant_factor)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


def _restore(resume_ckpt: dict[str, Any] | None, model: torch.nn.Module, optimizer: Any, scheduler: Any,
             out_dir: Path, config: TrainConfig) -> _Progress:
    """Weights, optimiser, schedule, RNG states and history of the checkpoint being resumed."""
    if resume_ckpt is None:
        return _Progress()
    model.load_state_dict(resume_ckpt["model_state"])
    optimizer.load_state_dict(resume_ckpt["optimizer_state"])
    scheduler.load_state_dict(resume_ckpt["scheduler_state"])
    _set_rng_states(resume_ckpt["rng_states"])
    progress = _Progress(list(resume_ckpt["history"]), resume_ckpt["best_score"], resume_ckpt["best_epoch"],
                         int(resume_ckpt["sampler"]["next_epoch"]))
    log.info("resuming %s at epoch %d of %d", out_dir, progress.start_epoch, config.epochs)
    return progress


def _start_params(config: TrainConfig, state: _ModelState, train_records: list[ImageRecord],
                  val_records: list[ImageRecord], split_info: dict[str, Any], device: torch.device, out_dir: Path,
                  progress: _Progress, cache: CacheDecision) -> dict[str, Any]:
    """The run's ``params.yaml`` at start (status ``running``; resumes appended under ``resumed``)."""
    model = state.model
    params = {
        "config": config.to_dict(),
        "model": config.model,
        "encoder_pretrained": state.encoder_pretrained,
        "encoder_weights": state.encoder_weights,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "n_trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "spacing_mm": list(config.spacing_mm or ()),
        "split": {"train": [f"{r.dataset}/{r.case_id}" for r in train_records],
                  "val": [f"{r.dataset}/{r.case_id}" for r in val_records], **split_info},
        "parent": state.parent,
        "device": str(device),
        "precision": "bf16-autocast" if (device.type == "cuda" and config.amp) else "fp32",
        "cache": cache.to_dict(),
        "versions": {"torch": torch.__version__, "monai": __import__("monai").__version__},
        "status": "running",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if progress.start_epoch > 0 and (out_dir / PARAMS_YAML).exists():
        earlier = yaml.safe_load((out_dir / PARAMS_YAML).read_text()) or {}
        params["started"] = earlier.get("started", params["started"])
        params["resumed"] = [*earlier.get("resumed", []), {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "from_epoch": progress.start_epoch}]
    _write_yaml(params, out_dir / PARAMS_YAML)
    return params


def _data_stream(config: TrainConfig, train_records: list[ImageRecord], val_records: list[ImageRecord],
                 start_epoch: int, device: torch.device) -> tuple[Iterator[dict], Sequence[dict]]:
    """Batches of augmented patches from ``start_epoch`` on, and the preprocessed validation volumes."""
    samples_per_epoch = config.iterations_per_epoch * config.batch_size
    prep = preprocessing(config.spacing_mm, config.patch_size)
    train_volumes = _cached_dataset(_items(train_records), prep, config, "train")
    val_volumes = _cached_dataset(_items(val_records), prep, config, "val") if val_records else []
    patches = PatchDataset(train_volumes, config.patch_size, samples_per_epoch, config.epochs, config.seed,
                           foreground_fraction=config.foreground_fraction, augment=augmentation(config.augmentation))
    loader = torch.utils.data.DataLoader(
        patches, batch_size=config.batch_size,
        sampler=range(start_epoch * samples_per_epoch, config.epochs * samples_per_epoch),
        num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=False,
    )
    return iter(loader), val_volumes


def _train_one_epoch(model: torch.nn.Module, batches: Iterator[dict], optimizer: torch.optim.Optimizer,
                     loss_fn: torch.nn.Module, config: TrainConfig, device: torch.device, epoch: int) -> float:
    """``config.iterations_per_epoch`` optimiser steps; returns the mean training loss."""
    _train_mode(model, config.freeze_encoder)
    running = []
    bar = tqdm(range(config.iterations_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not config.progress, leave=False, unit="it")
    for _ in bar:
        batch = next(batches)
        image = batch["image"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, config.amp):
            logits = model(image)
        loss = loss_fn(logits.float(), label)
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        bar.set_postfix(loss=f"{running[-1]:.4f}")
    return float(np.mean(running))


def _append_epoch(progress: _Progress, row: dict[str, Any]) -> bool:
    """Append an epoch without validation (it cannot be the best); returns ``False``."""
    progress.history.append(row)
    return False


def _record_epoch(progress: _Progress, row: dict[str, Any], *, has_validation: bool) -> bool:
    """Append ``row`` to the history; returns whether it is the best epoch so far (validation Dice,
    or the lowest training loss without validation data)."""
    progress.history.append(row)
    score = row["val_dice"] if has_validation else -row["train_loss"]
    if score > progress.best_score:
        progress.best_score, progress.best_epoch = score, row["epoch"]
        return True
    return False


def _checkpoint(config: TrainConfig, state: _ModelState, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                device: torch.device, progress: _Progress, epoch: int, out_dir: Path) -> dict[str, Any]:
    """Everything needed to resume exactly after ``epoch`` (0-based) or to rebuild the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": config.model,
        "model_kwargs": dict(config.model_kwargs),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "rng_states": _rng_states(device),
        "sampler": {"next_epoch": epoch + 1, "next_slot": 0,
                    "samples_per_epoch": config.iterations_per_epoch * config.batch_size, "seed": config.seed},
        "epoch": epoch + 1,
        "history": progress.history,
        "best_score": progress.best_score,
        "best_epoch": progress.best_epoch,
        "config": config.to_dict(),
        "spacing_mm": list(config.spacing_mm or ()),
        "patch_size": list(config.patch_size),
        "inference_patch_size": list(config.window),
        "encoder_pretrained": state.encoder_pretrained,
        "encoder_weights": state.encoder_weights,
        "parent": state.parent,
        "run_dir": str(out_dir.resolve()),
    }


def _save_epoch(ckpt: dict[str, Any], out_dir: Path, history: list[dict[str, Any]], improved: bool) -> None:
    if improved:
        _save_atomic(ckpt, out_dir / CHECKPOINT_BEST)
    _save_atomic(ckpt, out_dir / CHECKPOINT_LAST)
    _write_history(history, out_dir / HISTORY_CSV)


def _finish(config: TrainConfig, state: _ModelState, params: dict[str, Any], progress: _Progress, out_dir: Path,
            has_validation: bool) -> RunResult:
    history_df = _write_history(progress.history, out_dir / HISTORY_CSV)
    best_val = None
    if progress.best_epoch is not None and has_validation:
        best_val = float(history_df.loc[history_df["epoch"] == progress.best_epoch, "val_dice"].iloc[0])
    params.update({"status": "complete", "epochs_completed": len(progress.history), "best_epoch": progress.best_epoch,
                   "best_val_dice": best_val,
                   "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    _write_yaml(params, out_dir / PARAMS_YAML)
    return RunResult(out_dir=out_dir, params=params, history=history_df, epochs_completed=len(progress.history),
                     best_epoch=progress.best_epoch, best_val_dice=best_val,
                     encoder_pretrained=state.encoder_pretrained, checkpoint_last=out_dir / CHECKPOINT_LAST,
                     checkpoint_best=out_dir / CHECKPOINT_BEST, cache=params.get("cache"))
