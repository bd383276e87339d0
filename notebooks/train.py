# %% [markdown]
# # Train one cell of the grid
#
# Trains `method` (U-Net or Res-U-Net through `lesionlib.train`, nnU-Net v2 through
# `lesionlib.nnunet`) on one training set: adult full, the adult subset, or the 5 child images
# (alone, or fine-tuning the parent adult run's model). Writes the model under `<out_dir>/model/`
# (U-Net, Res-U-Net) or `<out_dir>/nnunet/` (nnU-Net's workspace), and `split.yaml`.

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
stage = "train"
out_dir = "."
run_dir = "."
init_from = ""
nnunet_final_validation = False

# %%
import logging
from pathlib import Path

import yaml
from IPython.display import Markdown, display

from lesionlib.cells import train_cell
from lesionlib.experiments import load_cohorts, training_records
from lesionlib.io import atomic_path

logging.basicConfig(level=logging.INFO)
out = Path(out_dir)
cohorts = load_cohorts(profile, adult_dataset=adult_dataset, child_dataset=child_dataset, seed=seed,
                       few_shot_n=few_shot_n)
train_records, val_records = training_records(cohorts, train_set, fine_tuned)
with atomic_path(out / "split.yaml") as tmp:
    tmp.write_text(yaml.safe_dump(cohorts.split_description(), sort_keys=False))
display(Markdown(f"`{run_id}`: **{method}** on **{train_set}**{' (fine-tuned from ' + parent_run + ')' if fine_tuned else ''}"
                 f" — {len(train_records)} training and {len(val_records)} validation images; "
                 f"{epochs} epochs x {iterations_per_epoch} iterations, seed {seed}, device {device}."))

# %%
summary = train_cell(method, train_records, val_records, out, train_set=train_set, fine_tuned=fine_tuned,
                     init_from=init_from or None, epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                     batch_size=batch_size, patch_size=patch_size, resolution_mm=resolution_mm, seed=seed,
                     device=device, nnunet_final_validation=nnunet_final_validation)
if "history" in summary:
    display(summary["history"])
    display(Markdown(f"Best epoch {summary['best_epoch']}, validation Dice {summary['best_val_dice']}; "
                     f"encoder pretrained: {summary['encoder_pretrained']}."))
else:
    display(Markdown(f"nnU-Net model: `{Path(summary['model_dir']).relative_to(out)}`; "
                     f"stage times (s): {summary['stage_times_s']}"))
