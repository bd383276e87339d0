"""What ``notebooks/explore.py`` shows: one finished run's prediction on one image, its metrics, and where the
image sits among every image of the profile on the lesion-size figure. Reads files only; trains nothing.

A run is a grid cell (``<results>/<profile>/<run_id>/``) or any folder holding a ``metrics.csv``, such as a
run by hand under ``<results>/<profile>/interactive/``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import pandas as pd

from lesionlib import config
from lesionlib.metrics import METRIC_COLUMNS
from lesionlib.reporting.collect import collect_runs, read_run, run_status

__all__ = ["Choice", "case_metrics_table", "choose", "finished_runs", "lesion_size_figure"]

log = logging.getLogger(__name__)

#: The evaluation set shown when none is asked for, the first present (the book's Figure 2 is on child_test).
EVAL_SET_PREFERENCE = ("child_test", "child_all", "adult_val")


@dataclass(frozen=True)
class Choice:
    """The run and image picked: ``runs`` are the run's rows, ``row`` the image's, ``profile_rows`` every
    finished grid cell's rows of the profile (the lesion-size figure's background)."""

    run_dir: Path
    runs: pd.DataFrame
    row: pd.Series
    profile_rows: pd.DataFrame

    @property
    def has_images(self) -> bool:
        """Whether the image, its prediction and its true mask are all on disk (the viewer needs them)."""
        return all(isinstance(self.row.get(c), str) and Path(self.row[c]).is_file()
                   for c in ("image_path", "pred_path", "gt_path"))


def finished_runs(profile: str, results_root: Path | None = None) -> list[str]:
    """Run ids of the profile's grid cells that finished (a ``metrics.csv``), sorted."""
    root = Path(results_root or config.results_root())
    return [s.run_id for s in run_status(root, profile) if s.status == "finished"]


def choose(profile: str, *, run_id: str = "", run_dir: str | Path = "", case_id: str = "", eval_set: str = "",
           results_root: Path | None = None) -> Choice:
    """Pick a run and one of its evaluated images.

    ``run_dir`` (any folder with a ``metrics.csv``) wins over ``run_id`` (a grid cell of ``profile``); with
    neither, the first finished grid cell. ``eval_set`` defaults to the first of child_test, child_all,
    adult_val the run has; ``case_id`` to that set's image with the largest true lesion.
    Raises ``FileNotFoundError`` when there is no finished run or the run has no ``metrics.csv``, ``KeyError``
    naming what exists when the evaluation set or image is not in the run.
    """
    root = Path(results_root or config.results_root())
    if run_dir:
        folder = Path(run_dir)
    else:
        if not run_id:
            done = finished_runs(profile, root)
            if not done:
                raise FileNotFoundError(f"{root / profile}: no finished run of profile {profile!r} "
                                        f"(run `make book`, or the cell notebook by hand, first)")
            run_id = done[0]
        folder = root / profile / run_id
    runs = read_run(folder)
    sets = list(dict.fromkeys(runs["eval_set"]))
    if not eval_set:
        eval_set = next((s for s in EVAL_SET_PREFERENCE if s in sets), sets[0])
    if eval_set not in sets:
        raise KeyError(f"{folder / 'metrics.csv'}: no evaluation set {eval_set!r}; it has {sets}")
    in_set = runs[runs["eval_set"] == eval_set]
    if not case_id:
        case_id = str(in_set.sort_values(["lesion_volume_ml", "case_id"], ascending=[False, True])["case_id"].iloc[0])
    picked = in_set[in_set["case_id"] == case_id]
    if picked.empty:
        raise KeyError(f"{folder / 'metrics.csv'}: no image {case_id!r} in {eval_set}; "
                       f"it has {sorted(in_set['case_id'])}")
    return Choice(folder, runs, picked.iloc[0], collect_runs(root, profile))


def case_metrics_table(choice: Choice) -> pd.DataFrame:
    """The image's metrics (indexed by metric, with the run's mean over the same evaluation set beside)."""
    row, runs = choice.row, choice.runs
    same_set = runs[runs["eval_set"] == row["eval_set"]]
    metrics = [m for m in METRIC_COLUMNS if m in runs.columns]
    table = pd.DataFrame({
        "metric": metrics,
        "this image": [row[m] for m in metrics],
        f"mean of the run's {len(same_set)} {row['eval_set']} images": [same_set[m].mean() for m in metrics],
    })
    head = pd.DataFrame({"metric": ["true lesion volume (mL)"], "this image": [row["lesion_volume_ml"]],
                         f"mean of the run's {len(same_set)} {row['eval_set']} images":
                             [same_set["lesion_volume_ml"].mean()]})
    return pd.concat([head, table], ignore_index=True).round(3).set_index("metric")


def lesion_size_figure(choice: Choice) -> plt.Figure:
    """Dice against true lesion volume (mL, log x) on the image's evaluation set: every finished grid cell of
    the profile in grey, this run's images in blue, the chosen image as a red star (the book's Figure 2 shows
    the grid's child_test images per method and condition)."""
    row = choice.row
    eval_set = row["eval_set"]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    background = choice.profile_rows
    if len(background):
        background = background[(background["eval_set"] == eval_set) & (background["lesion_volume_ml"] > 0)]
        ax.scatter(background["lesion_volume_ml"], background["dice"], s=14, color="0.75",
                   label=f"every finished cell of profile {row['profile']} ({len(background)})")
    own = choice.runs[(choice.runs["eval_set"] == eval_set) & (choice.runs["lesion_volume_ml"] > 0)]
    ax.scatter(own["lesion_volume_ml"], own["dice"], s=22, color="tab:blue", label=f"this run ({len(own)})")
    if row["lesion_volume_ml"] > 0 and not math.isnan(row["dice"]):
        ax.scatter([row["lesion_volume_ml"]], [row["dice"]], s=220, marker="*", color="tab:red", zorder=3,
                   label=row["case_id"])
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 15, 20, 0.5 rather than 1.5x10^1
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("True lesion volume (mL, log scale)")
    ax.set_ylabel("Dice")
    ax.set_title(f"{row['case_id']} among the {eval_set} images ({row['data_source']} data)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
