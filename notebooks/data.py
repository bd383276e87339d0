# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data: the cohorts of a profile
#
# Generates the synthetic cohorts of the profile when they are absent (real datasets are only read),
# discovers and validates every record, measures how close the cohorts are to real data (lesion
# volume, number of components, shape and location; child brain volume and grey/white contrast by
# age) beside published reference figures, applies the paper's ATLAS subset rule (what it removed
# and why), shows the few-shot child selection, and checks the session-to-session mask propagation
# on a few children. Settings come from the profile (`experiments.yaml`, `data:`).

# %% tags=["parameters"]
profile = "quick"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = ""  # default: a new <results_root>/<profile>/interactive/data-<UTC time>/
n_propagation_qc = 3

# %%
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import yaml
from IPython.display import HTML, Image, Markdown, display

from lesionlib.data import data_source, dataset_root, discover, records_table, validate_records
from lesionlib.experiments import interactive_dir
from lesionlib.io import atomic_path
from lesionlib.profile import load_profile
from lesionlib.register import propagate_records
from lesionlib.splits import session2_root, split_first_sessions, with_propagated_masks
from lesionlib.samplers import atlas_subset, few_shot_split
from lesionlib.synth import generate_adult_cohort, generate_child_cohort
from lesionlib.synth.realism import adult_lesion_sample_1mm, write_realism_report

logging.basicConfig(level=logging.INFO)
out = Path(out_dir) if out_dir else interactive_dir(profile, "data", Path(results_root) if results_root else None)
settings = load_profile(profile)
data = settings.data

# %% [markdown]
# ## Cohorts
# Synthetic cohorts are generated deterministically from the profile's seed (idempotent: an
# up-to-date cohort is left as it is). They are whole-head T1w images (the adults defaced, as ATLAS
# v2.0's are) with brain-only lesion masks.

# %%
roots = {"adult": dataset_root(data.adult_dataset, profile=profile),
         "child": dataset_root(data.child_dataset, profile=profile)}
if data_source(data.adult_dataset) == "synthetic":
    generate_adult_cohort(roots["adult"], data.n_adult, resolution_mm=data.resolution_mm, seed=data.synth_seed,
                          progress=False)
if data_source(data.child_dataset) == "synthetic":
    generate_child_cohort(roots["child"], data.n_children, resolution_mm=data.resolution_mm, seed=data.synth_seed,
                          progress=False)
adult = discover(data.adult_dataset, profile=profile, progress=False)
child = discover(data.child_dataset, profile=profile, progress=False)
validate_records(adult)
propagated = data.child_session2_masks == "propagated"
if propagated:  # later sessions' masks come from registration (below): their images are checked now
    first_sessions, later_sessions = split_first_sessions(child)
    validate_records(first_sessions)
    validate_records(later_sessions, purpose="predict")
    child = first_sessions + later_sessions
else:
    validate_records(child)
tables = {"adult": records_table(adult), "child": records_table(child)}
display(Markdown(f"**{len(adult)} adult images** ({data.adult_dataset}, {data_source(data.adult_dataset)}) and "
                 f"**{len(child)} child images** of {tables['child']['subject'].nunique()} children "
                 f"({data.child_dataset}, {data_source(data.child_dataset)}); every record validated."))
for name, df in tables.items():
    with atomic_path(out / f"records_{name}.csv") as tmp:
        df.to_csv(tmp, index=False)

# %% [markdown]
# ## Session-2 masks: propagation from session 1
# The paper obtained session-2 masks by affine registration of session 1 (FLIRT). Here the session-1
# mask is carried onto the session-2 image by a 12-dof registration (SimpleITK, mutual information,
# linear interpolation + threshold 0.5). With `child_session2_masks: propagated` (real data with
# session-1 masks only) this is done for every child and the propagated masks are the session-2
# ground truth of every cell; with `dataset` the dataset's own session-2 masks are used and a few
# children are propagated only to check the registration against them. One QC figure per child.

# %%
prop_root = session2_root(profile, Path(results_root) if results_root else None) if propagated else out
qc = propagate_records(child, prop_root, dof=12, max_subjects=None if propagated else n_propagation_qc,
                       progress=False)
ground_truth = "propagated from session 1 (every child)" if propagated else "the dataset's own masks"
display(Markdown(f"Session-2 ground truth: **{ground_truth}**; QC figures in `{prop_root / 'qc'}`."))
display(qc[["case_id", "dice", "hausdorff95_mm"]].round(3) if len(qc)
        else Markdown("No true session-2 mask to compare with."))
