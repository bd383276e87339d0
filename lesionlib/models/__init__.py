"""Segmentation networks by name: ``build_model('unet')``, ``build_model('resunet')``.

Every model maps a batch of single-channel volumes ``(B, 1, X, Y, Z)`` to two-class logits
``(B, 2, X, Y, Z)`` (background, lesion; softmax over dim 1). Each model also offers

* ``encoder_modules() -> list[nn.Module]``: the down-sampling path, frozen by
  ``TrainConfig.freeze_encoder`` during fine-tuning;
* optionally an ``encoder_weights`` constructor argument (a local pretrained-encoder file),
  which :func:`build_model` passes on;
* ``encoder_pretrained: bool``: whether encoder weights came from a pretrained file
  (MedicalNet for ``resunet``; always ``False`` for ``unet``);
* ``size_divisor: int``: patch sizes must be multiples of it.

New architectures register themselves with :func:`register_model`.
"""

from __future__ import annotations

import inspect
import os
from typing import Callable

from torch import nn

__all__ = ["build_model", "register_model", "available_models", "model_parameters", "load_medicalnet_weights"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class/function decorator adding a model factory to the registry under ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def model_parameters(name: str) -> list[str]:
    """Keyword arguments the factory of model ``name`` accepts (for checking settings early)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {available_models()}")
    return [p for p in inspect.signature(_REGISTRY[name]).parameters if p != "self"]


def build_model(name: str, *, encoder_weights: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """Instantiate the model registered as ``name`` with keyword arguments ``kwargs``.

    ``encoder_weights``: a local pretrained-encoder file loaded by the model itself (MedicalNet
    ResNet-10 for ``resunet``); ``ValueError`` for a model without a pretrained encoder.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {available_models()}")
    if encoder_weights is not None:
        if "encoder_weights" not in model_parameters(name):
            raise ValueError(f"model {name!r} has no pretrained encoder; encoder_weights={encoder_weights!r}")
        kwargs["encoder_weights"] = encoder_weights
    return _REGISTRY[name](**kwargs)


# Registration happens on import of the model modules.
from lesionlib.models import resunet as _resunet  # noqa: E402,F401
from lesionlib.models import unet as _unet  # noqa: E402,F401
from lesionlib.models.medicalnet import load_medicalnet_weights  # noqa: E402
