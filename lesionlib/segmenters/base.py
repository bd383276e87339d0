"""The segmenter contract and its registry.

A :class:`Segmenter` is constructed with its settings (one method section of a profile, see
:mod:`lesionlib.profile`) and the cell it works for (seed, device, working resolution, the folder
its model lives in), then

* :meth:`Segmenter.fit` trains on labelled records (``stage`` says which of the profile's epoch
  counts applies: training on adults, or on the few child images alone);
* :meth:`Segmenter.fine_tune` continues training from the model of a parent cell;
* :meth:`Segmenter.predict` writes one uint8 mask per record, on the record's own grid, into the
  BIDS-derivatives dataset of the record's source dataset, at
  ``lesionlib.bids.prediction_mask_path(out_dir, record)``
  (``<out_dir>/<record.dataset>/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz``, with a
  JSON sidecar, through :func:`lesionlib.bids.save_prediction`), and returns the paths;
* :meth:`Segmenter.plan` describes, before anything runs, what a cell of this method will do
  (epochs, iterations, schedule, augmentation, folds, encoder weights...), for
  ``lesionlib grid list --json`` and the methods page.

Methods that need work shared by every cell of a profile (nnU-Net's fingerprint, plans and
preprocessing) implement :meth:`Segmenter.prepare`, run once per profile before its cells.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

from lesionlib.profile import StrictModel

if TYPE_CHECKING:
    from lesionlib.data.records import ImageRecord
    from lesionlib.profile import Profile

__all__ = [
    "Stage",
    "MethodSettings",
    "FitResult",
    "Segmenter",
    "register_segmenter",
    "get_segmenter",
    "segmenter_names",
    "segmenter_labels",
    "build_segmenter",
]

Stage = Literal["adult", "finetune", "child_only"]
"""What a cell trains for: adults, fine-tuning an adult model on child images, or child images alone."""

STAGES: tuple[str, ...] = ("adult", "finetune", "child_only")


class MethodSettings(StrictModel):
    """Base class of a method's settings (unknown keys are errors; every default is declared)."""


@dataclass
class FitResult:
    """What :meth:`Segmenter.fit` / :meth:`Segmenter.fine_tune` report.

    ``encoder_pretrained``: whether a pretrained encoder initialised the model (``None`` for
    methods without one). ``encoder_note``: what the tables add to the method's row label about its
    encoder (``'encoder not pretrained'``, ``'encoder pretrained on synthetic tissue segmentation'``...;
    empty for MedicalNet's own encoder and for methods without one). ``details``: plain-YAML facts
    for the run's ``params.yaml`` (epochs run, best epoch, timings...). ``history``: per-epoch
    table when the method keeps one (shown on the run page).
    """

    encoder_pretrained: bool | None = None
    encoder_note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    history: Any = None


