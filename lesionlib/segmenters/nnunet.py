"""nnU-Net v2 as a segmenter: nnU-Net's own planning, preprocessing, trainer and predictor.

Stages follow nnU-Net's pipeline (fingerprint, plan, preprocess, train, predict), split so that
nothing is done twice across the cells of a profile:

* :meth:`NnUNetSegmenter.prepare` — once per profile, in ``<results>/<profile>/_shared/nnunet/``:
  exports every adult image (``Dataset501_Adult``) and every child image (``Dataset502_Child``),
  plans and preprocesses each with nnU-Net's defaults, transfers the adult plans to the child
  dataset (nnU-Net's documented pretraining recipe, ``nnUNetv2_move_plans_between_datasets``) and
  preprocesses the children with them for fine-tuning, and writes every training set of every
  seed as folds of nnU-Net's ``splits_final.json`` (with an index from training set to folds);
* :meth:`NnUNetSegmenter.fit` / :meth:`NnUNetSegmenter.fine_tune` — per cell: ``nnUNetv2_train``
  on the cell's folds, into the cell's own ``nnUNet_results`` (fine-tuning with
  ``-pretrained_weights`` = the parent cell's checkpoints);
* :meth:`NnUNetSegmenter.predict` — ``nnUNetPredictor`` built once for all of a cell's images.

``folds``: ``5`` is nnU-Net's standard (5-fold cross-validation of the training set, the five
models ensembled at prediction); ``'all'`` trains one model on the whole training set. Five child
images are too few to cross-validate for fine-tuning: each of the parent's models is fine-tuned on
all five and the fine-tuned models are ensembled. Models trained on the five child images alone
are cross-validated like any other training set.

``width_divisor`` / ``patch_size`` (CPU profiles only) shrink nnU-Net's planned network and patch,
``target_spacing_mm`` replaces its planned spacing (:func:`lesionlib.nnunet.pipeline.resize_plans`);
everything else stays nnU-Net's. An nnU-Net
*epoch* is always ``iterations_per_epoch`` (nnU-Net: 250) training iterations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from lesionlib.segmenters.base import FitResult, MethodSettings, Segmenter, Stage, register_segmenter

__all__ = ["NnUNetSettings", "NnUNetSegmenter", "ADULT_DATASET", "CHILD_DATASET"]

log = logging.getLogger(__name__)

ADULT_DATASET = (501, "Adult")
CHILD_DATASET = (502, "Child")
FOLD_INDEX = "lesionlib_folds.json"
MODEL_RECORD = "lesionlib_model.json"
PREPARED = "lesionlib_prepared.json"
CV_SEED = 12345  # nnU-Net's own seed for its 5-fold split
STAGING_DIR = ".nnunet_staging"
"""Folder inside a cell's predictions where nnU-Net writes its masks before they are moved into place."""


class NnUNetSettings(MethodSettings):
    """nnU-Net's schedule (nnU-Net's defaults; the paper fine-tunes for 100 epochs) and CPU sizing."""

    epochs_adult: int = Field(1000, ge=1)
    epochs_finetune: int = Field(100, ge=1)
    epochs_child_only: int = Field(1000, ge=1)
    iterations_per_epoch: int = Field(250, ge=1)
    val_iterations_per_epoch: int | None = Field(None, ge=1)
    """nnU-Net's per-epoch validation iterations (``None``: nnU-Net's 1 per 5 training iterations). They only
    feed nnU-Net's pseudo-Dice log and ``checkpoint_best``; predictions use ``checkpoint_final``, so CPU
    profiles keep one."""
    folds: Literal["all", 5] = 5
    tta: bool = True
    tile_step_size: float = Field(0.5, gt=0, le=1)
    """Sliding-window step at inference, as a fraction of the patch (nnU-Net's default 0.5: half-overlapping tiles)."""
    final_validation: bool = True
    configuration: str = "3d_fullres"
    num_processes: int = Field(2, ge=0)
    """Worker processes for preprocessing and data augmentation (0: augmentation in the training process)."""
    trainer: str = Field("nnUNetTrainer", pattern=r"^nnUNetTrainer[A-Za-z0-9]*$")
    """nnU-Net's trainer class: its default (SGD, momentum 0.99, poly lr from 0.01) or one of the variants
    nnU-Net ships (e.g. ``nnUNetTrainerAdam1en3``: AdamW from 1e-3), with this profile's schedule."""
    threads: int | None = Field(None, ge=1)
    """torch threads of a CPU training process (``None``: nnU-Net's choice, every core)."""
    width_divisor: int = Field(1, ge=1)
    patch_size: tuple[int, int, int] | None = None
    target_spacing_mm: float | None = Field(None, gt=0, le=10)
    """Isotropic spacing nnU-Net plans and resamples for instead of the data's own (nnU-Net's
    ``-overwrite_target_spacing``; ``None``: nnU-Net's plan; a CPU rehearsal of 1 mm data works at 3 mm)."""

    def epochs(self, stage: Stage) -> int:
        return {"adult": self.epochs_adult, "finetune": self.epochs_finetune, "child_only": self.epochs_child_only}[stage]


