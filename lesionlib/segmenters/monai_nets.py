"""U-Net and Res-U-Net: MONAI networks trained by :mod:`lesionlib.train`, segmenting by :mod:`lesionlib.predict`.

The paper trains both with Adam (lr 0.01), a Dice + cross-entropy loss, for 200 epochs on adults
and 100 when fine-tuning on five child images. What an *epoch* is, the paper leaves to its code,
which iterates over its training data: ``iterations_per_epoch: pass`` makes an epoch one pass over
the training images (``ceil(n_images / batch_size)`` steps of one patch per image), so 100
fine-tuning epochs on 5 images are 300 steps; an integer fixes the number of steps per epoch
whatever the training set (nnU-Net's convention, used by the CPU profiles).

Res-U-Net's encoder is a ResNet-10 pretrained by MedicalNet on 3DSeg-8. ``encoder``:
``'medicalnet'`` requires the weights (the ``medicalnet_resnet10`` asset of ``data_manifest.yaml``,
or ``$MEDICALNET_RESNET10``) and stops with instructions when they are missing; ``'synthetic'``
pretrains the encoder on synthetic tissue segmentation (:mod:`lesionlib.pretrain`) in the Res-U-Net's
preparation, once per profile, as a stand-in for MedicalNet's; ``'random'`` trains the encoder from
scratch; ``'auto'`` uses MedicalNet's weights when configured, otherwise random. Every cell records
``encoder_pretrained`` and an ``encoder_note`` that the tables add to the row label.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

from pydantic import Field

from lesionlib.medicalnet_geometry import MEDICALNET_WIDTHS
from lesionlib.segmenters.base import FitResult, MethodSettings, Segmenter, Stage, register_segmenter
from lesionlib.training_settings import OptimisationSettings

__all__ = ["MonaiNetSettings", "ResUNetSettings", "ResUNetScratchSettings", "MonaiNetSegmenter", "UNetSegmenter",
           "ResUNetSegmenter", "ResUNetScratchSegmenter",
           "MissingEncoderWeights"]

if TYPE_CHECKING:
    from lesionlib.profile import Profile

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_best.pt"
SYNTHETIC_ENCODER = "encoder_synthetic_tissue.pth"
"""The encoder pretrained on synthetic tissue segmentation, in the Res-U-Net's shared folder (MedicalNet's layout)."""


class MissingEncoderWeights(FileNotFoundError):
    """``encoder: medicalnet`` but no MedicalNet weights are configured; the message says how to get them."""


class MonaiNetSettings(MethodSettings, OptimisationSettings):
    """Settings of a MONAI network (the optimisation fields come from ``OptimisationSettings``).

    Attributes
    ----------
    model
        Constructor arguments of the registered model (:mod:`lesionlib.models`), e.g. U-Net
        ``channels``; empty: the paper-size model.
    epochs_adult, epochs_finetune, epochs_child_only
        Epochs when training on adults, fine-tuning on child images, training on child images alone.
    iterations_per_epoch
        Optimiser steps per epoch, or ``'pass'`` (one pass over the training images, see module doc).
    inference_overlap
        Sliding-window overlap when segmenting evaluation images.
    freeze_encoder_when_fine_tuning
        Keep the encoder fixed while fine-tuning (the paper fine-tunes every layer).
    """

    model: dict[str, Any] = Field(default_factory=dict)
    epochs_adult: int = Field(200, ge=1)
    epochs_finetune: int = Field(100, ge=1)
    epochs_child_only: int = Field(200, ge=1)
    iterations_per_epoch: int | Literal["pass"] = "pass"
    inference_overlap: float = Field(0.5, ge=0, lt=1)
    freeze_encoder_when_fine_tuning: bool = False

    def epochs(self, stage: Stage) -> int:
        return {"adult": self.epochs_adult, "finetune": self.epochs_finetune, "child_only": self.epochs_child_only}[stage]

    def iterations(self, n_train_images: int) -> int:
        """Optimiser steps per epoch for a training set of ``n_train_images`` images."""
        if self.iterations_per_epoch == "pass":
            return max(1, math.ceil(n_train_images / self.batch_size))
        return int(self.iterations_per_epoch)


class PretrainingSettings(MethodSettings):
    """The synthetic stand-in for MedicalNet's pretraining (``encoder: synthetic``, :mod:`lesionlib.pretrain`).

    ``n_subjects`` synthetic heads (their own seed stream) at the profile's resolution; ``steps`` Adam steps
    of ``batch_size`` patches (the method's ``patch_size``) from ``lr`` with a poly decay.
    """

    n_subjects: int = Field(8, ge=1)
    steps: int = Field(300, ge=1)
    lr: float = Field(0.003, gt=0)
    batch_size: int = Field(2, ge=1)


class ResUNetSettings(MonaiNetSettings):
    """Res-U-Net settings: those of any MONAI network plus where the encoder's weights come from."""

    encoder: Literal["medicalnet", "synthetic", "random", "auto"] = "medicalnet"
    pretraining: PretrainingSettings = PretrainingSettings()


class MonaiNetSegmenter(Segmenter):
    """A model of :mod:`lesionlib.models` trained by :func:`lesionlib.train.train` (subclasses set ``name``)."""

    Settings: ClassVar[type[MonaiNetSettings]] = MonaiNetSettings
    settings: MonaiNetSettings
    model_name: ClassVar[str | None] = None
    """The registered model (:mod:`lesionlib.models`) it trains; ``None``: the segmenter's own ``name``."""

    @classmethod
    def registered_model(cls) -> str:
        return cls.model_name or cls.name

    # ------------------------------------------------------------------ settings -> TrainConfig
    def encoder_weights(self) -> str | None:
        """Pretrained encoder file for a fresh model (``None``: the model has none, or random weights)."""
        return None

    def train_config(self, stage: Stage, n_train_images: int, *, init_from: Path | None = None):
        """The :class:`lesionlib.train.TrainConfig` of one cell."""
        from lesionlib.train import TrainConfig

        s = self.settings
        optimisation = {k: getattr(s, k) for k in OptimisationSettings.model_fields}
        return TrainConfig(
            **optimisation, model=self.registered_model(), model_kwargs=dict(s.model), epochs=s.epochs(stage),
            iterations_per_epoch=s.iterations(n_train_images), spacing_mm=(self.resolution_mm,) * 3,
            seed=self.seed, device=self.device, init_from=None if init_from is None else str(init_from),
            encoder_weights=None if init_from is not None else self.encoder_weights(),
            freeze_encoder=bool(init_from is not None and s.freeze_encoder_when_fine_tuning),
            progress=self.progress,
        )

    def plan(self, stage: Stage, n_train_images: int) -> dict[str, Any]:
        """Resolved settings of a cell; ``ProfileError`` when ``model`` names an argument the model lacks."""
        from lesionlib.models import model_parameters
        from lesionlib.profile import ProfileError

        s = self.settings
        accepted = model_parameters(self.registered_model())
        unknown = sorted(set(s.model) - set(accepted) | ({"encoder_weights"} & set(s.model)))
        if unknown:
            raise ProfileError(f"methods.{self.name}.model: unknown model arguments {unknown}; "
                               f"{self.name} accepts {accepted} (encoder weights come from 'encoder')")
        return {
            "epochs": s.epochs(stage), "iterations_per_epoch": s.iterations(n_train_images),
            "epoch_definition": "one pass over the training images" if s.iterations_per_epoch == "pass"
            else "fixed number of iterations",
            "batch_size": s.batch_size, "patch_size": list(s.patch_size), "optimiser": "Adam", "lr": s.lr,
            "lr_schedule": s.lr_schedule, "augmentation": s.augmentation.describe(),
            "inference_window": list(s.window), "validate_every_epochs": s.val_every,
            "model": dict(s.model) or "paper size", "inference_overlap": s.inference_overlap,
        }

    # ------------------------------------------------------------------ contract
    def fit(self, train_records: Sequence, val_records: Sequence, *, stage: Stage) -> FitResult:
        from lesionlib.train import train

        cfg = self.train_config(stage, len(train_records))
        result = train(cfg, train_records, val_records, self.model_dir)
        return self._result(result)

    def fine_tune(self, parent_model_dir: Path, train_records: Sequence) -> FitResult:
        from lesionlib.train import train

        parent = Path(parent_model_dir) / CHECKPOINT
        cfg = self.train_config("finetune", len(train_records), init_from=parent)
        return self._result(train(cfg, train_records, [], self.model_dir))

    def encoder_note(self, pretrained: bool | None) -> str:
        """What the row labels add about this model's encoder (none for a model without a pretrained-able one)."""
        return ""

    def predict(self, records: Sequence, out_dir: Path) -> list[Path]:
        from lesionlib.predict import predict_records

        return predict_records(self.model_dir / CHECKPOINT, records, out_dir,
                               overlap=self.settings.inference_overlap, device=self.device, progress=self.progress)

    def _result(self, result: Any) -> FitResult:
        return FitResult(encoder_pretrained=result.encoder_pretrained, encoder_note=self.encoder_note(
                             result.encoder_pretrained), history=result.history,
                         details={"epochs_completed": result.epochs_completed, "best_epoch": result.best_epoch,
                                  "best_val_dice": result.best_val_dice,
                                  "cache": getattr(result, "cache", None)})


@register_segmenter
class UNetSegmenter(MonaiNetSegmenter):
    """The paper's 3D U-Net (MONAI ``UNet``, 5 levels), from scratch."""

    name = "unet"
    label = "U-Net"
    order = 10

    def fit(self, train_records: Sequence, val_records: Sequence, *, stage: Stage) -> FitResult:
        result = super().fit(train_records, val_records, stage=stage)
        result.encoder_pretrained = None  # no pretrained encoder to speak of
        return result

    def fine_tune(self, parent_model_dir: Path, train_records: Sequence) -> FitResult:
        result = super().fine_tune(parent_model_dir, train_records)
        result.encoder_pretrained = None
        return result


@register_segmenter
class ResUNetSegmenter(MonaiNetSegmenter):
    """U-Net decoder on a ResNet-10 encoder pretrained by MedicalNet (see the module docstring)."""

    name = "resunet"
    label = "Res-U-Net"
    order = 20
    Settings: ClassVar[type[ResUNetSettings]] = ResUNetSettings
    settings: ResUNetSettings

    def encoder_weights(self) -> str | None:
        if self.settings.encoder == "random":
            return None
        if self.settings.encoder == "synthetic":
            path = None if self.shared_dir is None else self.shared_dir / SYNTHETIC_ENCODER
            if path is None or not path.is_file():
                raise MissingEncoderWeights(
                    f"Res-U-Net (encoder: synthetic) needs its pretrained encoder {path or SYNTHETIC_ENCODER}: run the "
                    "Res-U-Net's preparation first (`lesionlib grid prepare --profile <profile> --method resunet`; "
                    "`make book` does it)")
            return str(path)
        from lesionlib.models.medicalnet import default_weights_path

        path = default_weights_path()  # a configured but broken file is an error here
        if path is not None:  # a corrupt or foreign file is reported before any run folder is made
            from lesionlib.models.medicalnet import read_medicalnet_state_dict

            read_medicalnet_state_dict(path)
        if path is None and self.settings.encoder == "medicalnet":
            raise MissingEncoderWeights(
                "Res-U-Net needs MedicalNet's pretrained ResNet-10 (encoder: medicalnet) and none is configured. "
                "Download resnet_10.pth from the pretrain archive linked in github.com/Tencent/MedicalNet and set "
                "MEDICALNET_RESNET10=/path/to/resnet_10.pth (or the asset's default_path in data_manifest.yaml); "
                "or set methods.resunet.encoder to 'random' in the profile to train the encoder from scratch "
                "(the tables then label the row).")
        if path is None:
            log.warning("Res-U-Net: no MedicalNet weights configured; the encoder starts from random weights "
                        "(recorded as encoder_pretrained: false)")
        return None if path is None else str(path)

    def plan(self, stage: Stage, n_train_images: int) -> dict[str, Any]:
        out = super().plan(stage, n_train_images)
        s = self.settings
        out["encoder_weights"] = {
            "medicalnet": "MedicalNet ResNet-10 (required)", "random": "random",
            "synthetic": f"pretrained on synthetic tissue segmentation ({s.pretraining.steps} steps, "
                         f"{s.pretraining.n_subjects} heads)",
            "auto": "MedicalNet ResNet-10 if configured, else random"}[s.encoder]
        if self._narrow_encoder():
            out["encoder_widths"] = list(s.model["encoder_widths"])
        return out

    # ------------------------------------------------------------------ the encoder's origin
    def _narrow_encoder(self) -> bool:
        widths = self.settings.model.get("encoder_widths")
        return widths is not None and tuple(widths) != MEDICALNET_WIDTHS

    def encoder_note(self, pretrained: bool | None) -> str:
        """What the row labels say about this encoder: nothing for MedicalNet's own, else its origin and width."""
        narrow = self._narrow_encoder()
        prefix = "narrow encoder" if narrow else "encoder"
        if self.settings.encoder == "synthetic":
            return f"{prefix} pretrained on synthetic tissue segmentation"
        if not pretrained:
            return f"{prefix} not pretrained"
        return "narrow encoder" if narrow else ""

    @classmethod
    def needs_preparation_for(cls, settings: MethodSettings) -> bool:
        return isinstance(settings, ResUNetSettings) and settings.encoder == "synthetic"

    @classmethod
    def prepare(cls, profile: "Profile", shared_dir: Path, *, progress: bool = False) -> None:
        """``encoder: synthetic``: pretrain the encoder on synthetic tissue segmentation into ``shared_dir``."""
        import yaml

        from lesionlib.io import atomic_path
        from lesionlib.pretrain import pretrain_encoder

        settings = profile.method(cls.name)
        if not cls.needs_preparation_for(settings):
            return
        p = settings.pretraining
        summary = pretrain_encoder(
            Path(shared_dir) / SYNTHETIC_ENCODER, model_kwargs=dict(settings.model),
            resolution_mm=profile.data.resolution_mm, synth_seed=profile.data.synth_seed, n_subjects=p.n_subjects,
            steps=p.steps, patch_size=settings.patch_size, batch_size=p.batch_size, lr=p.lr, seed=0,
            device=profile.device, progress=progress)
        with atomic_path(Path(shared_dir) / "pretraining.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(summary, sort_keys=False))



class ResUNetScratchSettings(ResUNetSettings):
    """Settings of the Res-U-Net ablation: the Res-U-Net's, with the encoder from random weights by default."""

    encoder: Literal["medicalnet", "synthetic", "random", "auto"] = "random"


@register_segmenter
class ResUNetScratchSegmenter(ResUNetSegmenter):
    """The Res-U-Net with its encoder trained from scratch: tests the paper's account of the Res-U-Net's results
    by its pretraining (an ablation of ``resunet``, run only where a profile lists it; give it the Res-U-Net's
    settings and ``encoder: random``)."""

    name = "resunet_scratch"
    label = "Res-U-Net, encoder from scratch"
    order = 21
    ablation_of = "resunet"
    ablation_claim = ("The Res-U-Net's pretrained encoder raises its Dice (the paper's account of its "
                      "Table 2 result)")
    model_name = "resunet"
    Settings: ClassVar[type[ResUNetSettings]] = ResUNetScratchSettings
    settings: ResUNetScratchSettings
