# %% [markdown]
# # Evaluate one trained cell
#
# Segments the adult validation images (models trained on adults, not fine-tuned) and the child test
# images (every image of the children not used for few-shot training) with the model of `run_dir`,
# writes the masks under `<out_dir>/predictions/` on each image's own grid, and scores them
# (Dice, Hausdorff, ...) into `metrics.csv`.

# %% tags=["parameters"]
profile = "quick"
run_id = "unet_adult-full_seed0"
method = "unet"
train_set = "adult_full"
fine_tuned = False
seed = 0
parent_run = ""
epochs = 1
iterations_per_epoch = 2
batch_size = 2
patch_size = [32, 32, 32]
device = "cpu"
resolution_mm = 3.0
adult_dataset = "synthetic_adult"
child_dataset = "synthetic_child"
data_source = "synthetic"
few_shot_n = 5
stage = "evaluate"
out_dir = "."
run_dir = "."
init_from = ""
inference_overlap = 0.5
inference_tta = True

# %%
import logging
from pathlib import Path

from IPython.display import Markdown, display

from lesionlib.cells import evaluate_cell
from lesionlib.experiments import evaluation_records, load_cohorts

logging.basicConfig(level=logging.INFO)
out = Path(out_dir)
model_dir = Path(run_dir)
params = {"method": method, "train_set": train_set, "fine_tuned": fine_tuned, "seed": seed, "profile": profile,
          "data_source": data_source}
cohorts = load_cohorts(profile, adult_dataset=adult_dataset, child_dataset=child_dataset, seed=seed,
                       few_shot_n=few_shot_n)
eval_sets = evaluation_records(cohorts, train_set, fine_tuned)
display(Markdown(", ".join(f"{k}: {len(v)} images" for k, v in eval_sets.items())))

# %%
metrics = evaluate_cell(method, model_dir, eval_sets, out, params=params, train_set=train_set,
                        fine_tuned=fine_tuned, device=device, overlap=inference_overlap, tta=inference_tta)
display(metrics.groupby("eval_set")[["dice", "hausdorff_mm", "hausdorff95_mm", "lesion_wise_f1"]]
        .agg(["mean", "std", "count"]).round(3))
display(Markdown(f"Undefined Hausdorff distances: {int(metrics['hausdorff_mm'].isna().sum())} of {len(metrics)}."))
