"""The paper's experiment grid, expanded from a profile of ``experiments.yaml``.

Cells (for every seed of the profile's ``seeds`` list):

* {U-Net, Res-U-Net, nnU-Net} x {trained on adult full, adult subset}, not fine-tuned;
* the same six, fine-tuned on 5 child images (each depends on its parent adult run);
* {U-Net, Res-U-Net, nnU-Net} trained on the 5 child images alone;
* LesionGnb (deterministic: one run, with the profile's first seed).

Every cell has a stable ``run_id`` (readable, e.g. ``resunet_adult-subset_ft-child5_seed1``), a
folder ``<results_root>/<profile>/<run_id>/`` and the papermill parameters of each of its stages:
``train`` then ``evaluate`` for the networks (notebooks ``train.py``, ``evaluate.py``), a single
``lesiongnb`` stage for the baseline. A profile may override the grid with a ``grid`` mapping
(``methods``, ``adult_train_sets``, ``fine_tune``, ``child_only``, ``lesiongnb``) and select real
data with ``adult_dataset`` / ``child_dataset`` (manifest names; default the synthetic cohorts).

Command line (used by the Snakefile)::

    python -m lesionlib.experiments list --profile quick
    python -m lesionlib.experiments run --profile quick --run-id unet_adult-full_seed0 --stage train
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lesionlib import config

__all__ = [
    "METHODS",
    "ADULT_TRAIN_SETS",
    "FEW_SHOT_N",
    "RunSpec",
    "Cohorts",
    "load_cohorts",
    "training_records",
    "evaluation_records",
    "metrics_table",
    "expand_grid",
    "grid_by_id",
    "run_id_for",
    "run_report",
    "run_stage",
    "stage_notebook",
    "register_cli",
    "main",
]

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("unet", "resunet", "nnunet")
ADULT_TRAIN_SETS: tuple[str, ...] = ("adult_full", "adult_subset")
FEW_SHOT_N = 5
"""Number of child images used for fine-tuning and for training on children alone."""

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
STAGE_NOTEBOOKS = {"train": "train.py", "evaluate": "evaluate.py", "lesiongnb": "lesiongnb.py"}
REPORT_NOTEBOOKS = ("data", "tables", "figures")
REPORT_DIR = "_report"


def run_id_for(method: str, train_set: str, fine_tuned: bool, seed: int) -> str:
    """Stable, readable id of a grid cell: ``'<method>_<train-set>[_ft-child5]_seed<k>'``.

    LesionGnb (no ``train_set``) is ``'lesiongnb_seed<k>'``.
    """
    parts = [method]
    if train_set:
        parts.append(train_set.replace("_", "-"))
    if fine_tuned:
        parts.append(f"ft-child{FEW_SHOT_N}")
    parts.append(f"seed{int(seed)}")
    return "_".join(parts)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid.

    Attributes
    ----------
    run_id
        Folder name under ``<results_root>/<profile>/``; stable across invocations.
    method
        ``'unet' | 'resunet' | 'nnunet' | 'lesiongnb'``.
    train_set
        ``'adult_full' | 'adult_subset' | 'child5'``, ``''`` for LesionGnb.
    fine_tuned
        Fine-tuned on ``FEW_SHOT_N`` child images, starting from the ``parent`` run's checkpoint.
    seed
        Training seed (also drives the few-shot selection of child images).
    parent
        ``run_id`` of the adult run a fine-tuning cell starts from, else ``None``.
    stages
        Ordered stages, each executed as one notebook: ``('train', 'evaluate')`` or ``('lesiongnb',)``.
    settings
        Profile settings the notebooks need (epochs, patch size, device, datasets, ...).
    """

    run_id: str
    profile: str
    method: str
    train_set: str
    fine_tuned: bool
    seed: int
    parent: str | None
    stages: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def run_dir(self, results_root: Path | None = None) -> Path:
        """``<results_root>/<profile>/<run_id>``."""
        return Path(results_root or config.results_root()) / self.profile / self.run_id

    @property
    def epochs(self) -> int:
        """Training epochs of this cell (adult / fine-tuning / child-only; nnU-Net's own setting)."""
        s = self.settings
        if self.method == "nnunet":
            return int(s.get("nnunet_epochs", 1))
        if self.fine_tuned:
            return int(s.get("epochs_finetune", 1))
        if self.train_set == "child5":
            return int(s.get("epochs_child_only", 1))
        return int(s.get("epochs_adult", 1))

    def params(self) -> dict[str, Any]:
        """The run's parameters (written to ``params.yaml``; plain YAML types only)."""
        s = self.settings
        adult_dataset = str(s.get("adult_dataset", "synthetic_adult"))
        child_dataset = str(s.get("child_dataset", "synthetic_child"))
        real = not (adult_dataset.startswith("synthetic") and child_dataset.startswith("synthetic"))
        iterations = s.get("nnunet_iterations") if self.method == "nnunet" else s.get("iterations_per_epoch")
        return {
            "run_id": self.run_id,
            "profile": self.profile,
            "method": self.method,
            "train_set": self.train_set,
            "fine_tuned": self.fine_tuned,
            "seed": self.seed,
            "parent_run": self.parent or "",
            "epochs": self.epochs,
            "iterations_per_epoch": int(iterations or 1),
            "batch_size": int(s.get("batch_size", 2)),
            "patch_size": [int(v) for v in s.get("patch_size", [32, 32, 32])],
            "device": str(s.get("device", "cpu")),
            "resolution_mm": float(s.get("resolution_mm", 1.0)),
            "adult_dataset": adult_dataset,
            "child_dataset": child_dataset,
            "data_source": "real" if real else "synthetic",
            "few_shot_n": FEW_SHOT_N,
            "inference_overlap": float(s.get("inference_overlap", 0.5)),
            "inference_tta": bool(s.get("inference_tta", True)),
            "nnunet_final_validation": bool(s.get("nnunet_final_validation", True)),
        }

    def notebook_parameters(self, stage: str, out_dir: Path, results_root: Path | None = None) -> dict[str, Any]:
        """Papermill parameters of one stage.

        ``out_dir`` is where the stage writes (the runner's staging folder); ``run_dir`` is the
        run's final folder (earlier stages' outputs, e.g. the checkpoint the evaluation loads);
        ``init_from`` the parent run's folder for fine-tuning cells, ``''`` otherwise.
        """
        if stage not in self.stages:
            raise ValueError(f"run {self.run_id}: unknown stage {stage!r}; stages are {self.stages}")
        root = Path(results_root or config.results_root())
        params = self.params()
        params.update(
            stage=stage,
            out_dir=str(Path(out_dir).resolve()),
            run_dir=str(self.run_dir(root).resolve()),
            init_from=str((root / self.profile / self.parent).resolve()) if self.parent else "",
        )
        return params


