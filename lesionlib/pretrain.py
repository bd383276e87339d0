"""The Res-U-Net's encoder pretrained on synthetic tissue segmentation: a stand-in for MedicalNet's weights.

MedicalNet (Chen et al. 2019) pretrained its ResNets on 3DSeg-8, eight public segmentation datasets of
organs and tissues, and the paper's Res-U-Net starts from that encoder. MedicalNet's file cannot be
downloaded here, so the project pretrains the same encoder on a segmentation task that its synthetic
generator labels for free: every voxel of a synthetic head is one of

====  ==========================================================
0     background (air, and the defaced region)
1     head outside the brain (scalp, fat, skull, meninges)
2     cerebrospinal fluid (ventricles, sulci, lesion cavities)
3     grey matter
4     white matter (and gliotic lesion rims)
====  ==========================================================

(the largest tissue fraction of the voxel). Lesions are present in the images but never labelled as such:
the encoder learns anatomy, not the task it is later trained for. The subjects come from a seed stream of
their own (:data:`PRETRAINING_SEED_OFFSET`), so none of them is a training, validation or test subject.

Like MedicalNet, only the encoder is kept: :func:`pretrain_encoder` trains a whole Res-U-Net with a
five-class head and saves its encoder in MedicalNet's release layout (``{'state_dict': {'module.conv1.weight',
...}}``), which :func:`lesionlib.models.medicalnet.load_medicalnet_weights` loads like MedicalNet's own file.
It runs once per profile as the Res-U-Net's shared preparation (:meth:`ResUNetSegmenter.prepare`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lesionlib.io import atomic_path

__all__ = ["TISSUE_CLASSES", "PRETRAINING_SEED_OFFSET", "TissueVolume", "tissue_labels", "pretraining_volumes",
           "pretrain_encoder"]

log = logging.getLogger(__name__)

TISSUE_CLASSES: tuple[str, ...] = ("background", "head", "csf", "grey matter", "white matter")
"""Label values 0..4 of the pretraining task."""

PRETRAINING_SEED_OFFSET = 7_000_003
"""Added to the profile's ``synth_seed``: the pretraining subjects' seed stream (disjoint from the cohorts')."""


@dataclass
class TissueVolume:
    """One pretraining subject: ``image`` float32 ``(X, Y, Z)`` z-scored over its nonzero voxels, ``labels``
    uint8 ``(X, Y, Z)`` in 0..4 (:data:`TISSUE_CLASSES`), both cropped to the nonzero box of the image (RAS,
    the synthetic cohort's grid)."""

    image: np.ndarray
    labels: np.ndarray


def tissue_labels(subject: Any) -> np.ndarray:
    """Per-voxel tissue class (uint8, 0..4) of a synthetic subject (:class:`lesionlib.synth.adult.AdultSubject`)."""
    t = subject.tissues
    wm = t.wm if t.gliosis is None else t.wm + t.gliosis
    head = np.clip(subject.foreground - t.brain, 0.0, None)
    background = np.clip(1.0 - subject.foreground, 0.0, None)
    labels = np.argmax(np.stack([background, head, t.csf, t.gm, wm]), axis=0).astype(np.uint8)
    if subject.defaced is not None:
        labels[subject.defaced] = 0
    labels[subject.image == 0] = 0
    return labels


def pretraining_volumes(n_subjects: int, *, resolution_mm: float, synth_seed: int = 0,
                        progress: bool = False) -> list[TissueVolume]:
    """Synthesise ``n_subjects`` labelled heads at ``resolution_mm`` (seconds each at 3 mm), in memory."""
    from tqdm.auto import tqdm

    from lesionlib.synth.adult import synthesize_adult_subject

    seed = int(synth_seed) + PRETRAINING_SEED_OFFSET
    volumes = []
    for index in tqdm(range(int(n_subjects)), desc="pretraining heads", unit="head", disable=not progress):
        subject = synthesize_adult_subject(index, seed=seed, resolution_mm=float(resolution_mm))
        labels = tissue_labels(subject)
        image = subject.image.astype(np.float32)
        nonzero = image != 0
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(nonzero))
        image, labels, nonzero = image[box], labels[box], nonzero[box]
        values = image[nonzero]
        image = np.where(nonzero, (image - values.mean()) / max(float(values.std()), 1e-6), 0.0).astype(np.float32)
        volumes.append(TissueVolume(image=image, labels=labels))
    return volumes


