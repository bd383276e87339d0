"""Loading MedicalNet (Med3D, trained on 3DSeg-8) ResNet-10 weights from a local file.

Accepted file layouts (``torch.save`` output):

* MedicalNet's own release: ``{'state_dict': {'module.conv1.weight': ..., ...}}`` (saved from a
  ``DataParallel`` model, hence the ``module.`` prefix), possibly with the segmentation head
  ``conv_seg.*``;
* a flat state dict ``{'conv1.weight': ..., ...}`` (with or without ``module.``), e.g. what
  MONAI's ``resnet10`` saves.

Head parameters (``conv_seg.*``, ``fc.*``) are ignored. Every encoder parameter must be present
with the encoder's shape; anything else is an error naming the file and the keys. Nothing is
ever downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lesionlib.io import DataValidationError

__all__ = ["MedicalNetWeightsError", "load_medicalnet_weights", "read_medicalnet_state_dict", "default_weights_path"]

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("conv_seg.", "fc.")
_MAX_LISTED = 8


class MedicalNetWeightsError(DataValidationError):
    """A MedicalNet weights file is missing, unreadable or does not fit the encoder.

    The message names the file and the problem (and the keys, for a mismatch). A
    :class:`~lesionlib.io.DataValidationError`, so the command line reports it as one line.
    """


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def read_medicalnet_state_dict(path: os.PathLike | str) -> dict[str, torch.Tensor]:
    """Read a weights file in either layout; return a flat state dict without ``module.`` prefixes.

    Raises
    ------
    MedicalNetWeightsError
        Missing or unreadable file, or content that is not a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MedicalNetWeightsError(path, "MedicalNet weights file does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/pickled files
        raise MedicalNetWeightsError(path, f"cannot be read as a torch checkpoint ({exc})") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise MedicalNetWeightsError(path, "expected a state dict or {'state_dict': ...}, found "
                                           f"{type(obj).__name__}")
    flat: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise MedicalNetWeightsError(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key[len("module."):] if key.startswith("module.") else key
        flat[name] = value
    return flat


def _encoder_of(model_or_encoder: nn.Module) -> nn.Module:
    encoder = getattr(model_or_encoder, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else model_or_encoder


def load_medicalnet_weights(model_or_encoder: nn.Module, path: os.PathLike | str) -> dict[str, Any]:
    """Load MedicalNet ResNet-10 weights into a :class:`ResUNet` (its ``encoder``) or a bare encoder.

    Parameters
    ----------
    model_or_encoder
        A model with an ``encoder`` attribute, or the encoder itself (MONAI ``ResNet`` layout).
    path
        Local ``.pth`` file in MedicalNet's or a flat layout.

    Returns
    -------
    dict
        ``{'path': str, 'n_tensors': int, 'ignored_keys': [...]}`` (head keys not loaded).

    Raises
    ------
    MedicalNetWeightsError
        Missing encoder keys, unexpected keys, or shape mismatches (all listed with shapes).

    On success sets ``encoder_pretrained = True`` on ``model_or_encoder``.
    """
    path = Path(path)
    weights = read_medicalnet_state_dict(path)
    encoder = _encoder_of(model_or_encoder)
    expected = encoder.state_dict()

    ignored = sorted(k for k in weights if k.startswith(HEAD_PREFIXES))
    provided = {k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIXES)}
    # BatchNorm's step counter is not part of MedicalNet's release; tolerate its absence.
    missing = sorted(k for k in expected if k not in provided and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in provided if k not in expected)
    mismatched = sorted(
        f"{k} (file {tuple(provided[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in provided
        if k in expected and tuple(provided[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if mismatched:
        problems.append(f"shape mismatch for {len(mismatched)} keys: {_listing(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} encoder keys missing from the file: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys not in a ResNet-10 encoder: {_listing(unexpected)}")
    if problems:
        raise MedicalNetWeightsError(
            path, "not MedicalNet ResNet-10 weights for this encoder (conv1 7x7x7, 1 input channel, "
                  "shortcut B): " + "; ".join(problems)
        )
    state = dict(expected)
    state.update({k: v.to(dtype=expected[k].dtype) for k, v in provided.items()})
    encoder.load_state_dict(state, strict=True)
    model_or_encoder.encoder_pretrained = True
    if encoder is not model_or_encoder:
        encoder.encoder_pretrained = True
    log.info("loaded MedicalNet encoder weights from %s (%d tensors, ignored %s)", path, len(provided),
             ignored or "nothing")
    return {"path": str(path), "n_tensors": len(provided), "ignored_keys": ignored}


def default_weights_path() -> Path | None:
    """The manifest's ``medicalnet_resnet10`` asset, or ``None`` when it is not configured.

    ``None`` only when nothing points at weights (the manifest has no such asset, or neither
    ``$MEDICALNET_RESNET10`` nor a ``default_path`` is set); the caller records "no weights".
    Anything configured but broken is an error, never a silent fall-back to random encoder weights.

    Raises
    ------
    ManifestError
        The manifest itself is missing or malformed.
    DataValidationError
        The configured file does not exist or fails its sha256 check (raised by the manifest).
    MedicalNetWeightsError
        The configured file exists but cannot be read by this user.
    """
    from lesionlib.data.manifest import asset_path, load_manifest

    if "medicalnet_resnet10" not in load_manifest().assets:
        log.info("the data manifest has no 'medicalnet_resnet10' asset: no MedicalNet weights")
        return None
    found = asset_path("medicalnet_resnet10")
    if found is None:
        return None
    path = Path(found)
    if not os.access(path, os.R_OK):
        raise MedicalNetWeightsError(path, "MedicalNet weights file is not readable by this user: fix its permissions "
                                           "(chmod a+r) or unset MEDICALNET_RESNET10 to train without them")
    return path
