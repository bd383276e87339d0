"""What the ``cell`` notebook shows about its run: what it trains on, how training went, how it scored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from lesionlib.cells import Cell
    from lesionlib.segmenters import FitResult

__all__ = ["cell_summary", "fit_summary", "metrics_summary"]

_TRAIN_SET_TEXT = {"adult_full": "every adult training image", "adult_subset": "the adult subset",
                   "child5": "the few-shot child images"}


def cell_summary(cell: "Cell") -> str:
    """Markdown: the cell's method, training set, parent, image counts and resolved settings."""
    spec, seg = cell.spec, cell.segmenter
    train, val = cell.splits.training(spec.train_set, spec.fine_tuned)
    evals = cell.splits.evaluation(spec.train_set, spec.fine_tuned)
    what = f"fine-tuning `{spec.parent}` on" if spec.fine_tuned else "trained on"
    lines = [
        f"**{seg.label}** (`{spec.run_id}`, profile `{cell.profile.name}`, seed {spec.seed}, "
        f"{cell.splits.data_source} data): {what} {_TRAIN_SET_TEXT[spec.train_set]} — "
        f"{len(train)} training and {len(val)} validation images.",
        "Evaluated on " + ", ".join(f"`{k}` ({len(v)} images)" for k, v in evals.items()) + ".",
        f"Outputs (model, predictions, `metrics.csv`): `{cell.out_dir}`.",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {_cell_text(v)} |" for k, v in seg.plan(spec.stage, len(train)).items()]
    if cell.overrides:
        lines += ["", "Changed for this run only (`overrides`): "
                  + ", ".join(f"`{k}` = {_cell_text(v)}" for k, v in cell.overrides.items()) + "."]
    return "\n".join(lines)


def _cell_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " x ".join(str(v) for v in value)
    return str(value).replace("|", "/")


def fit_summary(fit: "FitResult") -> Any:
    """The per-epoch history when the method keeps one, else its fit details as a table."""
    if isinstance(fit.history, pd.DataFrame) and len(fit.history):
        return fit.history.round(4)
    rows = [{"detail": k, "value": _cell_text(v)} for k, v in fit.details.items()]
    if fit.encoder_pretrained is not None:
        rows.append({"detail": "encoder_pretrained", "value": str(fit.encoder_pretrained)})
    return pd.DataFrame(rows)


def metrics_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD and count of Dice and distances per evaluation set, and the undefined distances."""
    cols = ["dice", "hausdorff_mm", "hausdorff95_mm", "lesion_wise_f1"]
    table = metrics.groupby("eval_set", sort=False)[cols].agg(["mean", "std", "count"]).round(3)
    table[("hausdorff_mm", "undefined")] = metrics.groupby("eval_set", sort=False)["hausdorff_mm"].apply(
        lambda s: int(s.isna().sum()))
    table[("empty predictions", "n")] = metrics.groupby("eval_set", sort=False)["pred_volume_ml"].apply(
        lambda s: int((s == 0).sum()))
    return table