def _random_patches(volumes: Sequence[TissueVolume], patch: Sequence[int], batch_size: int,
                    rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for _ in range(batch_size):
        vol = volumes[int(rng.integers(len(volumes)))]
        image, label = vol.image, vol.labels
        if any(p > s for p, s in zip(patch, image.shape)):  # only volumes smaller than the patch are copied
            pad = [(0, max(0, p - s)) for p, s in zip(patch, image.shape)]
            image, label = np.pad(image, pad), np.pad(label, pad)
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(image.shape, patch)]
        box = tuple(slice(a, a + p) for a, p in zip(start, patch))
        flips = [axis for axis in range(3) if rng.random() < 0.5]
        images.append(np.flip(image[box], flips).copy())
        labels.append(np.flip(label[box], flips).copy())
    return (torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(labels)[:, None].astype(np.int64)))


def pretrain_encoder(out_path: Path | str, *, model_kwargs: dict[str, Any], resolution_mm: float, synth_seed: int = 0,
                     n_subjects: int = 16, steps: int = 300, patch_size: Sequence[int] = (48, 48, 48),
                     batch_size: int = 2, lr: float = 3e-3, seed: int = 0, device: str = "cpu",
                     progress: bool = False) -> dict[str, Any]:
    """Train a Res-U-Net (``model_kwargs``, five output classes) on synthetic tissue segmentation; save its encoder.

    Adam with a poly decay, Dice + cross-entropy over the five classes, random patches of ``patch_size``
    voxels with random flips. ``out_path`` receives the encoder's tensors in MedicalNet's release layout,
    written atomically. Returns a plain summary (subjects, steps, first and last losses, seconds,
    foreground Dice per class over the last 20 steps) for the preparation's record.
    """
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    from lesionlib.models import build_model
    from lesionlib.train import on_device

    torch.manual_seed(seed)
    rng = np.random.default_rng([int(seed), 4242])
    start = time.perf_counter()
    volumes = pretraining_volumes(n_subjects, resolution_mm=resolution_mm, synth_seed=synth_seed, progress=progress)
    synth_s = time.perf_counter() - start
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model = on_device(build_model("resunet", **{**model_kwargs, "out_channels": len(TISSUE_CLASSES)}), dev).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / max(steps, 1)) ** 0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    losses: list[float] = []
    dice_rows: list[np.ndarray] = []
    for _ in tqdm(range(int(steps)), desc="pretraining encoder", unit="step", disable=not progress):
        image, label = _random_patches(volumes, patch_size, batch_size, rng)
        image, label = image.to(dev), label.to(dev)
        logits = model(image)
        loss = loss_fn(logits, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if len(losses) > steps - 20:
            with torch.no_grad():
                pred = logits.argmax(1, keepdim=True)
                dice_rows.append(np.array([
                    float(2 * ((pred == c) & (label == c)).sum() / max(int((pred == c).sum() + (label == c).sum()), 1))
                    for c in range(1, len(TISSUE_CLASSES))]))
    state = {f"module.{k}": v.detach().cpu().contiguous().clone() for k, v in model.encoder.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        torch.save({"state_dict": state}, tmp)
    dice = np.mean(dice_rows, axis=0) if dice_rows else np.full(len(TISSUE_CLASSES) - 1, np.nan)
    summary = {
        "task": "synthetic tissue segmentation (" + ", ".join(TISSUE_CLASSES) + ")",
        "n_subjects": int(n_subjects), "seed_stream": int(synth_seed) + PRETRAINING_SEED_OFFSET,
        "resolution_mm": float(resolution_mm), "steps": int(steps), "patch_size": [int(p) for p in patch_size],
        "batch_size": int(batch_size), "lr": float(lr), "model": {k: list(v) if isinstance(v, (tuple, list)) else v
                                                                   for k, v in model_kwargs.items()},
        "loss_first": float(np.mean(losses[:10])) if losses else None,
        "loss_last": float(np.mean(losses[-10:])) if losses else None,
        "train_dice_last_steps": {name: round(float(d), 4) for name, d in zip(TISSUE_CLASSES[1:], dice)},
        "synthesis_s": round(synth_s, 1), "seconds": round(time.perf_counter() - start, 1),
        "weights": str(out_path),
    }
    log.info("encoder pretrained on synthetic tissue segmentation: %d steps, loss %.3f -> %.3f, %s (%.0f s) -> %s",
             steps, summary["loss_first"] or float("nan"), summary["loss_last"] or float("nan"),
             summary["train_dice_last_steps"], summary["seconds"], out_path)
    return summary
