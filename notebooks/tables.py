# %% [markdown]
# # Tables 1 and 2
#
# Collects every finished run of a profile (`results/<profile>/*/metrics.csv`), computes our Tables 1
# and 2 (mean ± SD over cases, number of cases, undefined Hausdorff distances counted), the
# statistics the paper lacks (bootstrap 95% CIs, seed spread, paired Wilcoxon tests), and writes them
# as CSV and HTML beside the paper's published values.

# %% tags=["parameters"]
profile = "quick"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = "."

# %%
import logging
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Markdown, display

from lesionlib import config
from lesionlib.experiments import expand_grid
from lesionlib.io import atomic_path
from lesionlib.reporting import paper, stats, tables
from lesionlib.reporting.collect import collect_runs, run_status
from lesionlib.reporting.provenance import provenance, provenance_html

logging.basicConfig(level=logging.INFO)
root = Path(results_root) if results_root else config.results_root()
out = Path(out_dir)
runs = collect_runs(root, profile)
status = run_status(root, profile, [r.run_id for r in expand_grid(profile)])
missing = [s.run_id for s in status if s.status != "finished"]
display(Markdown(f"{len(runs)} evaluated cases from {runs['run_id'].nunique() if len(runs) else 0} runs; "
                 f"not finished: {', '.join(missing) or 'none'}."))


# %%
def write_csv(df: pd.DataFrame, name: str) -> None:
    with atomic_path(out / name) as tmp:
        df.to_csv(tmp)


for name, build, published in (("table1", tables.table1, tables.paper_table1_wide()),
                               ("table2", tables.table2, tables.paper_table2_wide())):
    for t in build(runs):
        write_csv(t.display, f"{name}_{t.data_source}_{t.profile}.csv")
        display(HTML(tables.render_html(t.display, t.caption)))
    write_csv(published, f"{name}_paper.csv")
    display(HTML(tables.render_html(published, f"{name.title()} — published in {paper.CITATION_SHORT}")))

# %% [markdown]
# ## Statistics

# %%
if len(runs):
    summary = stats.summarise_conditions(runs)
    tests = pd.concat([stats.paired_wilcoxon(runs, m) for m in ("dice", "hausdorff_mm")], ignore_index=True)
    write_csv(summary, "summary_by_condition.csv")
    write_csv(tests, "paired_wilcoxon.csv")
    display(summary)
    display(tests)

# %%
display(HTML(provenance_html(provenance(profile, data_source=", ".join(sorted(set(runs["data_source"]))) or None))))
