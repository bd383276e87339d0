"""One nnU-Net v2 workflow in a run folder: export, plan+preprocess, train, fine-tune, predict, evaluate.

Every nnU-Net stage runs as a subprocess of nnunetv2's own command-line tools (or, for
prediction, of :mod:`lesionlib.nnunet.predict_worker`, which drives ``nnUNetPredictor``) with
an environment pointing into the run's workspace (see :mod:`lesionlib.nnunet.paths` for why).
Its output goes to ``<run_dir>/logs/<DatasetNNN_Name>_<stage>.log``; a failing stage raises
:class:`NnUNetStageError` carrying the tail of that log.

Typical use (in a script, a notebook or a Snakemake rule; no ``__main__`` guard needed here
because nnU-Net's multiprocessing lives in the subprocesses)::

    adult = NnUNetRun(run_dir, 501, "Adult")
    adult.export(adult_train_records)
    adult.plan_and_preprocess()
    adult.train(fold="all", epochs=2, iterations=5)          # nnUNetTrainer_lesionlib_E2_I5_V1
    adult.predict(child_test_records, out_dir, tta=True)

    child = NnUNetRun(run_dir, 502, "Child")                  # same workspace
    child.export(five_child_records)
    child.finetune(adult, epochs=100)                          # plans transfer + pretrained weights
    child.predict(child_test_records, out_dir_ft)
    child.evaluate(child_test_records, out_dir_ft, out_csv=run_dir / "metrics.csv")

Fine-tuning follows nnU-Net's documented pretraining recipe (documentation/
pretraining_and_finetuning.md) with the roles needed here: the adult model already exists and
is also evaluated as is, so its plans are moved *to* the child dataset
(``nnUNetv2_move_plans_between_datasets -s adult -t child``), the child images are
preprocessed with them (identical network topology, patch size and target spacing) and the
child model is trained with ``-pretrained_weights`` = the adult ``checkpoint_final.pth``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from lesionlib import bids
from lesionlib.data.records import ImageRecord
from lesionlib.data.validate import require_valid
from lesionlib.io import atomic_path, load_nifti, save_nifti_atomic
from lesionlib.nnunet.export import (
    check_export_records,
    export_dataset,
    image_file_name,
    image_for_nnunet,
    orientation_codes,
    set_geometry,
)
from lesionlib.nnunet.paths import NnUNetPaths, dataset_folder_name
from lesionlib.procs import guarded_command
from lesionlib.space import grid_mismatch
from lesionlib.nnunet.trainers import (
    DEFAULT_EPOCHS,
    DEFAULT_ITERATIONS,
    DEFAULT_TRAINER,
    SEED_ENV,
    THREADS_ENV,
    trainer_name,
)

log = logging.getLogger(__name__)

__all__ = ["NnUNetRun", "NnUNetStageError", "default_device", "evaluate_predictions", "resize_plans",
           "DEFAULT_PLANS", "FINETUNE_EPOCHS"]

DEFAULT_PLANS = "nnUNetPlans"
#: The paper fine-tunes for 100 epochs (nnU-Net's 250 iterations each).
FINETUNE_EPOCHS = 100
LOG_TAIL_LINES = 40


class NnUNetStageError(RuntimeError):
    """An nnU-Net stage exited with an error; the message holds the end of its log."""

    def __init__(self, stage: str, log_path: Path, returncode: int, tail: str):
        self.stage = stage
        self.log_path = Path(log_path)
        self.returncode = returncode
        self.tail = tail
        super().__init__(
            f"nnU-Net stage {stage!r} failed with exit code {returncode}; full log: {log_path}\n"
            f"--- last lines of the log ---\n{tail}")


def default_device() -> str:
    """``'cuda'`` when torch sees a GPU, else ``'cpu'``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _console_script(name: str) -> str:
    """Path of an nnunetv2 console script: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"nnU-Net command {name!r} not found beside {sys.executable} nor on PATH; "
                                "is nnunetv2 installed in this environment?")
    return found


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(log not readable)"
    # nnU-Net's progress bars write carriage returns: keep only each line's final state
    rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
    return "\n".join(rows[-lines:])


def _stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate a stage's process group (the guard of :mod:`lesionlib.procs`, which then stops the nnU-Net
    command and its workers), then kill it."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _write_json_atomic(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


class NnUNetRun:
    """nnU-Net v2 for one dataset inside a run folder (the workspace of nnU-Net's folders).

    Parameters
    ----------
    run_dir
        Workspace root; ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results`` and ``logs``
        are created inside it. Several datasets (adult, child) may share one workspace.
    dataset_id, dataset_name
        nnU-Net's dataset id (1..999) and name (letters and digits): ``Dataset501_Adult``.
    configuration
        nnU-Net configuration; the paper uses ``'3d_fullres'``.
    device
        ``'cpu'``, ``'cuda'`` or ``'mps'``; default cuda when available.
    num_processes
        Worker processes for fingerprinting, preprocessing, data augmentation and prediction
        export. 0 runs augmentation in the training process (the fastest on 1-2 CPU cores).
    results_dir
        Where ``nnUNet_results`` and ``logs`` go, when not in ``run_dir`` (a grid cell training on
        data that every cell of a profile shares).
    threads
        torch threads of a CPU training process (``None``: nnU-Net's choice, every core); read by
        lesionlib's trainer classes from ``$LESIONLIB_NNUNET_THREADS``.
    seed
        Seeds Python's, NumPy's and torch's generators at the start of a training process (weight
        initialisation, case and patch sampling, augmentation), read by lesionlib's trainer classes
        from ``$LESIONLIB_NNUNET_SEED``; with ``num_processes=0`` on CPU the run is then repeatable.
        ``None``: unseeded, as nnU-Net itself.
    """

    def __init__(self, run_dir: Path | str, dataset_id: int, dataset_name: str, *,
                 configuration: str = "3d_fullres", device: str | None = None, num_processes: int = 2,
                 results_dir: Path | str | None = None, threads: int | None = None, seed: int | None = None):
        self.paths = NnUNetPaths(Path(run_dir), None if results_dir is None else Path(results_dir))
        self.threads = threads
        self.seed = seed
        self.dataset_id = int(dataset_id)
        self.dataset_name = dataset_name
        self.dataset = dataset_folder_name(self.dataset_id, dataset_name)
        self.configuration = configuration
        self.device = device or default_device()
        if self.device not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {self.device!r}")
        if num_processes < 0:
            raise ValueError(f"num_processes must be >= 0, got {num_processes}")
        self.num_processes = int(num_processes)
        #: Wall-clock seconds of each stage run by this object, in order.
        self.timings_s: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"NnUNetRun({str(self.paths.root)!r}, {self.dataset_id}, {self.dataset_name!r}, device={self.device!r})"

    # ----------------------------------------------------------------- folders
    @property
    def raw_dir(self) -> Path:
        """``<run_dir>/nnUNet_raw/DatasetNNN_Name``."""
        return self.paths.raw / self.dataset

    @property
    def preprocessed_dir(self) -> Path:
        return self.paths.preprocessed / self.dataset

    @property
    def results_dir(self) -> Path:
        return self.paths.results / self.dataset

    def plans_file(self, plans: str = DEFAULT_PLANS) -> Path:
        return self.preprocessed_dir / f"{plans}.json"

    def model_dir(self, trainer: str, plans: str = DEFAULT_PLANS) -> Path:
        """nnU-Net's training output folder ``<results>/<Dataset>/<trainer>__<plans>__<configuration>``."""
        return self.results_dir / f"{trainer}__{plans}__{self.configuration}"

    def trained_models(self, fold: int | str = "all", checkpoint: str = "checkpoint_final.pth") -> list[Path]:
        """Model folders of this dataset holding ``fold_<fold>/<checkpoint>``, sorted."""
        if not self.results_dir.is_dir():
            return []
        return sorted(p.parent.parent for p in self.results_dir.glob(f"*__{self.configuration}/fold_{fold}/{checkpoint}"))

    def _single_model(self, fold: int | str, checkpoint: str) -> Path:
        models = self.trained_models(fold, checkpoint)
        if len(models) != 1:
            found = ", ".join(m.name for m in models) or "none"
            raise FileNotFoundError(
                f"{self.results_dir}: expected exactly one trained model with fold_{fold}/{checkpoint}, found {found}; "
                "pass model_dir / pretrained_weights explicitly")
        return models[0]

    def environment(self, *, training: bool = False) -> dict[str, str]:
        """Environment of this run's nnU-Net subprocesses (see :meth:`NnUNetPaths.environment`).

        Only training gets ``nnUNet_n_proc_DA = num_processes`` (which may be 0).
        """
        env = self.paths.environment(num_processes=self.num_processes,
                                     augmentation_workers=self.num_processes if training else None)
        if self.threads is not None:
            env[THREADS_ENV] = str(int(self.threads))
        if training and self.seed is not None:
            env[SEED_ENV] = str(int(self.seed))
        return env

    # ----------------------------------------------------------------- stages
    def _run(self, stage: str, cmd: Sequence[str], *, training: bool = False) -> float:
        """Run one nnU-Net command, logging to ``logs/<dataset>_<stage>.log``; returns seconds."""
        self.paths.make_dirs()
        log_path = self.paths.logs / f"{self.dataset}_{stage}.log"
        log.info("nnU-Net %s (%s): %s", stage, self.dataset, " ".join(map(str, cmd)))
        start = time.perf_counter()
        with open(log_path, "a") as fh:
            fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(map(str, cmd))}\n")
            fh.flush()
            # Under lesionlib.procs' guard, in a session of its own: the stage (nnU-Net's command and its
            # workers) ends when this process ends, however it ends (a kernel that exits when its runner is
            # killed, scancel, a time limit), and an interrupted stage takes nnU-Net's workers with it.
            proc = subprocess.Popen(guarded_command(cmd), env=self.environment(training=training),
                                    cwd=self.paths.root, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                returncode = proc.wait()
            except BaseException:
                _stop_process_group(proc)
                raise
        seconds = time.perf_counter() - start
        if returncode != 0:
            raise NnUNetStageError(stage, log_path, returncode, _tail(log_path))
        self.timings_s[stage] = seconds
        log.info("nnU-Net %s (%s) done in %.1f s", stage, self.dataset, seconds)
        return seconds

    def export(self, records_train: Sequence[ImageRecord], records_test: Iterable[ImageRecord] = (), *,
               progress: bool = True) -> Path:
        """Write the cases to ``raw_dir`` (see :func:`lesionlib.nnunet.export.export_dataset`).

        Every record is validated before any folder is created (:func:`check_export_records`).
        """
        records_train, records_test = list(records_train), list(records_test)
        check_export_records(records_train, records_test, progress=progress)
        self.paths.make_dirs()
        start = time.perf_counter()
        out = export_dataset(self.raw_dir, records_train, records_test,
                             description=f"lesionlib export ({self.dataset_name})", progress=progress)
        self.timings_s["export"] = time.perf_counter() - start
        return out

    def _require_export(self) -> dict:
        path = self.raw_dir / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dataset not exported yet; call export() first")
        return json.loads(path.read_text())

    def plan_and_preprocess(self, *, verify: bool = True, planner: str = "ExperimentPlanner",
                            gpu_memory_target_gb: float | None = None, width_divisor: int = 1,
                            patch_size: Sequence[int] | None = None,
                            target_spacing_mm: float | None = None) -> Path:
        """``nnUNetv2_plan_and_preprocess -d ID -c <configuration>``: fingerprint, plans, preprocessing.

        ``verify`` adds ``--verify_dataset_integrity`` (image/label geometry, label values).
        ``target_spacing_mm`` (isotropic, mm) is passed to nnU-Net's planner
        (``-overwrite_target_spacing``): it plans topology and patch for data resampled to that spacing,
        preprocessing resamples every image to it and predictions are resampled back (a CPU rehearsal of
        1 mm data at 3 mm). ``width_divisor`` and ``patch_size`` then resize the plans before preprocessing
        (see :func:`resize_plans`; the defaults keep them as nnU-Net made them). Returns the plans file
        ``<preprocessed>/<Dataset>/nnUNetPlans.json``.
        """
        self._require_export()
        n = str(max(1, self.num_processes))
        cmd = [_console_script("nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id),
               "-c", self.configuration, "-np", n, "-npfp", n, "-pl", planner]
        if verify:
            cmd.append("--verify_dataset_integrity")
        if gpu_memory_target_gb is not None:
            cmd += ["-gpu_memory_target", str(gpu_memory_target_gb)]
        if target_spacing_mm is not None:
            if not target_spacing_mm > 0:
                raise ValueError(f"target_spacing_mm must be > 0, got {target_spacing_mm}")
            cmd += ["-overwrite_target_spacing", *[f"{float(target_spacing_mm):g}"] * 3]
        resize = width_divisor != 1 or patch_size is not None
        self._run("plan" if resize else "plan_and_preprocess", cmd + (["--no_pp"] if resize else []))
        if resize:
            resize_plans(self.plans_file(), self.configuration, width_divisor=width_divisor, patch_size=patch_size)
            self.preprocess(DEFAULT_PLANS)
        return self.plans_file()

    def preprocess(self, plans: str = DEFAULT_PLANS) -> None:
        """``nnUNetv2_preprocess -d ID -plans_name <plans> -c <configuration>``."""
        self._require_export()
        self._run(f"preprocess_{plans}", [_console_script("nnUNetv2_preprocess"), "-d", str(self.dataset_id),
                                          "-plans_name", plans, "-c", self.configuration,
                                          "-np", str(max(1, self.num_processes))])

    def write_splits(self, splits: Sequence[Mapping[str, Sequence[str]]], *, allow_overlap: bool = False) -> Path:
        """Write nnU-Net's ``splits_final.json``: one ``{'train': [...], 'val': [...]}`` per fold.

        Needed for ``fold=k`` with fewer than 5 training cases (nnU-Net's automatic 5-fold split
        needs >= 5) or for training sets that are subsets of the exported cases. Case ids must be
        exported training cases; train and val must not overlap unless ``allow_overlap`` (a fold
        trained on every image of a small set and "validated" on the same images, like fold ``all``).
        """
        meta = json.loads((self.raw_dir / "lesionlib_records.json").read_text()) \
            if (self.raw_dir / "lesionlib_records.json").is_file() else None
        if meta is None:
            raise FileNotFoundError(f"{self.raw_dir}: dataset not exported yet; call export() first")
        known = {r["case_id"] for r in meta["train"]}
        clean = []
        for k, split in enumerate(splits):
            train, val = list(split["train"]), list(split["val"])
            unknown = sorted((set(train) | set(val)) - known)
            if unknown:
                raise ValueError(f"split {k}: unknown case ids {unknown}; exported training cases: {sorted(known)}")
            if set(train) & set(val) and not allow_overlap:
                raise ValueError(f"split {k}: cases in both train and val: {sorted(set(train) & set(val))}")
            if not train or not val:
                raise ValueError(f"split {k}: train and val must both be non-empty")
            clean.append({"train": train, "val": val})
        if not clean:
            raise ValueError("no splits given")
        path = self.preprocessed_dir / "splits_final.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(clean, path)
        return path

    def train(self, fold: int | str = "all", *, epochs: int = DEFAULT_EPOCHS, iterations: int = DEFAULT_ITERATIONS,
              val_iterations: int | None = None, final_validation: bool = True, trainer: str | None = None,
              base_trainer: str = DEFAULT_TRAINER, plans: str = DEFAULT_PLANS,
              pretrained_weights: Path | str | None = None, continue_training: bool = False) -> Path:
        """``nnUNetv2_train ID <configuration> <fold> -tr <trainer> -p <plans> -device <device>``.

        Parameters
        ----------
        fold
            ``'all'`` (train on every case; its "validation" is the training set) or a fold
            index of ``splits_final.json`` (see :meth:`write_splits`).
        epochs, iterations, val_iterations
            Schedule; nnU-Net's defaults (1000, 250, 50) use ``nnUNetTrainer`` itself, anything
            else a lesionlib short trainer (:func:`lesionlib.nnunet.trainers.trainer_name`).
        final_validation
            ``False`` skips nnU-Net's prediction of the validation cases after training
            (``_NoFinalVal`` trainer); for quick runs.
        trainer
            Explicit trainer class name instead of the schedule (any class nnU-Net can find).
        base_trainer
            The nnU-Net trainer the schedule applies to: ``nnUNetTrainer`` or one of nnU-Net's own
            variants (e.g. ``nnUNetTrainerAdam1en3``).
        pretrained_weights
            An nnU-Net ``checkpoint_*.pth`` to initialise from (all layers but the final
            segmentation layers; plans must match, see :meth:`finetune`).

        Returns
        -------
        Path
            The fold folder holding ``checkpoint_final.pth``.
        """
        info = self._require_export()
        if not self.plans_file(plans).is_file():
            raise FileNotFoundError(f"{self.plans_file(plans)}: no plans; run plan_and_preprocess() first")
        if fold != "all":
            fold = int(fold)
            if not (self.preprocessed_dir / "splits_final.json").is_file() and int(info["numTraining"]) < 5:
                raise ValueError(
                    f"{self.dataset}: fold {fold} needs nnU-Net's 5-fold split, which needs >= 5 training cases "
                    f"(have {info['numTraining']}); use fold='all' or write_splits() first")
        if trainer is None:
            trainer = trainer_name(epochs, iterations, val_iterations, final_validation, base_trainer)
        cmd = [_console_script("nnUNetv2_train"), str(self.dataset_id), self.configuration, str(fold),
               "-tr", trainer, "-p", plans, "-device", self.device]
        if pretrained_weights is not None:
            pretrained_weights = Path(pretrained_weights).resolve()
            if not pretrained_weights.is_file():
                raise FileNotFoundError(f"{pretrained_weights}: pretrained checkpoint does not exist")
            cmd += ["-pretrained_weights", str(pretrained_weights)]
        if continue_training:
            cmd.append("--c")
        self._run(f"train_{trainer}_{plans}_fold{fold}", cmd, training=True)
        fold_dir = self.model_dir(trainer, plans) / f"fold_{fold}"
        if not (fold_dir / "checkpoint_final.pth").is_file():
            raise RuntimeError(f"{fold_dir}: nnU-Net finished but wrote no checkpoint_final.pth")
        return fold_dir

    def transfer_plans_from(self, source: "NnUNetRun", *, source_plans: str = DEFAULT_PLANS,
                            verify: bool = True) -> str:
        """Move ``source``'s plans to this dataset and preprocess this dataset with them.

        Runs ``nnUNetv2_plan_and_preprocess -d this --no_pp`` unless this dataset has its own plans
        already (fingerprint and plans, which also puts its ``dataset.json`` where preprocessing
        expects it; nothing is preprocessed), ``nnUNetv2_move_plans_between_datasets -s source -t this -sp source_plans
        -tp <new>`` and ``nnUNetv2_preprocess -d this -plans_name <new> -c <configuration>``.
        If ``source`` lives in another workspace, its plans file is first copied into this
        workspace's ``nnUNet_preprocessed/<source dataset>/`` (that is where nnU-Net looks).

        Returns the new plans identifier, ``<source_plans>_from<DatasetNNN>``
        (e.g. ``nnUNetPlans_fromDataset501``).
        """
        self._require_export()
        src_plans = source.plans_file(source_plans)
        if not src_plans.is_file():
            raise FileNotFoundError(f"{src_plans}: source plans missing; run plan_and_preprocess() on {source.dataset}")
        if source.dataset_id == self.dataset_id:
            raise ValueError(f"source and target are the same dataset id {self.dataset_id}")
        if source.paths.root != self.paths.root:
            clash = [p.name for p in self.paths.preprocessed.glob(f"Dataset{source.dataset_id:03d}_*")
                     if p.name != source.dataset] if self.paths.preprocessed.is_dir() else []
            clash += [p.name for p in self.paths.raw.glob(f"Dataset{source.dataset_id:03d}_*")] \
                if self.paths.raw.is_dir() else []
            if clash:
                raise ValueError(f"{self.paths.root}: dataset id {source.dataset_id} is already used by {clash}; "
                                 f"cannot bring in the plans of {source.dataset}")
            local = self.paths.preprocessed / source.dataset / src_plans.name
            local.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(local) as tmp:
                shutil.copyfile(src_plans, tmp)
        new_plans = f"{source_plans}_from{source.dataset.split('_')[0]}"
        n = str(max(1, self.num_processes))
        if not self.plans_file().is_file():  # this dataset's own fingerprint and plans, if not made yet
            plan_cmd = [_console_script("nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id), "-npfp", n,
                        "--no_pp"]
            if verify:
                plan_cmd.append("--verify_dataset_integrity")
            self._run("fingerprint_and_plan", plan_cmd)
        self._run("move_plans", [_console_script("nnUNetv2_move_plans_between_datasets"),
                                 "-s", str(source.dataset_id), "-t", str(self.dataset_id),
                                 "-sp", source_plans, "-tp", new_plans])
        self._run(f"preprocess_{new_plans}", [_console_script("nnUNetv2_preprocess"), "-d", str(self.dataset_id),
                                             "-plans_name", new_plans, "-c", self.configuration, "-np", n])
        return new_plans

    def finetune(self, source: "NnUNetRun", *, pretrained_weights: Path | str | None = None,
                 fold: int | str = "all", epochs: int = FINETUNE_EPOCHS, iterations: int = DEFAULT_ITERATIONS,
                 val_iterations: int | None = None, final_validation: bool = True,
                 source_plans: str = DEFAULT_PLANS, source_fold: int | str = "all", verify: bool = True) -> Path:
        """Fine-tune ``source``'s model on this dataset (the paper: adult -> 5 children, 100 epochs).

        :meth:`transfer_plans_from` ``source``, then :meth:`train` with ``pretrained_weights``:
        by default the single ``checkpoint_final.pth`` of ``source``'s ``fold_<source_fold>``
        trained with ``source_plans``. Returns the fine-tuned fold folder.
        """
        if pretrained_weights is None:
            candidates = [m for m in source.trained_models(source_fold) if m.name.split("__")[1] == source_plans]
            if len(candidates) != 1:
                raise FileNotFoundError(
                    f"{source.results_dir}: expected one trained model with plans {source_plans} and "
                    f"fold_{source_fold}, found {[m.name for m in candidates]}; pass pretrained_weights")
            pretrained_weights = candidates[0] / f"fold_{source_fold}" / "checkpoint_final.pth"
        plans = self.transfer_plans_from(source, source_plans=source_plans, verify=verify)
        return self.train(fold, epochs=epochs, iterations=iterations, val_iterations=val_iterations,
                          final_validation=final_validation, plans=plans, pretrained_weights=pretrained_weights)

    def predict(self, records: Sequence[ImageRecord], out_dir: Path | str, *, tta: bool = True,
                model_dir: Path | str | None = None, folds: Sequence[int | str] = ("all",),
                checkpoint: str = "checkpoint_final.pth", tile_step_size: float = 0.5,
                description: str | None = None, sidecar: Mapping[str, Any] | None = None) -> list[Path]:
        """Segment each record's image with ``nnUNetPredictor``; one uint8 mask per record.

        Parameters
        ----------
        records
            Images to segment (any orientation and spacing; masks not needed). Each is loaded
            and validated, and nnU-Net gets a temporary float32 copy whose qform and sform
            both hold the image's affine (so nnU-Net's SimpleITK reader and nibabel agree).
        out_dir
            Folder of the BIDS-derivatives datasets, one per source dataset: each mask goes to
            :func:`lesionlib.bids.prediction_mask_path` ``(out_dir, record)``, i.e.
            ``<out_dir>/<record.dataset>/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz``,
            with its JSON sidecar, written by :func:`lesionlib.bids.save_prediction` (atomically; a
            dataset without ``dataset_description.json`` gets one first). nnU-Net's own outputs go to
            a temporary folder inside ``out_dir``, removed afterwards.
        tta
            Mirroring test-time augmentation (nnU-Net's default: on).
        model_dir
            ``<trainer>__<plans>__<configuration>`` folder; default: the only model of this
            dataset with ``fold_<folds[0]>/<checkpoint>``.
        folds
            The folds of ``model_dir`` to use; several are ensembled (softmax averaged), as nnU-Net
            does after cross-validation.
        description, sidecar
            What produced the masks, for the dataset description (when this call creates it) and each
            mask's sidecar (default: nnU-Net, the configuration and the number of ensembled models);
            items of ``sidecar`` are added to (or replace) the default sidecar items (model folder,
            folds, checkpoint, test-time augmentation, tile step).

        Returns
        -------
        list of Path
            One per record, in order. Each mask has exactly the input image's shape and affine
            (voxel grid, orientation and spacing of the file on disk), values {0, 1}.
        """
        records = list(records)
        if not records:
            return []
        folds = list(folds)
        model = self._checked_prediction_inputs(records, out_dir, model_dir, folds, checkpoint)
        out_dir = Path(out_dir)
        ids = [r.case_id for r in records]
        out_dir.mkdir(parents=True, exist_ok=True)

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".nnunet_predict_", dir=out_dir) as tmp_name:
            tmp = Path(tmp_name)
            inputs, geometry = _stage_prediction_inputs(records, tmp / "inputs")
            spec = {
                "model_dir": str(model.resolve()), "folds": folds, "checkpoint": checkpoint,
                "device": self.device, "use_mirroring": bool(tta), "tile_step_size": float(tile_step_size),
                "inputs": inputs, "outputs": [str(tmp / "out" / cid) for cid in ids],
                "num_processes": self.num_processes,
            }
            (tmp / "out").mkdir()
            spec_path = tmp / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=2))
            self._run("predict", [sys.executable, "-m", "lesionlib.nnunet.predict_worker", spec_path])
            if description is None:
                description = (f"lesion segmentation by nnU-Net v2 ({self.configuration}, "
                               f"{len(folds)} model(s) ensembled)")
            items = {"model": "nnU-Net", "configuration": self.configuration, "model_dir": str(model.resolve()),
                     "folds": folds, "checkpoint": checkpoint, "test_time_augmentation": bool(tta),
                     "tile_step_size": float(tile_step_size), **(sidecar or {})}
            outputs = [bids.save_prediction(_prediction_image(tmp / "out" / f"{rec.case_id}.nii.gz", rec, geom),
                                            out_dir, rec, description=description, sidecar=items)
                       for rec, geom in zip(records, geometry)]
        self.timings_s["predict"] = time.perf_counter() - start
        return outputs

    def _checked_prediction_inputs(self, records: Sequence[ImageRecord], out_dir: Path | str,
                                   model_dir: Path | str | None, folds: list, checkpoint: str) -> Path:
        """Everything :meth:`predict` needs checked before it writes anything; returns the model folder."""
        require_valid(records, purpose="predict")  # every bad image named, before anything is written
        model = Path(model_dir) if model_dir is not None else self._single_model(folds[0], checkpoint)
        for fold in folds:
            if not (model / f"fold_{fold}" / checkpoint).is_file():
                raise FileNotFoundError(f"{model / f'fold_{fold}' / checkpoint}: no such checkpoint")
        ids = [r.case_id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate case ids among the records to predict: {sorted({i for i in ids if ids.count(i) > 1})}")
        for rec in records:  # a dataset name that cannot name a folder fails before anything is written
            bids.prediction_root(Path(out_dir), rec.dataset)
        return model

    def evaluate(self, records: Sequence[ImageRecord], pred_dir: Path | str, *, out_csv: Path | str | None = None,
                 metadata: Mapping[str, Any] | None = None):
        """Score predictions from :meth:`predict` (``pred_dir``: its ``out_dir``) against the records' masks
        (see :func:`evaluate_predictions`)."""
        meta = {"method": "nnunet", **(metadata or {})}
        start = time.perf_counter()
        table = evaluate_predictions(records, pred_dir, out_csv=out_csv, metadata=meta)
        self.timings_s["evaluate"] = time.perf_counter() - start
        return table


def _prediction_image(raw_path: Path, rec: ImageRecord, geometry: tuple) -> nib.Nifti1Image:
    """nnU-Net's output for ``rec`` as a uint8 {0, 1} mask on the input's exact grid (shape, affine, orientation codes)."""
    shape, affine, codes = geometry
    if not raw_path.is_file():
        raise RuntimeError(f"{raw_path}: nnU-Net wrote no prediction for {rec.case_id}")
    pred = load_nifti(raw_path)
    mismatch = grid_mismatch(pred, (shape, affine))
    if mismatch:
        raise RuntimeError(f"{raw_path}: prediction is not on the grid of its input {rec.image_path} ({mismatch})")
    mask = nib.Nifti1Image((np.asarray(pred.dataobj) > 0).astype(np.uint8), affine)
    set_geometry(mask, affine, codes)
    return mask


def _stage_prediction_inputs(records: Sequence[ImageRecord], folder: Path) -> tuple[list[list[str]], list[tuple]]:
    """nnU-Net's inputs: a validated float32 copy of each image whose qform and sform both hold the affine
    nibabel sees (so nnU-Net's SimpleITK reader and lesionlib agree on every case's geometry).

    Returns the input file lists and each image's (shape, affine, orientation codes).
    """
    inputs, geometry = [], []
    for rec in tqdm(records, desc="stage inputs", unit="case", disable=len(records) < 10):
        img = load_nifti(rec.image_path)
        staged = save_nifti_atomic(image_for_nnunet(img), folder / image_file_name(rec.case_id))
        inputs.append([str(staged)])
        geometry.append((img.shape, img.affine.copy(), orientation_codes(img)))
        del img
    return inputs, geometry


def resize_plans(plans_file: Path, configuration: str = "3d_fullres", *, width_divisor: int = 1,
                 patch_size: Sequence[int] | None = None) -> dict[str, Any]:
    """Make nnU-Net's network for ``configuration`` narrower and/or its patch smaller, in place.

    nnU-Net sizes its U-Net for a GPU (32 feature maps at full resolution, doubling per stage up to
    320); on a CPU one training step of that network on a 56 x 64 x 56 patch takes seconds. This
    divides ``features_per_stage`` by ``width_divisor`` (at least 4 feature maps per stage) and sets
    ``patch_size`` (each axis a multiple of the network's total stride along it). Everything else —
    topology, normalisation, target spacing, loss, augmentation, schedule — stays nnU-Net's.
    Preprocessing does not depend on either value, so the data need not be re-preprocessed. The
    change is recorded in the plans under ``lesionlib_resized``. Returns the configuration.
    """
    plans = json.loads(Path(plans_file).read_text())
    config = plans["configurations"][configuration]
    arch = config["architecture"]["arch_kwargs"]
    original = {"features_per_stage": list(arch["features_per_stage"]), "patch_size": list(config["patch_size"])}
    if width_divisor < 1:
        raise ValueError(f"width_divisor must be >= 1, got {width_divisor}")
    arch["features_per_stage"] = [max(4, int(f) // int(width_divisor)) for f in arch["features_per_stage"]]
    if patch_size is not None:
        stride = np.prod(np.asarray(arch["strides"], dtype=int), axis=0)
        patch = [int(p) for p in patch_size]
        if len(patch) != len(stride) or any(p % s for p, s in zip(patch, stride)):
            raise ValueError(f"patch_size {patch} must have {len(stride)} axes, each a multiple of the network's "
                             f"total stride {stride.tolist()}")
        config["patch_size"] = patch
    plans["lesionlib_resized"] = {"configuration": configuration, "width_divisor": int(width_divisor),
                                  "original": original, "features_per_stage": arch["features_per_stage"],
                                  "patch_size": config["patch_size"], "spacing": config["spacing"]}
    _write_json_atomic(plans, Path(plans_file))
    return config


def evaluate_predictions(records: Sequence[ImageRecord], pred_dir: Path | str, *,
                         out_csv: Path | str | None = None, metadata: Mapping[str, Any] | None = None):
    """Metrics of each record's prediction against its mask.

    ``pred_dir`` is the folder of the derivative datasets given to :meth:`NnUNetRun.predict`: each
    record's prediction is read from :func:`lesionlib.bids.prediction_mask_path` ``(pred_dir, record)``.

    :func:`lesionlib.metrics.evaluate_records` (spacing from the headers, Dice, Hausdorff in mm,
    ...): one row per record in order, ``metadata`` items as constant columns, written
    atomically to ``out_csv`` when given.
    """
    from lesionlib.metrics import evaluate_records  # lazy: only evaluation needs it

    preds = [bids.prediction_mask_path(pred_dir, rec) for rec in records]
    return evaluate_records(records, preds, metadata=metadata, out_csv=None if out_csv is None else Path(out_csv))
