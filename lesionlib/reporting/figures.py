"""Figures 1 and 2 of the paper, and an interactive viewer, from the collected runs.

* Figure 1: axial overlays (nilearn) of each method's prediction on a low-Dice small-lesion child
  image and a high-Dice large-lesion child image; the true lesion outlined, Dice in each title.
* Figure 2: Dice against true lesion volume (mL, log x axis) on the child images, per method
  (seaborn), one panel per training condition.

Images are plotted in world coordinates (nilearn resamples nothing for display; it reads each
image's affine), so native-space child images (LPS, anisotropic voxels) and predictions written on
the input grid overlay correctly. Paths come from the optional ``image_path``, ``pred_path`` and
``gt_path`` columns of ``metrics.csv``; rows without them are skipped with a note.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
import nibabel as nib
import numpy as np
import pandas as pd
import seaborn as sns

from lesionlib.segmenters import get_segmenter, segmenter_labels
from lesionlib.splits import TRAIN_SET_LABELS

__all__ = ["Figure1Cases", "choose_figure1_cases", "condition_label", "figure1_overlays", "forest_plot",
           "figure2_dice_vs_volume", "interactive_viewer", "default_condition", "PATH_COLUMNS"]

log = logging.getLogger(__name__)

PATH_COLUMNS = ("image_path", "pred_path", "gt_path")
_RED = ListedColormap(["red"])


def condition_label(train_set: str, fine_tuned: bool) -> str:
    """Readable training condition: ``'ATLAS subset + fine-tuned'``."""
    label = TRAIN_SET_LABELS.get(train_set, train_set)
    return f"{label} + fine-tuned" if fine_tuned else label


def _child_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["eval_set"] == "child_test"].copy()


@dataclass(frozen=True)
class Figure1Cases:
    """The two child images of Figure 1 and why they were chosen."""

    small_low_dice: str
    large_high_dice: str
    volume_threshold_ml: float


def choose_figure1_cases(df: pd.DataFrame) -> Figure1Cases | None:
    """Pick a low-Dice small-lesion child image and a high-Dice large-lesion one.

    Cases are split at the median true lesion volume (mL) of the child test images; in the lower
    half the case with the lowest Dice averaged over all runs is chosen, in the upper half the one
    with the highest. ``None`` with fewer than two child cases.
    """
    child = _child_rows(df)
    per_case = child.groupby("case_id").agg(dice=("dice", "mean"), volume_ml=("lesion_volume_ml", "first"))
    per_case = per_case.dropna()
    if len(per_case) < 2:
        return None
    threshold = float(per_case["volume_ml"].median())
    small = per_case[per_case["volume_ml"] <= threshold]
    large = per_case[per_case["volume_ml"] > threshold]
    if large.empty:  # all volumes equal
        large = per_case.drop(index=small["dice"].idxmin())
    return Figure1Cases(str(small["dice"].idxmin()), str(large["dice"].idxmax()), threshold)


def _label(method: str) -> str:
    return segmenter_labels().get(method, method)


def _methods_present(child: pd.DataFrame) -> list[str]:
    present = set(child["method"])
    return [m for m in segmenter_labels() if m in present]


def _pick_run(rows: pd.DataFrame, method: str, train_set: str, fine_tuned: bool) -> pd.DataFrame:
    """Rows of the condition to show for ``method`` (methods that do not fine-tune have a single condition)."""
    sel = rows[rows["method"] == method]
    if get_segmenter(method).fine_tunes:
        sel = sel[(sel["train_set"] == train_set) & (sel["fine_tuned"] == fine_tuned)]
    if sel.empty:
        return sel
    return sel[sel["seed"] == sel["seed"].min()]


def _lesion_centre_mm(mask_img: nib.Nifti1Image) -> float | None:
    data = np.asanyarray(mask_img.dataobj) > 0
    if not data.any():
        return None
    ijk = np.argwhere(data).mean(axis=0)
    return float(nib.affines.apply_affine(mask_img.affine, ijk)[2])


FIGURE1_CONDITIONS: tuple[tuple[str, bool], ...] = (
    ("adult_full", False), ("adult_subset", False), ("adult_full", True), ("adult_subset", True), ("child5", False))


def default_condition(df: pd.DataFrame) -> tuple[str, bool]:
    """The first of :data:`FIGURE1_CONDITIONS` with child predictions in ``df`` (adult full, not fine-tuned, first)."""
    child = _child_rows(df)
    for train_set, ft in FIGURE1_CONDITIONS:
        if ((child["train_set"] == train_set) & (child["fine_tuned"] == ft)).any():
            return train_set, ft
    return FIGURE1_CONDITIONS[0]


def figure1_overlays(df: pd.DataFrame, *, train_set: str | None = None, fine_tuned: bool = False,
                     cases: Figure1Cases | None = None) -> plt.Figure | None:
    """Figure 1: axial overlays of each method's prediction on two child images.

    Parameters
    ----------
    df
        Collected runs (needs ``image_path``, ``pred_path``, ``gt_path`` for the chosen cases).
    train_set, fine_tuned
        The training condition shown for U-Net, Res-U-Net and nnU-Net (LesionGnb has one);
        ``train_set=None`` takes :func:`default_condition`.
    cases
        The two case ids; by default :func:`choose_figure1_cases`.

    Returns
    -------
    matplotlib.figure.Figure or None
        Rows: the two cases; columns: methods. The prediction is filled red, the true lesion
        outlined in cyan, cut at the true lesion's centre (world z, mm). ``None`` when there are
        no child predictions with image paths.
    """
    from nilearn import plotting

    child = _child_rows(df)
    if child.empty or not all(c in child.columns for c in PATH_COLUMNS):
        log.info("figure 1: no child predictions with image paths")
        return None
    child = child.dropna(subset=list(PATH_COLUMNS))
    if train_set is None:
        train_set, fine_tuned = default_condition(child)
    cases = cases or choose_figure1_cases(child)
    if cases is None:
        return None
    methods = _methods_present(child)
    fig, axes = plt.subplots(2, len(methods), figsize=(3.2 * len(methods), 6.4), squeeze=False)
    for r, (case_id, kind) in enumerate(((cases.small_low_dice, "small lesion, low Dice"),
                                          (cases.large_high_dice, "large lesion, high Dice"))):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            row = _pick_run(child[child["case_id"] == case_id], method, train_set, fine_tuned)
            if row.empty:
                ax.set_axis_off()
                ax.set_title(f"{_label(method)}\nnot run", fontsize=9)
                continue
            row = row.iloc[0]
            image = nib.load(row["image_path"])
            gt = nib.load(row["gt_path"])
            pred = nib.load(row["pred_path"])
            z = _lesion_centre_mm(gt)
            title = f"{_label(method)} — Dice {row['dice']:.2f}"
            display = plotting.plot_anat(image, display_mode="z", cut_coords=[z if z is not None else 0.0],
                                         axes=ax, annotate=False, draw_cross=False, black_bg=True,
                                         colorbar=False)
            pred_data = np.asanyarray(pred.dataobj) > 0
            if pred_data.any():
                display.add_overlay(nib.Nifti1Image(pred_data.astype(np.float32), pred.affine), cmap=_RED,
                                    transparency=0.55, threshold=0.5, vmin=0.0, vmax=1.0, colorbar=False)
            if np.asanyarray(gt.dataobj).any():
                display.add_contours(nib.Nifti1Image((np.asanyarray(gt.dataobj) > 0).astype(np.uint8), gt.affine),
                                     levels=[0.5], colors="cyan", linewidths=1.0)
            ax.set_title(f"{title}\n{case_id} ({row['lesion_volume_ml']:.1f} mL)", fontsize=8)
        axes[r, 0].text(-0.08, 0.5, kind, transform=axes[r, 0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=9)
    cond = condition_label(train_set, fine_tuned)
    source = ", ".join(sorted(set(child["data_source"])))
    fig.suptitle(f"Figure 1 — predictions (red) and true lesion (cyan); models trained on {cond}; "
                 f"{source} data", fontsize=10)
    return fig


def figure2_dice_vs_volume(df: pd.DataFrame) -> plt.Figure | None:
    """Figure 2: Dice against true lesion volume (mL, log x) on child images, per method.

    One panel per training condition (methods that are not fine-tuned, LesionGnb, appear in the
    adult conditions' panels as a reference); seeds are averaged per case. ``None`` without child rows.
    """
    child = _child_rows(df)
    child = child[child["lesion_volume_ml"] > 0]
    if child.empty:
        return None
    per_case = (child.groupby(["method", "train_set", "fine_tuned", "case_id"], as_index=False)
                .agg(dice=("dice", "mean"), lesion_volume_ml=("lesion_volume_ml", "first")))
    fixed = per_case["method"].map(lambda m: not get_segmenter(m).fine_tunes)
    gnb = per_case[fixed]
    models = per_case[~fixed].copy()
    models["condition"] = [condition_label(t, f) for t, f in zip(models["train_set"], models["fine_tuned"])]
    conditions = list(dict.fromkeys(sorted(models["condition"]))) or ["LesionGnb"]
    frames = [models]
    for cond in conditions:
        if not gnb.empty and "child" not in cond:
            frames.append(gnb.assign(condition=cond))
    data = pd.concat(frames, ignore_index=True)
    if data.empty:
        return None
    data["Method"] = data["method"].map(_label)
    order = [label for label in segmenter_labels().values() if label in set(data["Method"])]
    grid = sns.relplot(data=data, x="lesion_volume_ml", y="dice", hue="Method", hue_order=order,
                       style="Method", col="condition", col_wrap=min(3, data["condition"].nunique()),
                       kind="scatter", height=3.0, aspect=1.1, s=30, alpha=0.8)
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    grid.set_axis_labels("True lesion volume (mL, log scale)", "Dice")
    grid.set_titles("{col_name}")
    source = ", ".join(sorted(set(child["data_source"])))
    grid.figure.suptitle(f"Figure 2 — Dice vs lesion volume on child images ({source} data)", y=1.03, fontsize=10)
    return grid.figure


def interactive_viewer(row: pd.Series, *, width_px: int = 600):
    """A nilearn ``view_img`` of one prediction over its image (the HTML document object).

    ``row`` is one row of the collected frame with ``image_path`` and ``pred_path``.
    """
    from nilearn import plotting

    image = nib.load(row["image_path"])
    pred = nib.load(row["pred_path"])
    pred_data = (np.asanyarray(pred.dataobj) > 0).astype(np.float32)
    title = (f"{_label(row['method'])} on {row['case_id']} — Dice "
             f"{row['dice']:.2f}" if not math.isnan(row["dice"]) else row["case_id"])
    view = plotting.view_img(nib.Nifti1Image(pred_data, pred.affine), bg_img=image, threshold=0.5,
                             cmap="autumn_r", symmetric_cmap=False, vmin=0.0, vmax=1.0, opacity=0.6,
                             title=title, colorbar=False, black_bg=True, resampling_interpolation="nearest",
                             width_view=width_px)
    return view


def forest_plot(df: pd.DataFrame, metric: str = "dice") -> plt.Figure | None:
    """Per-condition mean ``metric`` with its bootstrap 95% CI (over subjects), beside the paper's value.

    One row per (method, training set, evaluation set, fine-tuned) present in ``df``, grouped by
    evaluation set in table order; circles with bars: ours; crosses: the published value where the
    paper has one. ``None`` for an empty frame.
    """
    from lesionlib.reporting import paper
    from lesionlib.reporting.stats import summarise_conditions
    from lesionlib.reporting.tables import row_label
    from lesionlib.splits import EVAL_SETS

    if df.empty:
        return None
    summary = summarise_conditions(df, [metric])
    summary = summary[summary["mean"].notna()]
    if summary.empty:
        return None
    order = {m: i for i, m in enumerate(segmenter_labels())}
    summary = summary.assign(
        _e=summary["eval_set"].map({e: i for i, e in enumerate(EVAL_SETS)}),
        _m=summary["method"].map(order), _t=summary["train_set"].map({"adult_full": 0, "adult_subset": 1, "child5": 2}),
    ).sort_values(["_e", "fine_tuned", "_t", "_m"], ascending=[True, True, True, True]).reset_index(drop=True)
    published = paper.paper_results()
    eval_names = {"adult_val": "adult validation", "child_test": "child test", "child_all": "all child images"}
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(summary) + 1.2))
    y = np.arange(len(summary))[::-1]
    for yi, r in zip(y, summary.itertuples(index=False)):
        colour = sns.color_palette("colorblind")[order.get(r.method, 0) % 10]
        ax.errorbar(r.mean, yi, xerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]] if not math.isnan(r.ci_low) else None,
                    fmt="o", color=colour, capsize=2, markersize=4)
        pub = published[(published.method == r.method) & (published.train_set == r.train_set)
                        & (published.fine_tuned == r.fine_tuned)
                        & (published.eval_set == ("child_test" if r.eval_set == "child_all" else r.eval_set))]
        if len(pub):
            ax.plot(float(pub[metric].iloc[0]), yi, "x", color="black", markersize=6)
    labels = [f"{row_label(r.method, r.train_set)}{', fine-tuned' if r.fine_tuned else ''} — "
              f"{eval_names.get(r.eval_set, r.eval_set)} (n={r.n})" for r in summary.itertuples(index=False)]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(-0.02, 1.02) if metric == "dice" else None
    ax.set_xlabel(f"{'Dice' if metric == 'dice' else metric}: ours (mean, 95% bootstrap CI over subjects); "
                  "x = published", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    source = ", ".join(sorted(set(df["data_source"])))
    ax.set_title(f"Per-condition means, {source} data, profile {', '.join(sorted(set(df['profile'])))}", fontsize=9)
    fig.tight_layout()
    return fig
