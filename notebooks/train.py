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

# %%
import logging
from pathlib import Path

import yaml
from IPython.display import Markdown, display

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
NNUNET_IDS = {"adult": (501, "Adult"), "finetune": (502, "ChildFT"), "child5": (503, "Child")}

if method in ("unet", "resunet"):
    from lesionlib.train import TrainConfig, train

    init = str(Path(init_from) / "model" / "checkpoint_best.pt") if fine_tuned else None
    config = TrainConfig(model=method, epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                         batch_size=batch_size, patch_size=tuple(patch_size),
                         spacing_mm=(resolution_mm,) * 3, seed=seed, device=device, init_from=init,
                         progress=False)
    result = train(config, train_records, val_records, out / "model", split_info={"train_set": train_set})
    display(result.history)
    display(Markdown(f"Best epoch {result.best_epoch}, validation Dice {result.best_val_dice}; "
                     f"encoder pretrained: {result.encoder_pretrained}."))
elif method == "nnunet":
    from lesionlib.nnunet import NnUNetRun

    key = "finetune" if fine_tuned else ("child5" if train_set == "child5" else "adult")
    nn = NnUNetRun(out / "nnunet", *NNUNET_IDS[key], device=device)
    nn.export(train_records, progress=False)
    if fine_tuned:
        parent = NnUNetRun(Path(init_from) / "nnunet", *NNUNET_IDS["adult"], device=device)
        fold_dir = nn.finetune(parent, epochs=epochs, iterations=iterations_per_epoch, final_validation=False)
    else:
        nn.plan_and_preprocess()
        fold_dir = nn.train("all", epochs=epochs, iterations=iterations_per_epoch, final_validation=False)
    display(Markdown(f"nnU-Net model: `{fold_dir.relative_to(out)}`; stage times (s): {nn.timings_s}"))
else:
    raise ValueError(f"train.py trains unet, resunet or nnunet, not {method!r}")
