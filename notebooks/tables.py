# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Findings, Tables 1 and 2, statistics
#
# Collects every finished cell of a profile (`results/<profile>/*/metrics.csv`), tests the paper's three
# findings on them, builds Tables 1 and 2 with the published value beside each of our cells, and the
# statistics the paper lacks (subject-level bootstrap CIs, seed spread, paired Wilcoxon tests). Everything
# is written to `out_dir` as CSV and HTML; the book's results page shows these files.

# %% tags=["parameters"]
profile = "quick"
results_root = ""  # default: $LESIONLIB_RESULTS or <project>/results
out_dir = ""  # default: a new <results_root>/<profile>/interactive/tables-<UTC time>/

# %%
import logging
from pathlib import Path

from IPython.display import HTML, Markdown, display

from lesionlib.experiments import interactive_dir
from lesionlib.reporting.report import write_tables_report

logging.basicConfig(level=logging.INFO)
root = Path(results_root) if results_root else None
out = Path(out_dir) if out_dir else interactive_dir(profile, "tables", root)
report = write_tables_report(profile, root, out)
display(Markdown(report.status_markdown))

# %% [markdown]
# ## The paper's findings, tested on these results

# %%
display(HTML(report.findings_html))

# %% [markdown]
# ## Tables 1 and 2

# %%
for table_html in report.tables_html:
    display(HTML(table_html))

# %% [markdown]
# ## Statistics

# %%
display(report.summary)
display(report.tests)
