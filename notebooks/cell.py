# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One cell of the grid: train, then evaluate
#
# Trains the cell's method on its training set — adult full, the adult subset, the few child
# images alone, or fine-tuning the parent adult cell's model on them — then segments every image of
# its evaluation sets on the image's own grid and scores them into `metrics.csv`. Everything the cell
# does is resolved from the profile (`experiments.yaml`) and the `run_id` (see `lesionlib grid list`).
#
# Run by hand (here in JupyterLab: `make lab`, or with papermill), it writes into a fresh
# `results/<profile>/interactive/<run_id>-<UTC time>/`, never into the repository nor into the grid's
# folder of the cell, which only `make book` (Snakemake) fills. With other settings (papermill reads
# `.ipynb`; convert first):
#
# ```bash
# jupytext --to ipynb notebooks/cell.py -o /tmp/cell.ipynb
# papermill /tmp/cell.ipynb /tmp/out.ipynb -p run_id unet_adult-full_seed0 -y "overrides: {epochs_adult: 1}"
# ```

# %% tags=["parameters"]
profile = "quick"
run_id = "unet_adult-full_seed0"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = ""  # default: a new <results_root>/<profile>/interactive/<run_id>-<UTC time>/ (the grid passes its own)
overrides = {}  # settings of the cell's method changed for this run only, e.g. {"epochs_adult": 1}

# %%
import logging

from IPython.display import Markdown, display

from lesionlib.cells import evaluate_cell, open_cell, train_cell
from lesionlib.reporting.runs import cell_summary, fit_summary, metrics_summary

logging.basicConfig(level=logging.INFO)
cell = open_cell(profile, run_id, out_dir, results_root=results_root or None, overrides=overrides)
display(Markdown(cell_summary(cell)))

# %% [markdown]
# ## Training

# %%
fit = train_cell(cell)
display(fit_summary(fit))

# %% [markdown]
# ## Evaluation

# %%
metrics = evaluate_cell(cell, fit)
display(metrics_summary(metrics))
