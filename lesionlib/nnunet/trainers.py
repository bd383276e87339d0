"""Short-schedule nnU-Net trainers, discovered by nnU-Net through ``nnUNet_extTrainer``.

nnU-Net's default schedule is 1000 epochs of 250 training and 50 validation iterations
(``nnUNetTrainer``). Quick runs need shorter schedules without patching the installed package.
nnU-Net picks a trainer by class name (``-tr``), and names the result folder after it, so the
schedule is encoded in the name::

    <base>_lesionlib_E{epochs}_I{train_iterations}_V{val_iterations}[_NoFinalVal]
    e.g. nnUNetTrainer_lesionlib_E100_I250_V50   (the paper's fine-tuning schedule)
         nnUNetTrainerAdam1en3_lesionlib_E10_I50_V10   (nnU-Net's own Adam variant, short)

``_NoFinalVal`` skips nnU-Net's final validation (sliding-window prediction of every validation
case after the last epoch, which with fold ``all`` means the training cases themselves); it
is meant for quick runs and tests, where that step costs more than the training.

The classes are made on demand: this module's ``__getattr__`` (PEP 562) builds a subclass of
``nnUNetTrainer`` for any name of that form and caches it here, so pickling and nnU-Net's
checkpoint ``trainer_name`` lookup (at prediction time) both resolve to the same class. The
folder :data:`lesionlib.nnunet.paths.EXT_TRAINER_DIR`, given to nnU-Net as
``nnUNet_extTrainer``, holds a one-line module re-exporting that ``__getattr__``; nnU-Net 2.8.1
scans the folder, imports the module and asks it for the class with ``hasattr``.

This was chosen over writing generated Python files into each run: nothing is generated, any
schedule works, the name is the whole specification, and every run uses the same code.
Only the schedule (and optionally the final validation) differs from ``nnUNetTrainer``;
everything else (loss, augmentation, learning-rate policy over ``num_epochs``) is nnU-Net's own. On the CPU
the network's weights are laid out channels-last, as lesionlib's own networks (:func:`lesionlib.train.on_device`):
oneDNN's 3D convolutions run faster so (a quick-profile nnU-Net step of 48^3 patches 0.55 -> 0.39 s).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_TRAINER",
    "DEFAULT_EPOCHS",
    "DEFAULT_ITERATIONS",
    "DEFAULT_VAL_ITERATIONS",
    "SEED_ENV",
    "THREADS_ENV",
    "Schedule",
    "trainer_name",
    "parse_trainer_name",
    "make_short_trainer",
]

DEFAULT_TRAINER = "nnUNetTrainer"
DEFAULT_EPOCHS = 1000
DEFAULT_ITERATIONS = 250
DEFAULT_VAL_ITERATIONS = 50

THREADS_ENV = "LESIONLIB_NNUNET_THREADS"
"""torch threads of a CPU training process, when set (nnU-Net itself uses every core)."""

SEED_ENV = "LESIONLIB_NNUNET_SEED"
"""Seed of a training process's Python, NumPy and torch generators, when set (nnU-Net seeds nothing)."""

_SUFFIX = "_lesionlib_"
_NO_FINAL_VAL = "_NoFinalVal"
_NAME = re.compile(r"^(?P<base>nnUNetTrainer[A-Za-z0-9]*)_lesionlib_E(?P<e>[1-9][0-9]*)_I(?P<i>[1-9][0-9]*)"
                   r"_V(?P<v>[1-9][0-9]*)(?P<nofinal>_NoFinalVal)?$")


class Schedule(NamedTuple):
    """A training schedule: epochs of ``iterations`` training and ``val_iterations`` validation steps,
    on nnU-Net trainer class ``base`` (``nnUNetTrainer`` or one of nnU-Net's own variants, e.g.
    ``nnUNetTrainerAdam1en3``)."""

    epochs: int
    iterations: int
    val_iterations: int
    final_validation: bool = True
    base: str = DEFAULT_TRAINER

_CLASSES: dict[str, type] = {}


def default_val_iterations(iterations: int) -> int:
    """nnU-Net's 250:50 ratio of training to validation iterations, at least 1."""
    return max(1, math.ceil(iterations * DEFAULT_VAL_ITERATIONS / DEFAULT_ITERATIONS))


