"""What one cell of the grid does: train (or fine-tune) its method, then segment and score its test sets.

The ``cell`` notebook calls these functions, so that every method is trained and applied the same
way from a notebook, Snakemake or a script, through the :class:`lesionlib.segmenters.Segmenter`
contract (no method is named here).

Run folder layout (``<results>/<profile>/<run_id>/``)::

    cell.ipynb      the executed notebook (written last: the "finished" marker)
    params.yaml     the cell's identity, resolved settings, fit details, stage record
    split.yaml      the splits of the cell's seed
    model/          the method's model (checkpoints, history.csv, nnU-Net results, joblib file)
    predictions/    one BIDS-derivatives dataset per source dataset (:func:`lesionlib.bids.prediction_root`):
        <dataset>/      e.g. synthetic_adult/, synthetic_child/ (atlas_v2/, child_cohort/ on real data)
            dataset_description.json   DatasetType "derivative"; GeneratedBy names the cell
            README
            sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz (+ .json sidecar)
                    one uint8 mask per evaluated image, on that image's own grid
    metrics.csv     one row per image and evaluation set (:mod:`lesionlib.reporting.collect`); its
                    ``pred_path`` is relative to the run folder (``predictions/<dataset>/sub-.../...``)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from lesionlib.experiments import RunSpec, grid_by_id, interactive_dir, resolved_settings, shared_dir
from lesionlib.io import atomic_path
from lesionlib.profile import Profile, load_profile
from lesionlib.segmenters import FitResult, Segmenter, build_segmenter, get_segmenter
from lesionlib.splits import Splits, make_splits

__all__ = ["Cell", "open_cell", "train_cell", "evaluate_cell", "with_overrides", "MODEL_DIR", "PREDICTIONS_DIR"]

log = logging.getLogger(__name__)

MODEL_DIR = "model"
PREDICTIONS_DIR = "predictions"


@dataclass
class Cell:
    """Everything a cell needs: its spec, profile, splits, segmenter and folders."""

    spec: RunSpec
    profile: Profile
    splits: Splits
    segmenter: Segmenter
    out_dir: Path
    results_root: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def parent_model_dir(self) -> Path | None:
        if self.spec.parent is None:
            return None
        return self.results_root / self.profile.name / self.spec.parent / MODEL_DIR


def with_overrides(profile: Profile, method: str, overrides: Mapping[str, Any]) -> Profile:
    """``profile`` with settings of ``method`` changed (validated by the method's ``Settings``: an unknown
    key is an error naming it)."""
    settings = get_segmenter(method).Settings.model_validate({**profile.method(method).model_dump(), **dict(overrides)})
    return profile.model_copy(update={"methods": {**profile.methods, method: settings}})


def open_cell(profile: str | Profile, run_id: str, out_dir: Path | str | None = None, *,
              results_root: Path | str | None = None, overrides: Mapping[str, Any] | None = None,
              progress: bool = False) -> Cell:
    """Resolve cell ``run_id`` of ``profile``: its splits and its segmenter, writing into ``out_dir``.

    ``overrides`` change the method's settings for this cell only (e.g. ``{'epochs_adult': 1}``,
    the way one runs the notebook by hand with papermill); unknown keys are errors; they are recorded in
    ``params.yaml``. Without ``out_dir`` (``None`` or ``""``: the notebook run by hand, in JupyterLab or
    with papermill) the cell writes into a fresh ``<results>/<profile>/interactive/<run_id>-<UTC time>/``
    (:func:`lesionlib.experiments.interactive_dir`), never into the repository nor into the grid's folder
    of the cell; the grid (Snakemake) passes the cell's own folder.
    """
    from lesionlib import config

    prof = load_profile(profile) if isinstance(profile, str) else profile
    grid = grid_by_id(prof)
    if run_id not in grid:
        raise KeyError(f"unknown run id {run_id!r} in profile {prof.name!r}; see `lesionlib grid list`")
    spec = grid[run_id]
    if overrides:
        prof = with_overrides(prof, spec.method, overrides)
    root = Path(results_root or config.results_root()).resolve()
    out = Path(out_dir) if out_dir else interactive_dir(prof.name, run_id, root)
    segmenter = build_segmenter(spec.method, prof, seed=spec.seed, model_dir=out / MODEL_DIR,
                                shared_dir=shared_dir(prof.name, spec.method, root), progress=progress)
    return Cell(spec, prof, make_splits(prof, spec.seed), segmenter, out, root, dict(overrides or {}))


def train_cell(cell: Cell) -> FitResult:
    """Train (or fine-tune from the parent cell's model) and record the split and settings.

    Writes ``split.yaml`` and ``params.yaml`` (identity, resolved settings, fit details) in the
    cell's ``out_dir``.
    """
    spec = cell.spec
    train, val = cell.splits.training(spec.train_set, spec.fine_tuned)
    with atomic_path(cell.out_dir / "split.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cell.splits.describe(), sort_keys=False))
    if spec.fine_tuned:
        fit = cell.segmenter.fine_tune(cell.parent_model_dir, train)
    else:
        fit = cell.segmenter.fit(train, val, stage=spec.stage)
    params = {**spec.params(), "data_source": cell.splits.data_source,
              "encoder_pretrained": fit.encoder_pretrained, "encoder_note": fit.encoder_note,
              "resolved": resolved_settings(spec, cell.profile)["settings"], "overrides": cell.overrides,
              "fit": fit.details}
    with atomic_path(cell.out_dir / "params.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(_plain(params), sort_keys=False))
    return fit


def evaluate_cell(cell: Cell, fit: FitResult) -> pd.DataFrame:
    """Segment every evaluation set of the cell (each image once) and score it into ``metrics.csv``.

    Masks go to ``out_dir/predictions/<dataset>/`` (one BIDS-derivatives dataset per source
    dataset, whose ``dataset_description.json`` names the cell) on each image's own grid; the rows
    carry the cell's identity, ``data_source``, ``encoder_pretrained`` and ``eval_set``. Returns the
    table written.
    """
    from lesionlib import bids
    from lesionlib.data.validate import require_valid
    from lesionlib.metrics import evaluate_records
    from lesionlib.segmenters import segmenter_labels

    spec = cell.spec
    eval_sets = cell.splits.evaluation(spec.train_set, spec.fine_tuned)
    unique = {(r.dataset, r.case_id): r for records in eval_sets.values() for r in records}
    require_valid(list(unique.values()), purpose="evaluate")  # every bad file named before any prediction
    predictions = cell.out_dir / PREDICTIONS_DIR
    training = f"trained on {spec.train_set}" + (", fine-tuned on the few-shot child images" if spec.fine_tuned else "")
    description = (f"grid cell {spec.run_id} of profile {cell.profile.name}: "
                   f"{segmenter_labels().get(spec.method, spec.method)} {training}, seed {spec.seed}")
    for record in {r.dataset: r for r in unique.values()}.values():  # each dataset described once, first
        bids.write_prediction_dataset(predictions, record, description=description, overwrite=True)
    paths = dict(zip(unique, cell.segmenter.predict(list(unique.values()), predictions)))
    labels = {"method": spec.method, "train_set": spec.train_set, "fine_tuned": spec.fine_tuned,
              "seed": spec.seed, "profile": cell.profile.name, "data_source": cell.splits.data_source,
              "encoder_pretrained": "" if fit.encoder_pretrained is None else fit.encoder_pretrained,
              "encoder_note": fit.encoder_note}
    device = None if cell.profile.device == "cpu" else "auto"  # distances on the GPU when there is one
    tables = [evaluate_records(records, [paths[(r.dataset, r.case_id)] for r in records], device=device,
                               metadata={**labels, "eval_set": eval_set}, relative_to=cell.out_dir)
              for eval_set, records in eval_sets.items()]
    # an empty evaluation set (e.g. no validation image left by the subset rule) adds no rows, and must not turn
    # the other tables' boolean and integer columns into floats through pd.concat
    metrics = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
    with atomic_path(cell.out_dir / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    return metrics


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, Paths -> str, recursively (for YAML)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
