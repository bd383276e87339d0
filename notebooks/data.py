# %% [markdown]
# # Data: the cohorts of a profile
#
# Generates the synthetic cohorts of the profile when they are absent (real datasets are only read),
# discovers and validates every record, compares lesion sizes in adults and children, applies the
# paper's ATLAS subset rule (what it removed and why), shows the five-child few-shot selection, and
# checks the session-to-session mask propagation on a few children.

# %% tags=["parameters"]
profile = "quick"
results_root = ""
out_dir = "."
resolution_mm = 3.0
n_adult = 30
n_children = 20
synth_seed = 2024
adult_dataset = "synthetic_adult"
child_dataset = "synthetic_child"
n_propagation_qc = 3

# %%
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import yaml
from IPython.display import Markdown, display

from lesionlib.data import data_source, dataset_root, discover, records_table, validate_records
from lesionlib.io import atomic_path
from lesionlib.register import propagate_records
from lesionlib.samplers import atlas_subset, few_shot_split
from lesionlib.synth import generate_adult_cohort, generate_child_cohort

logging.basicConfig(level=logging.INFO)
out = Path(out_dir)

# %% [markdown]
# ## Cohorts
# Synthetic cohorts are generated deterministically from the profile's seed (idempotent: an
# up-to-date cohort is left as it is).

# %%
if data_source(adult_dataset) == "synthetic":
    generate_adult_cohort(dataset_root(adult_dataset, profile=profile), n_adult, resolution_mm=resolution_mm,
                          seed=synth_seed, progress=False)
if data_source(child_dataset) == "synthetic":
    generate_child_cohort(dataset_root(child_dataset, profile=profile), n_children, resolution_mm=resolution_mm,
                          seed=synth_seed, progress=False)
adult = discover(adult_dataset, profile=profile, progress=False)
child = discover(child_dataset, profile=profile, progress=False)
validate_records(adult)
validate_records(child)
tables = {"adult": records_table(adult), "child": records_table(child)}
display(Markdown(f"**{len(adult)} adult images** ({adult_dataset}, {data_source(adult_dataset)}) and "
                 f"**{len(child)} child images** of {tables['child']['subject'].nunique()} children "
                 f"({child_dataset}, {data_source(child_dataset)}); every record validated."))
for name, df in tables.items():
    with atomic_path(out / f"records_{name}.csv") as tmp:
        df.to_csv(tmp, index=False)

# %% [markdown]
# ## Lesion sizes

# %%
both = pd.concat([df.assign(cohort=name) for name, df in tables.items()], ignore_index=True)
display(both.groupby("cohort")["lesion_volume_ml"].describe().round(2))
fig, ax = plt.subplots(figsize=(6.5, 3.2))
sns.histplot(data=both[both["lesion_volume_ml"] > 0], x="lesion_volume_ml", hue="cohort", log_scale=True,
             element="step", stat="density", common_norm=False, ax=ax)
ax.axvline(2.5, color="grey", linestyle="--", linewidth=1)
ax.set_xlabel("Lesion volume (mL, log scale)")
with atomic_path(out / "lesion_volumes.png") as tmp:
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## The ATLAS subset rule

# %%
kept, report = atlas_subset(adult, progress=False)
r = report.to_dict()
display(Markdown(f"Kept **{r['n_kept']} of {r['n_input']}**; volume rule (< {r['min_volume_ml']} mL) removed "
                 f"{r['failed_volume']}, cerebellum rule removed {r['failed_cerebellum']} "
                 f"({r['cerebellum_definition']}), both {r['failed_both']}."))
removed = pd.DataFrame([{"case": k, "reasons": "; ".join(v)} for k, v in r["removed"].items()])
display(removed)
with atomic_path(out / "atlas_subset.yaml") as tmp:
    tmp.write_text(yaml.safe_dump(r, sort_keys=False))

# %% [markdown]
# ## Few-shot selection (seed 0)

# %%
split = few_shot_split(child, n_images=5, seed=0)
display(Markdown("Training images: " + ", ".join(r.case_id for r in split.train)
                 + f"; test: {len(split.test)} images; excluded (other session of a training child): "
                 f"{len(split.excluded)}."))

# %% [markdown]
# ## Mask propagation, session 1 -> session 2
# The session-1 mask is carried onto the session-2 image by a rigid registration (mutual information,
# linear interpolation + threshold 0.5) and compared with the session-2 mask of the dataset; one QC
# figure per child under `qc/`.

# %%
qc = propagate_records(child, out, max_subjects=n_propagation_qc, progress=False)
display(qc[["case_id", "dice", "hausdorff95_mm"]].round(3) if len(qc) else Markdown("No child has both sessions."))
