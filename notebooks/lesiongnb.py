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

import pandas as pd
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from lesionlib.baselines.gnb import LesionGnb
from lesionlib.bids import prediction_path
from lesionlib.experiments import evaluation_records, load_cohorts, metrics_table, training_records
from lesionlib.io import atomic_path, save_nifti_atomic

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
gnb = LesionGnb(resolution_mm=max(1.5, float(resolution_mm)), seed=seed).fit(train_records, progress=False)
gnb.save(out / "model" / "lesiongnb.joblib")
display(Markdown(f"Fitted on {len(train_records)} adult images; training voxels: {gnb.n_training_voxels_}."))

# %%
tables = []
for eval_set, records in evaluation_records(cohorts, train_set, fine_tuned).items():
    preds = []
    for rec in tqdm(records, desc=eval_set, unit="image"):
        path = prediction_path(out / "predictions" / eval_set, rec.subject, rec.session)
        preds.append(save_nifti_atomic(gnb.predict(rec), path))
    tables.append(metrics_table(records, preds, eval_set=eval_set, params=params, relative_to=out))
metrics = pd.concat(tables, ignore_index=True)
with atomic_path(out / "metrics.csv") as tmp:
    metrics.to_csv(tmp, index=False)
display(metrics.groupby("eval_set")[["dice", "hausdorff_mm", "lesion_wise_f1"]].agg(["mean", "std", "count"]).round(3))