class Segmenter(abc.ABC):
    """One segmentation method (see the module docstring).

    Parameters
    ----------
    settings
        An instance of the class's ``Settings``.
    seed
        Seeds weight initialisation and the data stream.
    device
        ``'cpu'``, ``'cuda'`` or ``'auto'``.
    resolution_mm
        Working resolution (isotropic voxel size, mm) of the profile's data.
    model_dir
        Folder that holds (after ``fit``) or holds already (before ``predict``) this cell's model.
    shared_dir
        Folder of work shared by every cell of the profile (written by :meth:`prepare`).
    progress
        Progress bars on long loops.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    order: ClassVar[int]
    Settings: ClassVar[type[MethodSettings]]
    fine_tunes: ClassVar[bool] = True
    """Networks: fine-tuned on child images and trained on them alone. ``False`` (LesionGnb): one cell
    per seed, trained on the adult training split."""
    ablation_of: ClassVar[str | None] = None
    """The method this one is a variant of, to test one of its choices (``resunet_scratch``: the Res-U-Net
    without its pretrained encoder), or ``None`` for a method of the paper. An ablation runs only where a
    profile lists it in ``grid.methods`` (on ``grid.ablation_train_sets``), stays out of the paper's tables
    and figures, and is compared with its method by :func:`lesionlib.reporting.findings.ablation_tests`."""
    ablation_claim: ClassVar[str] = ""
    """What comparing an ablation with its method tests, in words (the methods page's heading)."""

    def __init__(self, settings: MethodSettings, *, seed: int = 0, device: str = "auto", resolution_mm: float = 1.0,
                 model_dir: Path | str, shared_dir: Path | str | None = None, progress: bool = False) -> None:
        if not isinstance(settings, self.Settings):
            raise TypeError(f"{self.name} needs {self.Settings.__name__} settings, got {type(settings).__name__}")
        self.settings = settings
        self.seed = int(seed)
        self.device = device
        self.resolution_mm = float(resolution_mm)
        self.model_dir = Path(model_dir)
        self.shared_dir = None if shared_dir is None else Path(shared_dir)
        self.progress = progress

    # ----------------------------------------------------------------- contract
    @abc.abstractmethod
    def plan(self, stage: Stage, n_train_images: int) -> dict[str, Any]:
        """What a cell of ``stage`` with ``n_train_images`` training images will do, as plain YAML types."""

    @abc.abstractmethod
    def fit(self, train_records: Sequence["ImageRecord"], val_records: Sequence["ImageRecord"], *,
            stage: Stage) -> FitResult:
        """Train a model into :attr:`model_dir` (``val_records`` may be empty)."""

    def fine_tune(self, parent_model_dir: Path, train_records: Sequence["ImageRecord"]) -> FitResult:
        """Continue training the model in ``parent_model_dir`` on ``train_records`` into :attr:`model_dir`."""
        raise NotImplementedError(f"{self.label} is not fine-tuned")

    @abc.abstractmethod
    def predict(self, records: Sequence["ImageRecord"], out_dir: Path) -> list[Path]:
        """Segment ``records`` with the model in :attr:`model_dir`; one mask path per record, in order.

        Each mask (uint8, on its record's grid) and its sidecar are written by
        :func:`lesionlib.bids.save_prediction` ``(mask, out_dir, record, description=...)``, i.e. to
        :func:`lesionlib.bids.prediction_mask_path` ``(out_dir, record)`` in the derivative dataset
        ``out_dir/<record.dataset>/`` of the record's source dataset.
        """

    @classmethod
    def prepare(cls, profile: "Profile", shared_dir: Path, *, progress: bool = False) -> None:
        """Work shared by every cell of ``profile`` (default: none)."""

    uses_gpu: ClassVar[bool] = True
    """Whether its jobs ask the scheduler for a GPU on a cuda profile (``False``: LesionGnb, CPU only)."""

    needs_preparation: ClassVar[bool] = False
    """Whether :meth:`prepare` does anything whatever the settings (the grid then runs it once before the cells)."""

    @classmethod
    def needs_preparation_for(cls, settings: MethodSettings) -> bool:
        """Whether :meth:`prepare` does anything with these settings (default: :attr:`needs_preparation`)."""
        return cls.needs_preparation


_REGISTRY: dict[str, type[Segmenter]] = {}


def register_segmenter(cls: type[Segmenter]) -> type[Segmenter]:
    """Class decorator: add a :class:`Segmenter` subclass to the registry under ``cls.name``."""
    for attr in ("name", "label", "order", "Settings"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} must define {attr!r} to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"segmenter name {cls.name!r} is already registered to {_REGISTRY[cls.name]!r}")
    _REGISTRY[cls.name] = cls
    return cls


def segmenter_names() -> list[str]:
    """Registered method names in table order (their ``order``)."""
    return [name for name, _ in sorted(_REGISTRY.items(), key=lambda item: (item[1].order, item[0]))]


def ablation_names() -> list[str]:
    """Registered ablations (methods with ``ablation_of``), in table order."""
    return [name for name in segmenter_names() if _REGISTRY[name].ablation_of is not None]


def segmenter_labels() -> dict[str, str]:
    """``{name: label}`` in table order, e.g. ``{'lesiongnb': 'LesionGnb', 'unet': 'U-Net', ...}``."""
    return {name: _REGISTRY[name].label for name in segmenter_names()}


def get_segmenter(name: str) -> type[Segmenter]:
    """The class registered as ``name``; ``KeyError`` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {segmenter_names()}") from None


def build_segmenter(name: str, profile: "Profile", *, seed: int, model_dir: Path | str,
                    shared_dir: Path | str | None = None, progress: bool = False) -> Segmenter:
    """The segmenter ``name`` with ``profile``'s settings for it, for one cell."""
    cls = get_segmenter(name)
    return cls(profile.method(name), seed=seed, device=profile.device, resolution_mm=profile.data.resolution_mm,
               model_dir=model_dir, shared_dir=shared_dir, progress=progress)