def trainer_name(epochs: int = DEFAULT_EPOCHS, iterations: int = DEFAULT_ITERATIONS,
                 val_iterations: int | None = None, final_validation: bool = True, base: str = DEFAULT_TRAINER) -> str:
    """The trainer class name for a schedule; nnU-Net's defaults give ``base`` itself (``'nnUNetTrainer'``).

    ``val_iterations`` defaults to ``ceil(iterations / 5)`` (nnU-Net's 250:50 ratio).
    ``final_validation=False`` appends ``_NoFinalVal``. ``base``: the nnU-Net trainer class the
    schedule is applied to (an nnU-Net variant such as ``nnUNetTrainerAdam1en3``).
    """
    if not re.fullmatch(r"nnUNetTrainer[A-Za-z0-9]*", base):
        raise ValueError(f"base trainer must be an nnU-Net trainer class name (nnUNetTrainer...), got {base!r}")
    if val_iterations is None:
        val_iterations = default_val_iterations(iterations)
    for label, value in (("epochs", epochs), ("iterations", iterations), ("val_iterations", val_iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    default = (epochs, iterations, val_iterations) == (DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_VAL_ITERATIONS)
    if default and final_validation:
        return base
    return f"{base}{_SUFFIX}E{epochs}_I{iterations}_V{val_iterations}" + ("" if final_validation else _NO_FINAL_VAL)


def parse_trainer_name(name: str) -> Schedule | None:
    """The :class:`Schedule` of ``'nnUNetTrainer'`` or a lesionlib trainer name; ``None`` for other names."""
    if name == DEFAULT_TRAINER:
        return Schedule(DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_VAL_ITERATIONS, True)
    match = _NAME.match(name)
    if match is None:
        return None
    return Schedule(int(match["e"]), int(match["i"]), int(match["v"]), match["nofinal"] is None, match["base"])


def _base_trainer_class(base: str) -> type:
    """nnU-Net's trainer class ``base`` (``nnUNetTrainer`` or a variant nnU-Net ships), found the way nnU-Net finds it."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    folder = str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer")
    cls = recursive_find_python_class(folder, base, "nnunetv2.training.nnUNetTrainer")
    if cls is None:
        raise RuntimeError(f"nnU-Net has no trainer class {base!r} (see nnunetv2/training/nnUNetTrainer/variants)")
    return cls


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators: the ones nnU-Net's network initialisation,
    data loader (case and patch choice) and augmentation draw from when they run in this process."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_short_trainer(epochs: int, iterations: int, val_iterations: int | None = None,
                       final_validation: bool = True, base: str = DEFAULT_TRAINER) -> type:
    """The subclass of nnU-Net's trainer ``base`` with this schedule (created once, then cached).

    Imports nnunetv2 and torch; meant to run inside nnU-Net's own process.
    """
    name = trainer_name(epochs, iterations, val_iterations, final_validation, base)
    if name == base:
        return _base_trainer_class(base)
    if name in _CLASSES:
        return _CLASSES[name]
    epochs, iterations, val_iterations, final_validation, base = parse_trainer_name(name)  # type: ignore[misc]

    import torch

    parent = _base_trainer_class(base)

    # nnUNetTrainer.__init__ records its init args by inspecting ``self.__init__``'s signature
    # against its own locals, so the signature must be exactly nnU-Net's.
    def __init__(self: Any, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        if os.environ.get(SEED_ENV):
            _seed_everything(int(os.environ[SEED_ENV]))
        parent.__init__(self, plans, configuration, fold, dataset_json, device)
        if device.type == "cpu" and os.environ.get(THREADS_ENV):
            torch.set_num_threads(int(os.environ[THREADS_ENV]))
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = val_iterations

    def initialize(self: Any) -> None:
        parent.initialize(self)
        if self.device.type == "cpu":  # oneDNN's 3D convolutions run faster channels-last (lesionlib.train.on_device)
            self.network.to(memory_format=torch.channels_last_3d)

    def perform_actual_validation(self: Any, save_probabilities: bool = False) -> None:
        self.print_to_log_file(f"{name}: final validation skipped (lesionlib _NoFinalVal trainer)")

    namespace: dict[str, Any] = {
        "__init__": __init__,
        "initialize": initialize,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (f"{base} with {epochs} epochs of {iterations} training and "
                    f"{val_iterations} validation iterations (lesionlib short schedule)"
                    + ("." if final_validation else ", without the final validation.")),
    }
    if not final_validation:
        namespace["perform_actual_validation"] = perform_actual_validation
    cls = type(name, (parent,), namespace)
    _CLASSES[name] = cls
    return cls


def __getattr__(name: str) -> type:
    """Module attribute hook (PEP 562): ``trainers.nnUNetTrainer_lesionlib_E2_I5_V1`` is a class."""
    schedule = parse_trainer_name(name) if _NAME.match(name) else None
    if schedule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return make_short_trainer(*schedule)