for png in sorted((prop_root / "qc").glob("*.png"))[: None if propagated else n_propagation_qc]:
    display(Image(filename=str(png)))
if propagated:  # from here on every child image has its mask: session 1 from the dataset, later ones propagated
    child = with_propagated_masks(child, prop_root)
    tables["child"] = records_table(child)
    with atomic_path(out / "records_child.csv") as tmp:
        tables["child"].to_csv(tmp, index=False)

# %% [markdown]
# ## Realism: our cohorts beside real data
# Every lesion mask is measured (`lesionlib.synth.realism`): volume, 26-connected components, voxel
# sphericity (pi^(1/3) (6V)^(2/3) / surface voxels; about 0.7 for real stroke masks at 1 mm, ~1.25 for
# a digital ball) and, for MNI-space masks, the share centred in the posterior fossa. For synthetic
# cohorts the generator also recorded each brain's volume and the grey/white and CSF/white contrast
# of its image (3-class Gaussian mixture, the measurement behind the real-scan figures). Each figure
# of ours stands beside a reference figure and its source; `realism.csv`, `realism_*.csv` and
# `realism.png` are written for the book's data page. Profiles on coarser grids also measure the
# generator's first 50 adult lesion plans grown at 1 mm ("adult (1 mm sample)").

# %%
synthetic_roots = {k: (roots[k] if data_source(getattr(data, f"{k}_dataset")) == "synthetic" else None)
                   for k in ("adult", "child")}
# on coarser grids the voxel sphericity is not comparable with 1 mm references: add the generator's
# first 50 adult lesion plans grown at 1 mm (about half a minute)
sample_1mm = (adult_lesion_sample_1mm(data.synth_seed, 50)
              if synthetic_roots["adult"] is not None and data.resolution_mm != 1.0 else None)
realism = write_realism_report(adult + child, out, adult_root=synthetic_roots["adult"],
                               child_root=synthetic_roots["child"], sample_1mm=sample_1mm)
display(HTML(realism.report.to_html(index=False, border=0)))
display(realism.summary.round(3))
display(Image(filename=str(realism.figure)))

# %% [markdown]
# ## Lesion sizes

# %%
both = pd.concat([df.assign(cohort=name) for name, df in tables.items()], ignore_index=True)
display(both.groupby("cohort")["lesion_volume_ml"].describe().round(2))
fig, ax = plt.subplots(figsize=(6.5, 3.2))
sns.histplot(data=both[both["lesion_volume_ml"] > 0], x="lesion_volume_ml", hue="cohort", log_scale=True,
             element="step", stat="density", common_norm=False, ax=ax)
ax.axvline(settings.splits.subset_min_volume_ml, color="grey", linestyle="--", linewidth=1)
ax.set_xlabel("Lesion volume (mL, log scale)")
with atomic_path(out / "lesion_volumes.png") as tmp:
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
plt.show()

# %% [markdown]
# ## What a coarser grid costs
# The Dice of each mask seen on blocks 2x and 4x the working voxel (`lesionlib.metrics.resolution_ceiling`;
# each block labelled lesion when half of it is): how much of the Dice rests on finer detail. The
# Res-U-Net's ResNet encoder halves the grid in its stem and again before its first residual stage,
# so its finest skip features lie 2x coarser than its input and its first residual features 4x.

# %%
from lesionlib.metrics import resolution_ceiling

ceiling = pd.concat([resolution_ceiling(records, data.resolution_mm).assign(cohort=name)
                     for name, records in (("adult", adult), ("child", child))], ignore_index=True)
display(ceiling.groupby("cohort")[["ceiling_2x", "ceiling_4x"]].agg(["mean", "median"]).round(3))
with atomic_path(out / "resolution_ceiling.csv") as tmp:
    ceiling.to_csv(tmp, index=False)

# %% [markdown]
# ## The ATLAS subset rule

# %%
kept, report = atlas_subset(adult, min_volume_ml=settings.splits.subset_min_volume_ml,
                            rule=settings.splits.cerebellum_rule, progress=False)
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
split = few_shot_split(child, n_images=settings.splits.few_shot_n, seed=0)
display(Markdown("Training images: " + ", ".join(r.case_id for r in split.train)
                 + f"; test: {len(split.test)} images; excluded (other session of a training child): "
                 f"{len(split.excluded)}."))
