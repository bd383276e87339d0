# The experiment grid of the paper as a Snakemake workflow.
#
#   snakemake --cores 2                                  # quick profile, local, then the book
#                                                        # -> results/quick/_book/_build/html/index.html
#   snakemake --cores 2 --config profile=gpu             # another profile of experiments.yaml
#   snakemake --cores 2 runs                             # only the runs (no book)
#   snakemake --workflow-profile workflow/profiles/slurm --config profile=paper   # SLURM, one GPU per job
#
# Each cell of the grid (lesionlib.experiments.expand_grid) runs its notebooks through
# lesionlib.notebook_runner (jupytext -> papermill) into results/<profile>/<run_id>/. A stage's
# executed notebook is moved into place only when every cell succeeded, so finished runs are
# skipped and a failed one is re-run (its partial notebook stays under FAILED-<stage>-<time>/).
import sys
from pathlib import Path

from lesionlib import config as lconfig
from lesionlib.experiments import expand_grid

PROFILE = str(config.get("profile", lconfig.DEFAULT_PROFILE))
RESULTS = Path(config.get("results", lconfig.results_root())).resolve()
PY = sys.executable
RUNS = {r.run_id: r for r in expand_grid(PROFILE)}
NETWORK_RUNS = [r for r in RUNS.values() if "train" in r.stages]
GNB_RUNS = [r for r in RUNS.values() if "lesiongnb" in r.stages]
P = RESULTS / PROFILE
REPORT = P / "_report"
STAGE = f"{PY} -m lesionlib.experiments run --profile {PROFILE} --results {RESULTS}"
NOTEBOOK = f"{PY} -m lesionlib.experiments report --profile {PROFILE} --results {RESULTS}"


def _alternatives(ids):
    return "|".join(sorted(ids)) or "(?!)"


wildcard_constraints:
    net=_alternatives(r.run_id for r in NETWORK_RUNS),
    gnb=_alternatives(r.run_id for r in GNB_RUNS),


localrules: all, runs, book


BOOK = P / "_book"  # one book per profile and results root: <results>/<profile>/_book/_build/html/


rule all:
    input:
        BOOK / "_build" / "html" / "index.html",


rule runs:
    input:
        [P / r.run_id / "metrics.csv" for r in RUNS.values()],


# Cohorts (generated when absent), validation, lesion-size distributions, mask propagation QC.
rule data:
    output:
        REPORT / "data.ipynb",
    log:
        P / "_logs" / "data.log",
    shell:
        "{NOTEBOOK} --notebook data > {log} 2>&1"


def _parent_checkpoint(wildcards):
    parent = RUNS[wildcards.net].parent
    return [P / parent / "train.ipynb"] if parent else []


rule train:
    input:
        data=REPORT / "data.ipynb",
        parent=_parent_checkpoint,
    output:
        P / "{net}" / "train.ipynb",
    log:
        P / "_logs" / "{net}.train.log",
    resources:
        gpu=lambda wc: 1 if RUNS[wc.net].settings.get("device", "cpu") == "cuda" else 0,
    shell:
        "{STAGE} --run-id {wildcards.net} --stage train > {log} 2>&1"


rule evaluate:
    input:
        P / "{net}" / "train.ipynb",
    output:
        metrics=P / "{net}" / "metrics.csv",
        notebook=P / "{net}" / "evaluate.ipynb",
    log:
        P / "_logs" / "{net}.evaluate.log",
    resources:
        gpu=lambda wc: 1 if RUNS[wc.net].settings.get("device", "cpu") == "cuda" else 0,
    shell:
        "{STAGE} --run-id {wildcards.net} --stage evaluate > {log} 2>&1"


rule lesiongnb:
    input:
        data=REPORT / "data.ipynb",
    output:
        metrics=P / "{gnb}" / "metrics.csv",
        notebook=P / "{gnb}" / "lesiongnb.ipynb",
    log:
        P / "_logs" / "{gnb}.lesiongnb.log",
    shell:
        "{STAGE} --run-id {wildcards.gnb} --stage lesiongnb > {log} 2>&1"


rule report:
    input:
        rules.runs.input,
    output:
        tables=REPORT / "tables.ipynb",
        figures=REPORT / "figures.ipynb",
    log:
        P / "_logs" / "report.log",
    shell:
        "({NOTEBOOK} --notebook tables && {NOTEBOOK} --notebook figures) > {log} 2>&1"


# The book: pages execute against results/<profile>; Sphinx warnings are errors (-W -n --keep-going).
rule book:
    input:
        rules.report.output,
        rules.runs.input,
    output:
        BOOK / "_build" / "html" / "index.html",
    log:
        P / "_logs" / "book.log",
    shell:
        "LESIONLIB_PROFILE={PROFILE} LESIONLIB_RESULTS={RESULTS} "
        "{PY} -m lesionlib.reporting.book --profile {PROFILE} --results {RESULTS} --output {BOOK} > {log} 2>&1"