def _profile_settings(profile: str | Mapping[str, Any], path: Path | None) -> tuple[str, dict[str, Any]]:
    if isinstance(profile, str):
        settings = config.load_profile(profile, path)
    else:
        settings = dict(profile)
    name = str(settings.get("name", "custom"))
    return name, settings


def expand_grid(profile: str | Mapping[str, Any] = config.DEFAULT_PROFILE, *,
                experiments_path: Path | None = None) -> list[RunSpec]:
    """All cells of a profile's grid, in dependency order (parents before fine-tuning cells).

    Parameters
    ----------
    profile
        A profile name of ``experiments.yaml`` or an already loaded settings mapping (with ``name``).
    experiments_path
        Another experiments file (default :func:`lesionlib.config.experiments_file`).

    Raises
    ------
    KeyError
        Unknown profile. ``ValueError``: empty ``seeds`` or an unknown method in ``grid``.
    """
    name, s = _profile_settings(profile, experiments_path)
    seeds = [int(v) for v in s.get("seeds", [0])]
    if not seeds:
        raise ValueError(f"profile {name!r}: 'seeds' is empty")
    grid = dict(s.get("grid") or {})
    methods = tuple(grid.get("methods", METHODS))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"profile {name!r}: unknown methods {unknown}; known {list(METHODS)}")
    adult_sets = tuple(grid.get("adult_train_sets", ADULT_TRAIN_SETS))
    fine_tune = bool(grid.get("fine_tune", True))
    child_only = bool(grid.get("child_only", True))
    with_gnb = bool(grid.get("lesiongnb", True))

    runs: list[RunSpec] = []

    def add(method: str, train_set: str, fine_tuned: bool, seed: int, parent: str | None,
            stages: tuple[str, ...] = ("train", "evaluate")) -> None:
        runs.append(RunSpec(run_id_for(method, train_set, fine_tuned, seed), name, method, train_set,
                            fine_tuned, seed, parent, stages, s))

    for seed in seeds:
        for train_set in adult_sets:
            for method in methods:
                add(method, train_set, False, seed, None)
        if fine_tune:
            for train_set in adult_sets:
                for method in methods:
                    add(method, train_set, True, seed, run_id_for(method, train_set, False, seed))
        if child_only:
            for method in methods:
                add(method, "child5", False, seed, None)
    if with_gnb:
        add("lesiongnb", "", False, seeds[0], None, ("lesiongnb",))
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids)), "run ids must be unique"
    return runs


