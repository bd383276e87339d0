# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Explore one finished run: a prediction over its image, its metrics, its place by lesion size
#
# Pick a finished cell (the book's run index lists them) and one of the images it evaluated; this notebook
# reads the cell's files and trains nothing, so it runs in seconds. Leave a parameter empty for its default:
# the first finished cell, its child test set, the image with the largest lesion. `run_dir` opens any folder
# with a `metrics.csv` instead, e.g. a run of the cell notebook by hand under
# `results/<profile>/interactive/`. With papermill:
#
# ```bash
# jupytext --to ipynb notebooks/explore.py -o /tmp/explore.ipynb
# papermill /tmp/explore.ipynb /tmp/explore.out.ipynb -p run_id unet_adult-full_seed0 -p case_id sub-03_ses-1
# ```

# %% tags=["parameters"]
profile = "quick"
run_id = ""  # a grid cell of the profile; default: the first finished one
run_dir = ""  # or any run folder with a metrics.csv (wins over run_id)
case_id = ""  # default: the image of eval_set with the largest true lesion
eval_set = ""  # default: child_test, else child_all, else adult_val
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results

# %%
import logging
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from lesionlib.reporting.explore import case_metrics_table, choose, finished_runs, lesion_size_figure
from lesionlib.reporting.figures import interactive_viewer

logging.basicConfig(level=logging.INFO)
root = Path(results_root) if results_root else None
choice = choose(profile, run_id=run_id, run_dir=run_dir, case_id=case_id, eval_set=eval_set, results_root=root)
row = choice.row
display(Markdown(
    f"**Run** `{choice.run_dir.name}` ({row['method']}, trained on {row['train_set']}"
    f"{', fine-tuned' if row['fine_tuned'] else ''}, seed {row['seed']}; `{choice.run_dir}`), "
    f"**image** `{row['case_id']}` of `{row['eval_set']}`. "
    f"Its other images: {', '.join(sorted(choice.runs.loc[choice.runs['eval_set'] == row['eval_set'], 'case_id']))}. "
    f"Finished cells of profile `{profile}`: {', '.join(finished_runs(profile, root)) or 'none'}."))

# %% [markdown]
# ## The prediction over the image
# Drag to move the cut; red: the prediction.

# %%
if choice.has_images:
    display(interactive_viewer(row))
else:
    display(Markdown(f"*No viewer: the image, prediction or mask of `{row['case_id']}` is not on disk.*"))

# %% [markdown]
# ## Its metrics

# %%
display(case_metrics_table(choice))

# %% [markdown]
# ## Where it sits by lesion size

# %%
figure = lesion_size_figure(choice)
display(figure)
plt.close(figure)
