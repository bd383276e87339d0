# %% [markdown]
# # Figures 1 and 2
#
# Figure 1: axial overlays of each method's prediction on a low-Dice small-lesion child and a
# high-Dice large-lesion child (Dice in the titles). Figure 2: Dice against lesion volume (mL, log
# axis) on the child images, per method. Both are written as PNG (and the figure data as CSV).

# %% tags=["parameters"]
profile = "quick"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = "."

# %%
import logging
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from lesionlib import config
from lesionlib.io import atomic_path
from lesionlib.reporting import figures
from lesionlib.reporting.collect import collect_runs

logging.basicConfig(level=logging.INFO)
root = Path(results_root) if results_root else config.results_root()
out = Path(out_dir)
runs = collect_runs(root, profile)


def save(fig, name: str) -> None:
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")


# %%
fig1 = figures.figure1_overlays(runs)
if fig1 is None:
    display(Markdown("No child predictions with image paths yet: Figure 1 is not drawn."))
else:
    save(fig1, "figure1.png")
    display(fig1)
    plt.close(fig1)

# %%
fig2 = figures.figure2_dice_vs_volume(runs)
if fig2 is None:
    display(Markdown("No evaluated child images yet: Figure 2 is not drawn."))
else:
    save(fig2, "figure2.png")
    child = runs[runs["eval_set"] == "child_test"]
    with atomic_path(out / "figure2_data.csv") as tmp:
        child[["run_id", "method", "train_set", "fine_tuned", "seed", "case_id", "lesion_volume_ml",
               "dice"]].to_csv(tmp, index=False)
    display(fig2)
    plt.close(fig2)
