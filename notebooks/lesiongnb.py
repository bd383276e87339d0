# %% [markdown]
# # LesionGnb baseline
#
# Fits LesionGnb (Gaussian naive Bayes on tissue-map features, `lesionlib.baselines.gnb`) on the
# adult training split, then segments the adult validation images and the child test images (children
# are registered to MNI space and the masks mapped back to their own grid) and scores them.

# %% tags=["parameters"]
profile = "quick"
run_id = "lesiongnb_seed0"
method = "lesiongnb"
train_set = ""
fine_tuned = False
seed = 0
parent_run = ""
epochs = 1
iterations_per_epoch = 1
batch_size = 2
patch_size = [32, 32, 32]
device = "cpu"
resolution_mm = 3.0
adult_dataset = "synthetic_adult"
child_dataset = "synthetic_child"
data_source = "synthetic"
few_shot_n = 5
stage = "lesiongnb"
out_dir = "."
run_dir = "."
init_from = ""

# %%
import logging
from pathlib import Path

from IPython.display import Markdown, display

from lesionlib.cells import evaluate_cell, train_cell
from lesionlib.experiments import evaluation_records, load_cohorts, training_records

logging.basicConfig(level=logging.INFO)
out = Path(out_dir)
params = {"method": method, "train_set": train_set, "fine_tuned": fine_tuned, "seed": seed, "profile": profile,
          "data_source": data_source}
cohorts = load_cohorts(profile, adult_dataset=adult_dataset, child_dataset=child_dataset, seed=seed,
                       few_shot_n=few_shot_n)
train_records, _ = training_records(cohorts, train_set, fine_tuned)

# %% [markdown]
# The toolbox works on a 1.5 mm MNI grid; profiles with coarser data use their own resolution.

# %%
summary = train_cell(method, train_records, [], out, train_set=train_set, fine_tuned=False, init_from=None,
                     epochs=epochs, iterations_per_epoch=iterations_per_epoch, batch_size=batch_size,
                     patch_size=patch_size, resolution_mm=resolution_mm, seed=seed, device=device)
display(Markdown(f"Fitted on {len(train_records)} adult images; training voxels: {summary['n_training_voxels']}."))

# %%
metrics = evaluate_cell(method, out, evaluation_records(cohorts, train_set, fine_tuned), out, params=params,
                        train_set=train_set, fine_tuned=False, device=device)
display(metrics.groupby("eval_set")[["dice", "hausdorff_mm", "lesion_wise_f1"]].agg(["mean", "std", "count"]).round(3))
