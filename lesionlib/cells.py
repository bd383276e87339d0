"""What one cell of the experiment grid does: train (or fine-tune) a method, then segment with it.

The ``train`` and ``evaluate`` notebooks call these two functions, so that every method is
trained and applied the same way whether it runs from a notebook, Snakemake or a script.

Run folder layout (``<results>/<profile>/<run_id>/``)::

    model/      U-Net / Res-U-Net run of lesionlib.train (checkpoints, history.csv, params.yaml),
                or LesionGnb's fitted model (lesiongnb.joblib)
    nnunet/     nnU-Net v2 workspace of lesionlib.nnunet (raw, preprocessed, results, logs)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord

__all__ = ["NNUNET_DATASETS", "nnunet_dataset", "train_cell", "predict_cell", "evaluate_cell",
           "MONAI_METHODS", "GNB_MODEL_FILE"]

log = logging.getLogger(__name__)

MONAI_METHODS = ("unet", "resunet")
METHODS = MONAI_METHODS + ("nnunet", "lesiongnb")
GNB_MODEL_FILE = Path("model") / "lesiongnb.joblib"
#: LesionGnb's working grid: the toolbox's 1.5 mm MNI grid, or the data's own when coarser.
GNB_MIN_RESOLUTION_MM = 1.5

#: nnU-Net dataset (id, name) of each kind of training set, inside a run's own workspace.
NNUNET_DATASETS: dict[str, tuple[int, str]] = {
    "adult": (501, "Adult"),
    "finetune": (502, "ChildFT"),
    "child5": (503, "Child"),
}


def nnunet_dataset(train_set: str, fine_tuned: bool) -> tuple[int, str]:
    """nnU-Net dataset id and name of a cell: adult, child fine-tuning, or child-only training."""
    if fine_tuned:
        return NNUNET_DATASETS["finetune"]
    return NNUNET_DATASETS["child5" if train_set == "child5" else "adult"]


def train_cell(method: str, train_records: Sequence[ImageRecord], val_records: Sequence[ImageRecord],
               out_dir: Path, *, train_set: str, fine_tuned: bool, init_from: Path | str | None,
               epochs: int, iterations_per_epoch: int, batch_size: int, patch_size: Sequence[int],
               resolution_mm: float, seed: int, device: str,
               nnunet_final_validation: bool = True) -> dict[str, Any]:
    """Train one cell's model into ``out_dir`` and return a short summary (for display).

    ``init_from`` is the parent run's folder for fine-tuning cells (its ``model/checkpoint_best.pt``
    or its nnU-Net workspace). U-Net / Res-U-Net go through :func:`lesionlib.train.train`
    (``out_dir/model``); nnU-Net through :class:`lesionlib.nnunet.NnUNetRun` (``out_dir/nnunet``):
    plan + preprocess + train, or, when fine-tuning, plans transfer + preprocess + training from
    the adult weights.
    """
    out_dir = Path(out_dir)
    if fine_tuned and not init_from:
        raise ValueError(f"fine-tuning {method} needs init_from (the parent run's folder)")
    if method in MONAI_METHODS:
        from lesionlib.train import TrainConfig, train

        init = str(Path(init_from) / "model" / "checkpoint_best.pt") if fine_tuned else None
        cfg = TrainConfig(model=method, epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                          batch_size=batch_size, patch_size=tuple(patch_size), spacing_mm=(resolution_mm,) * 3,
                          seed=seed, device=device, init_from=init, progress=False)
        result = train(cfg, train_records, val_records, out_dir / "model", split_info={"train_set": train_set})
        return {"history": result.history, "best_epoch": result.best_epoch,
                "best_val_dice": result.best_val_dice, "encoder_pretrained": result.encoder_pretrained}
    if method == "nnunet":
        from lesionlib.nnunet import NnUNetRun

        run = NnUNetRun(out_dir / "nnunet", *nnunet_dataset(train_set, fine_tuned), device=device)
        run.export(train_records, progress=False)
        if fine_tuned:
            parent = NnUNetRun(Path(init_from) / "nnunet", *NNUNET_DATASETS["adult"], device=device)
            fold_dir = run.finetune(parent, epochs=epochs, iterations=iterations_per_epoch,
                                    final_validation=nnunet_final_validation)
        else:
            run.plan_and_preprocess()
            fold_dir = run.train("all", epochs=epochs, iterations=iterations_per_epoch,
                                 final_validation=nnunet_final_validation)
        return {"model_dir": fold_dir, "stage_times_s": dict(run.timings_s)}
    if method == "lesiongnb":
        from lesionlib.baselines.gnb import LesionGnb

        gnb = LesionGnb(resolution_mm=max(GNB_MIN_RESOLUTION_MM, float(resolution_mm)), seed=seed)
        gnb.fit(train_records, progress=False)
        gnb.save(out_dir / GNB_MODEL_FILE)
        return {"model_dir": out_dir / GNB_MODEL_FILE.parent, "n_training_voxels": gnb.n_training_voxels_}
    raise ValueError(f"a grid cell trains one of {METHODS}, not {method!r}")


def predict_cell(method: str, run_dir: Path, records: Sequence[ImageRecord], out_dir: Path, *,
                 train_set: str, fine_tuned: bool, device: str, overlap: float = 0.5,
                 tta: bool = True) -> list[Path]:
    """Segment ``records`` with the model trained in ``run_dir``; masks on each image's own grid.

    ``overlap`` is the sliding-window overlap of U-Net / Res-U-Net inference; ``tta`` switches
    nnU-Net's mirroring test-time augmentation (nnU-Net's own tile step stays at its default).
    Returns the written mask paths, in the order of ``records``.
    """
    run_dir = Path(run_dir)
    if method in MONAI_METHODS:
        from lesionlib.predict import predict_records

        return predict_records(run_dir / "model" / "checkpoint_best.pt", records, out_dir, overlap=overlap,
                               device=device, progress=False)
    if method == "nnunet":
        from lesionlib.nnunet import NnUNetRun

        run = NnUNetRun(run_dir / "nnunet", *nnunet_dataset(train_set, fine_tuned), device=device)
        return run.predict(records, out_dir, tta=tta)
    if method == "lesiongnb":
        from lesionlib.baselines.gnb import LesionGnb
        from lesionlib.bids import prediction_path
        from lesionlib.io import save_nifti_atomic

        gnb = LesionGnb.load(run_dir / GNB_MODEL_FILE)
        return [save_nifti_atomic(gnb.predict(rec), prediction_path(out_dir, rec.subject, rec.session))
                for rec in tqdm(records, desc="lesiongnb", unit="image")]
    raise ValueError(f"a grid cell predicts with one of {METHODS}, not {method!r}")


def evaluate_cell(method: str, run_dir: Path, eval_sets: Mapping[str, Sequence[ImageRecord]], out_dir: Path, *,
                  params: Mapping[str, Any], train_set: str, fine_tuned: bool, device: str,
                  overlap: float = 0.5, tta: bool = True) -> pd.DataFrame:
    """Segment every evaluation set with the cell's model and score it into ``out_dir/metrics.csv``.

    ``eval_sets`` maps an ``eval_set`` name (``'adult_val'``, ``'child_test'``) to its records;
    masks go to ``out_dir/predictions/<eval_set>/``. ``params`` (method, train_set, fine_tuned,
    seed, profile, data_source) label every row. Returns the table that was written (one row per
    image, :func:`lesionlib.metrics.case_metrics` columns).
    """
    from lesionlib.experiments import metrics_table
    from lesionlib.io import atomic_path

    out_dir = Path(out_dir)
    tables = []
    for eval_set, records in eval_sets.items():
        preds = predict_cell(method, run_dir, records, out_dir / "predictions" / eval_set, train_set=train_set,
                             fine_tuned=fine_tuned, device=device, overlap=overlap, tta=tta)
        tables.append(metrics_table(records, preds, eval_set=eval_set, params=params, relative_to=out_dir))
    metrics = pd.concat(tables, ignore_index=True)
    with atomic_path(out_dir / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    return metrics
