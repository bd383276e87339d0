"""Segmentation methods behind one contract, registered by name (the only place methods are listed).

Every method of the paper — U-Net, Res-U-Net, nnU-Net, LesionGnb — is a :class:`Segmenter`:
``fit`` (train on labelled records), ``fine_tune`` (continue from a parent run's model),
``predict`` (one mask per record, on the record's own grid). The grid (:mod:`lesionlib.experiments`),
the cells (:mod:`lesionlib.cells`), the tables and figures (:mod:`lesionlib.reporting`) read the
registry for names, labels and table order; none of them dispatches on a method name. An *ablation*
(``ablation_of``, e.g. ``resunet_scratch``) is a variant of a method that tests one of its choices: it
runs only where a profile lists it, and the book compares it with its method instead of tabling it.

To add a method: write one module with a ``Segmenter`` subclass (its ``name``, ``label``,
``order`` and a ``Settings`` class holding every setting with its default) decorated with
:func:`register_segmenter`, and import it below.
"""

from lesionlib.segmenters.base import (
    FitResult,
    MethodSettings,
    Segmenter,
    Stage,
    ablation_names,
    build_segmenter,
    get_segmenter,
    register_segmenter,
    segmenter_labels,
    segmenter_names,
)

# Registration happens on import; the modules import torch, MONAI and nnunetv2 lazily.
from lesionlib.segmenters import lesiongnb as _lesiongnb  # noqa: E402,F401
from lesionlib.segmenters import monai_nets as _monai_nets  # noqa: E402,F401
from lesionlib.segmenters import nnunet as _nnunet  # noqa: E402,F401

__all__ = [
    "FitResult",
    "MethodSettings",
    "Segmenter",
    "Stage",
    "ablation_names",
    "build_segmenter",
    "get_segmenter",
    "register_segmenter",
    "segmenter_labels",
    "segmenter_names",
]