def grid_by_id(profile: str | Mapping[str, Any] = config.DEFAULT_PROFILE, *,
               experiments_path: Path | None = None) -> dict[str, RunSpec]:
    """:func:`expand_grid` as a mapping ``run_id -> RunSpec``."""
    return {r.run_id: r for r in expand_grid(profile, experiments_path=experiments_path)}


def stage_notebook(stage: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """The jupytext ``.py`` notebook that executes ``stage``."""
    try:
        return Path(notebooks_dir) / STAGE_NOTEBOOKS[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}; known {sorted(STAGE_NOTEBOOKS)}") from None


def run_stage(spec: RunSpec, stage: str, *, results_root: Path | None = None,
              notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: float | None = None) -> Path:
    """Execute one stage of a cell through :func:`lesionlib.notebook_runner.run_notebook`.

    Returns the executed notebook ``<run_dir>/<stage>.ipynb``; on failure the partial notebook is
    left under ``<run_dir>/FAILED-<stage>-<time>/`` and the exception propagates.
    """
    from lesionlib.notebook_runner import run_notebook

    run_dir = spec.run_dir(results_root)
    return run_notebook(
        stage_notebook(stage, notebooks_dir), run_dir, stage=stage,
        parameters=lambda out_dir: spec.notebook_parameters(stage, out_dir, results_root),
        run_params=spec.params(), timeout_s=timeout_s,
    )


# ---------------------------------------------------------------------------------------------
# What a cell trains on and is evaluated on (used by the train / evaluate / lesiongnb notebooks)
# ---------------------------------------------------------------------------------------------

ADULT_SPLIT_SEED = 0
"""Seed of the adult train/validation split: fixed, so every run is validated on the same adults."""
ADULT_VAL_FRACTION = 0.2


@dataclass
class Cohorts:
    """The records of one profile and the splits every cell of the grid draws from.

    ``adult_train``/``adult_val``: subject-level split of the adult cohort (seed
    :data:`ADULT_SPLIT_SEED`, 20% validation), identical in every run. ``subset_train`` /
    ``subset_val``: their members kept by the paper's ATLAS subset rule. ``few_shot``: the
    :class:`lesionlib.samplers.FewShotSplit` of the child cohort for the run's seed (5 images from 5
    children for training; ``few_shot.test``, every image of the other children, is the child test
    set of *every* run of that seed, fine-tuned or not, so the columns of Table 1 are comparable).
    """

    adult: list
    child: list
    adult_train: list
    adult_val: list
    subset_train: list
    subset_val: list
    subset_report: dict[str, Any]
    few_shot: Any

    def split_description(self) -> dict[str, Any]:
        """Serialisable description of all splits (written as ``split.yaml`` by the notebooks)."""
        return {
            "adult_split_seed": ADULT_SPLIT_SEED,
            "adult_train": [r.case_id for r in self.adult_train],
            "adult_val": [r.case_id for r in self.adult_val],
            "subset_train": [r.case_id for r in self.subset_train],
            "subset_val": [r.case_id for r in self.subset_val],
            "subset_report": self.subset_report,
            "few_shot": self.few_shot.to_dict(),
        }


def load_cohorts(profile: str, *, adult_dataset: str = "synthetic_adult", child_dataset: str = "synthetic_child",
                 seed: int = 0, few_shot_n: int = FEW_SHOT_N, progress: bool = False) -> Cohorts:
    """Discover both cohorts of ``profile`` and compute the splits (see :class:`Cohorts`).

    Raises :class:`lesionlib.io.DataValidationError` (from discovery) when a cohort is missing.
    """
    from lesionlib.data import discover
    from lesionlib.samplers import atlas_subset, few_shot_split, train_val_split

    adult = discover(adult_dataset, profile=profile, progress=progress)
    child = discover(child_dataset, profile=profile, progress=progress)
    adult_train, adult_val = train_val_split(adult, val_fraction=ADULT_VAL_FRACTION, seed=ADULT_SPLIT_SEED)
    kept, report = atlas_subset(adult, progress=progress)
    kept_ids = {r.case_id for r in kept}
    few_shot = few_shot_split(child, n_images=few_shot_n, seed=seed)
    return Cohorts(adult, child, adult_train, adult_val,
                   [r for r in adult_train if r.case_id in kept_ids], [r for r in adult_val if r.case_id in kept_ids],
                   report.to_dict(), few_shot)


def training_records(cohorts: Cohorts, train_set: str, fine_tuned: bool) -> tuple[list, list]:
    """``(train, validation)`` records of a cell: the 5 child images (no validation) for fine-tuning
    and child-only cells, else the adult (subset) training and validation split."""
    if fine_tuned or train_set == "child5":
        return list(cohorts.few_shot.train), []
    if train_set == "adult_full":
        return list(cohorts.adult_train), list(cohorts.adult_val)
    if train_set == "adult_subset":
        return list(cohorts.subset_train), list(cohorts.subset_val)
    if train_set == "":  # LesionGnb: trained on the adult training split
        return list(cohorts.adult_train), []
    raise ValueError(f"unknown train_set {train_set!r}")


def evaluation_records(cohorts: Cohorts, train_set: str, fine_tuned: bool) -> dict[str, list]:
    """``{eval_set: records}`` of a cell: ``child_test`` always; ``adult_val`` for models trained on
    adults and not fine-tuned (the subset's validation images for subset-trained models)."""
    out: dict[str, list] = {}
    if not fine_tuned and train_set in ("adult_full", ""):
        out["adult_val"] = list(cohorts.adult_val)
    elif not fine_tuned and train_set == "adult_subset":
        out["adult_val"] = list(cohorts.subset_val)
    out["child_test"] = list(cohorts.few_shot.test)
    return out


def metrics_table(records: Sequence[Any], pred_paths: Sequence[Path], *, eval_set: str, params: Mapping[str, Any],
                  relative_to: Path | None = None, progress: bool = False):
    """The ``metrics.csv`` rows of one evaluation set (the contract of :mod:`lesionlib.reporting.collect`).

    :func:`lesionlib.metrics.evaluate_records` labelled with the run's ``method, train_set,
    fine_tuned, seed, profile, data_source`` (from ``params``) and ``eval_set``.
    """
    from lesionlib.metrics import evaluate_records

    labels = {key: params[key] for key in ("method", "train_set", "fine_tuned", "seed", "profile", "data_source")}
    return evaluate_records(records, pred_paths, metadata={**labels, "eval_set": eval_set},
                            relative_to=relative_to, progress=progress)


def run_report(name: str, profile: str = config.DEFAULT_PROFILE, *, results_root: Path | None = None,
               notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: float | None = None) -> Path:
    """Execute a profile-level notebook (``data``, ``tables``, ``figures``) into ``<results>/<profile>/_report/``.

    Its parameters: ``profile``, ``results_root``, ``out_dir`` (the staging folder) and the
    profile's data settings (``resolution_mm``, ``n_adult``, ``n_children``, ``synth_seed``,
    ``adult_dataset``, ``child_dataset``).
    """
    from lesionlib.notebook_runner import run_notebook

    if name not in REPORT_NOTEBOOKS:
        raise ValueError(f"unknown report notebook {name!r}; known {list(REPORT_NOTEBOOKS)}")
    root = Path(results_root or config.results_root()).resolve()
    s = config.load_profile(profile)
    fixed = {
        "profile": profile,
        "results_root": str(root),
        "resolution_mm": float(s.get("resolution_mm", 1.0)),
        "n_adult": int(s.get("n_adult", 0)),
        "n_children": int(s.get("n_children", 20)),
        "synth_seed": int(s.get("synth_seed", 0)),
        "adult_dataset": str(s.get("adult_dataset", "synthetic_adult")),
        "child_dataset": str(s.get("child_dataset", "synthetic_child")),
    }
    return run_notebook(Path(notebooks_dir) / f"{name}.py", root / profile / REPORT_DIR, stage=name,
                        parameters=lambda out_dir: {**fixed, "out_dir": str(out_dir)},
                        timeout_s=timeout_s)


def _add_commands(sub: argparse._SubParsersAction) -> None:
    p_list = sub.add_parser("list", help="print run_id, method, train_set, fine_tuned, seed, parent")
    p_list.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p_run = sub.add_parser("run", help="execute one stage of one run")
    p_run.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p_run.add_argument("--run-id", required=True)
    p_run.add_argument("--stage", required=True, choices=sorted(STAGE_NOTEBOOKS))
    p_run.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    p_run.add_argument("--timeout-s", type=float, default=None, help="per-cell timeout")
    p_rep = sub.add_parser("report", help="execute a profile-level notebook (data, tables, figures)")
    p_rep.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p_rep.add_argument("--notebook", required=True, choices=REPORT_NOTEBOOKS)
    p_rep.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    p_rep.add_argument("--timeout-s", type=float, default=None, help="per-cell timeout")


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "report":
        run_report(args.notebook, args.profile, results_root=args.results, timeout_s=args.timeout_s)
        return 0
    grid = grid_by_id(args.profile)
    if args.command == "list":
        for r in grid.values():
            print("\t".join([r.run_id, r.method, r.train_set or "-", str(r.fine_tuned), str(r.seed),
                             r.parent or "-", ",".join(r.stages)]))
        return 0
    if args.run_id not in grid:
        parser.error(f"unknown run id {args.run_id!r} in profile {args.profile!r}")
    run_stage(grid[args.run_id], args.stage, results_root=args.results, timeout_s=args.timeout_s)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """``lesionlib grid {list,run,report}`` (for :mod:`lesionlib.cli`)."""
    parser = subparsers.add_parser("grid", help="the experiment grid: list cells, run a stage, run a report notebook",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_commands(sub)
    parser.set_defaults(func=lambda args: _dispatch(args, parser))


def main(argv: list[str] | None = None) -> int:
    """``list`` the grid of a profile, ``run`` one stage of one cell, or a ``report`` notebook."""
    parser = argparse.ArgumentParser(prog="python -m lesionlib.experiments", description=__doc__.splitlines()[0])
    _add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return _dispatch(args, parser)


if __name__ == "__main__":
    sys.exit(main())
