# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figures 1 and 2, and the forest plot
#
# Figure 1: axial overlays of each method's prediction on a low-Dice small-lesion child and a high-Dice
# large-lesion child (Dice in the titles). Figure 2: Dice against lesion volume (mL, log axis) on the child
# images, per method. Forest plot: each condition's mean Dice with its 95% CI, beside the published value.
# All are written to `out_dir` as PNG (Figure 2's data as CSV); the book's results page shows them.

# %% tags=["parameters"]
profile = "quick"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = ""  # default: a new <results_root>/<profile>/interactive/figures-<UTC time>/

# %%
import logging
from pathlib import Path

from IPython.display import Image, Markdown, display

from lesionlib.experiments import interactive_dir
from lesionlib.reporting.report import write_figures

logging.basicConfig(level=logging.INFO)
root = Path(results_root) if results_root else None
out = Path(out_dir) if out_dir else interactive_dir(profile, "figures", root)
written = write_figures(profile, root, out)
if not written:
    display(Markdown("No finished runs yet: no figure is drawn."))
for path in written:
    if path.suffix == ".png":
        display(Markdown(f"`{path.name}`"))
        display(Image(filename=str(path)))