def _set_key(records: Sequence) -> str:
    """Stable key of a training set: sha1 of its sorted case ids."""
    ids = "\n".join(sorted(r.case_id for r in records))
    return hashlib.sha1(ids.encode()).hexdigest()[:16]


def _cv_folds(case_ids: Sequence[str], n_folds: int) -> list[dict[str, list[str]]]:
    """nnU-Net's k-fold split (scikit-learn KFold, shuffled with seed 12345) of ``case_ids``."""
    from sklearn.model_selection import KFold

    ids = sorted(case_ids)
    folds = []
    for train, val in KFold(n_splits=n_folds, shuffle=True, random_state=CV_SEED).split(ids):
        folds.append({"train": [ids[i] for i in train], "val": [ids[i] for i in val]})
    return folds


@register_segmenter
class NnUNetSegmenter(Segmenter):
    """nnU-Net v2 (``3d_fullres``) through :class:`lesionlib.nnunet.NnUNetRun` (see the module docstring)."""

    name = "nnunet"
    label = "nnU-Net"
    order = 30
    Settings: ClassVar[type[NnUNetSettings]] = NnUNetSettings
    settings: NnUNetSettings
    needs_preparation = True

    # ------------------------------------------------------------------ description
    def plan(self, stage: Stage, n_train_images: int) -> dict[str, Any]:
        from lesionlib.nnunet.trainers import default_val_iterations

        s = self.settings
        members = 1 if s.folds == "all" else 5
        folds = "all (one model on the whole training set)" if s.folds == "all" else (
            "5 models fine-tuned from the parent's 5, ensembled" if stage == "finetune"
            else "5-fold cross-validation, 5 models ensembled")
        return {"epochs": s.epochs(stage), "iterations_per_epoch": s.iterations_per_epoch,
                "val_iterations_per_epoch": s.val_iterations_per_epoch or default_val_iterations(s.iterations_per_epoch),
                "models": members, "folds": folds, "trainer": s.trainer,
                "configuration": s.configuration, "test_time_augmentation": s.tta,
                "tile_step_size": s.tile_step_size,
                "network": "nnU-Net's plans" if s.width_divisor == 1 and s.patch_size is None else
                f"nnU-Net's plans, feature maps / {s.width_divisor}, patch {list(s.patch_size or [])}",
                "target_spacing": "nnU-Net's plan" if s.target_spacing_mm is None else f"{s.target_spacing_mm:g} mm"}

    # ------------------------------------------------------------------ shared preparation
    @classmethod
    def prepare(cls, profile: Any, shared_dir: Path, *, progress: bool = False) -> None:
        """Export, plan and preprocess both cohorts once and write every training set's folds."""
        from lesionlib.nnunet import NnUNetRun
        from lesionlib.splits import make_splits

        s: NnUNetSettings = profile.method(cls.name)
        splits = [make_splits(profile, seed) for seed in profile.seeds]
        fingerprint = cls._preparation_fingerprint(s, splits)
        marker = Path(shared_dir) / PREPARED
        if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
            log.info("nnU-Net data of profile %s already prepared in %s", profile.name, shared_dir)
            return
        device = "cuda" if profile.device == "cuda" else "cpu"
        adult = NnUNetRun(shared_dir, *ADULT_DATASET, configuration=s.configuration, device=device,
                          num_processes=max(1, s.num_processes))
        child = NnUNetRun(shared_dir, *CHILD_DATASET, configuration=s.configuration, device=device,
                          num_processes=max(1, s.num_processes))
        resize = {"width_divisor": s.width_divisor, "patch_size": s.patch_size,
                  "target_spacing_mm": s.target_spacing_mm}
        adult.export(splits[0].adult, progress=progress)
        adult.plan_and_preprocess(**resize)
        child.export(splits[0].child, progress=progress)
        child.plan_and_preprocess(**resize)
        transferred = child.transfer_plans_from(adult)
        cls._write_folds(adult, child, splits, s, transferred)
        from lesionlib.io import atomic_path

        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(fingerprint, indent=1))

    @staticmethod
    def _preparation_fingerprint(s: NnUNetSettings, splits: list) -> dict[str, Any]:
        return {"settings": s.model_dump(mode="json", include={"folds", "configuration", "width_divisor", "patch_size",
                                                              "target_spacing_mm"}),
                "adult": sorted(r.case_id for r in splits[0].adult), "child": sorted(r.case_id for r in splits[0].child),
                "train_sets": sorted({_set_key(sp.training(t)[0]) for sp in splits
                                      for t in ("adult_full", "adult_subset", "child5")})}

    @staticmethod
    def _write_folds(adult: Any, child: Any, splits: list, s: NnUNetSettings, transferred_plans: str) -> None:
        """``splits_final.json`` of both datasets and the index ``{purpose: {set key: [folds]}}``."""
        adult_folds: list[dict[str, list[str]]] = []
        child_folds: list[dict[str, list[str]]] = []
        index: dict[str, dict[str, list[int]]] = {"adult": {}, "child_only": {}, "finetune": {}}

        def add(target: list, purpose: str, key: str, folds: list[dict[str, list[str]]]) -> None:
            if key not in index[purpose]:
                index[purpose][key] = list(range(len(target), len(target) + len(folds)))
                target.extend(folds)

        n_members = 1 if s.folds == "all" else 5
        for sp in splits:
            for train_set in ("adult_full", "adult_subset"):
                train, val = sp.training(train_set)
                ids = [r.case_id for r in train]
                folds = ([{"train": ids, "val": [r.case_id for r in val] or ids}] if s.folds == "all"
                         else _cv_folds(ids, 5))
                add(adult_folds, "adult", _set_key(train), folds)
            few = [r.case_id for r in sp.few_shot.train]
            key = _set_key(sp.few_shot.train)
            add(child_folds, "child_only", key,
                [{"train": few, "val": few}] if s.folds == "all" else _cv_folds(few, min(5, len(few))))
            add(child_folds, "finetune", key, [{"train": few, "val": few}] * n_members)
        adult.write_splits(adult_folds, allow_overlap=True)
        child.write_splits(child_folds, allow_overlap=True)
        from lesionlib.io import atomic_path

        for run, purposes in ((adult, ("adult",)), (child, ("child_only", "finetune"))):
            record = {p: index[p] for p in purposes}
            record["plans"] = {"adult": "nnUNetPlans", "child_only": "nnUNetPlans", "finetune": transferred_plans}
            with atomic_path(run.preprocessed_dir / FOLD_INDEX) as tmp:
                tmp.write_text(json.dumps(record, indent=1))

    # ------------------------------------------------------------------ per cell
    def _run(self, dataset: tuple[int, str]) -> Any:
        from lesionlib.nnunet import NnUNetRun

        if self.shared_dir is None:
            raise ValueError("nnU-Net cells need the profile's shared folder (prepare() writes it)")
        device = "cuda" if self.device == "cuda" else "cpu"
        return NnUNetRun(self.shared_dir, *dataset, configuration=self.settings.configuration, device=device,
                         num_processes=self.settings.num_processes, results_dir=self.model_dir,
                         threads=self.settings.threads, seed=self.seed)

    def _folds(self, run: Any, purpose: str, records: Sequence) -> tuple[list[int], str]:
        path = run.preprocessed_dir / FOLD_INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{path}: nnU-Net data not prepared; run the grid's prepare stage first")
        index = json.loads(path.read_text())
        key = _set_key(records)
        if key not in index.get(purpose, {}):
            raise KeyError(f"{path}: this training set ({len(records)} images) was not prepared for {purpose}; "
                           "re-run the prepare stage")
        return index[purpose][key], index["plans"][purpose]

    def _train(self, purpose: str, records: Sequence, stage: Stage, parent: dict[str, Any] | None) -> FitResult:
        s = self.settings
        run = self._run(ADULT_DATASET if purpose == "adult" else CHILD_DATASET)
        folds, plans = self._folds(run, purpose, records)
        fold_dirs = []
        for k, fold in enumerate(folds):
            weights = None if parent is None else parent["checkpoints"][k % len(parent["checkpoints"])]
            fold_dirs.append(run.train(fold, epochs=s.epochs(stage), iterations=s.iterations_per_epoch,
                                       val_iterations=s.val_iterations_per_epoch,
                                       final_validation=s.final_validation, base_trainer=s.trainer, plans=plans,
                                       pretrained_weights=weights))
        record = {"model_dir": os.path.relpath(fold_dirs[0].parent, self.model_dir), "folds": folds,
                  "checkpoints": [os.path.relpath(d / "checkpoint_final.pth", self.model_dir) for d in fold_dirs],
                  "dataset": run.dataset, "plans": plans, "stage_seconds": dict(run.timings_s)}
        self.model_dir.mkdir(parents=True, exist_ok=True)
        (self.model_dir / MODEL_RECORD).write_text(json.dumps(record, indent=1))
        return FitResult(details={"nnunet": record})

    def fit(self, train_records: Sequence, val_records: Sequence, *, stage: Stage) -> FitResult:
        return self._train("adult" if stage == "adult" else "child_only", train_records, stage, None)

    def fine_tune(self, parent_model_dir: Path, train_records: Sequence) -> FitResult:
        parent = json.loads((Path(parent_model_dir) / MODEL_RECORD).read_text())
        parent["checkpoints"] = [str((Path(parent_model_dir) / c).resolve()) for c in parent["checkpoints"]]
        return self._train("finetune", train_records, "finetune", parent)

    def predict(self, records: Sequence, out_dir: Path) -> list[Path]:
        """nnU-Net's masks (written by :meth:`NnUNetRun.predict` into a staging folder inside ``out_dir``),
        moved into the derivative dataset of each record's source dataset (:func:`lesionlib.bids.save_prediction`)."""
        import shutil

        from lesionlib.bids import save_prediction

        record = json.loads((self.model_dir / MODEL_RECORD).read_text())
        run = self._run(ADULT_DATASET)
        staging = Path(out_dir) / STAGING_DIR  # same file system: each mask is moved, not copied
        try:
            staged = run.predict(records, staging, tta=self.settings.tta,
                                 model_dir=self.model_dir / record["model_dir"], folds=record["folds"],
                                 tile_step_size=self.settings.tile_step_size)
            description = (f"lesion segmentation by nnU-Net v2 ({self.settings.configuration}, "
                           f"{len(record['folds'])} model(s) ensembled)")
            sidecar = {"model": "nnU-Net", "configuration": self.settings.configuration, "folds": record["folds"],
                       "test_time_augmentation": self.settings.tta,
                       "tile_step_size": self.settings.tile_step_size}
            return [save_prediction(path, out_dir, rec, description=description, sidecar=sidecar)
                    for path, rec in zip(staged, records)]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
