# The experiment grid of the paper as a Snakemake workflow.
#
#   snakemake --cores 2                                  # quick profile, local, then the book
#                                                        # -> results/quick/_book/_build/html/index.html
#   snakemake --cores 2 --config profile=cpu             # another profile of experiments.yaml
#   snakemake --cores 2 runs                             # only the runs (no book)
#   snakemake --workflow-profile workflow/profiles/slurm --config profile=paper   # SLURM, one GPU per job
#
# Jobs: the data report (cohorts generated when absent, validation, QC), each method's preparation
# shared by a profile's cells (nnU-Net's planning and preprocessing), one job per grid cell
# (lesionlib.experiments.expand_grid; its `cell` notebook trains then evaluates, through
# lesionlib.notebook_runner: jupytext -> papermill, into results/<profile>/<run_id>/), the report
# notebooks and the book. A cell's executed notebook is moved into place only when every notebook
# cell succeeded, so finished cells are skipped and a failed one is re-run (its partial notebook
# stays under FAILED-cell-<time>/). Every job's wall-clock and CPU seconds and sampled memory (Snakemake's
# `benchmark:`) go to results/<profile>/_logs/benchmarks/<job>.tsv, its exact peak RSS to resources.json
# beside its outputs: `python -m lesionlib grid timings` lists and sums them up.
import sys
from pathlib import Path

from lesionlib import clone as lclone
from lesionlib import config as lconfig
from lesionlib.experiments import CELL_NOTEBOOK, SHARED_DIR, TIMINGS_DIR, expand_grid
from lesionlib.profile import load_profile
from lesionlib.segmenters import get_segmenter

# One clone, one code: Snakemake imported the lesionlib of this Snakefile's clone (it puts the Snakefile's folder
# first on sys.path); every job, and the notebook and book kernels the jobs start, imports the same clone
# ($LESIONLIB_CLONE and PYTHONPATH, inherited), not the one the shared venv's editable install points at.
lclone.export_to_children()

PROFILE = str(config.get("profile", lconfig.DEFAULT_PROFILE))
RESULTS = Path(config.get("results", lconfig.results_root())).resolve()
PY = sys.executable
PROF = load_profile(PROFILE)
RUNS = {r.run_id: r for r in expand_grid(PROF)}
PREPARED = [m for m in PROF.method_names if get_segmenter(m).needs_preparation_for(PROF.method(m))]
# Every network's adult training and its fine-tuning (nnU-Net: preparation, then training, then fine-tuning)
# are the grid's longest jobs and chains; they run under their own rule name with a higher priority, so that
# they start first and the short cells (trained on the five children alone, LesionGnb) fill the cores at the
# end. Measured on the quick grid (2 cores): with only the prepared methods' chains first, the U-Net's adult
# cell started last and ran alone for 4.5 minutes.
PARENTS = {spec.parent for spec in RUNS.values() if spec.parent}
CHAINED = sorted(r for r, spec in RUNS.items() if r in PARENTS or spec.parent)
GPU = 1 if PROF.device == "cuda" else 0
P = RESULTS / PROFILE
REPORT = P / "_report"
TIMINGS = P / TIMINGS_DIR  # one benchmark table per job (lesionlib grid timings)
BOOK = P / "_book"  # one book per profile and results root: <results>/<profile>/_book/_build/html/
GRID = f"{PY} -m lesionlib grid"
ARGS = f"--profile {PROFILE} --results {RESULTS}"


wildcard_constraints:
    run="|".join(sorted(RUNS)) or "(?!)",
    method="|".join(PREPARED) or "(?!)",


localrules: all, runs, book


# Every cell's final files are targets too, not only the book: Snakemake does not re-create a missing
# intermediate file while the files downstream of it exist (snakemake#1978), so a deleted cell folder would
# leave the book's numbers in place ("Nothing to be done"). As targets, a missing cell is run again, and the
# report and the book after it (their inputs were updated), from what is then on disk.
rule all:
    input:
        BOOK / "_build" / "html" / "index.html",
        [P / r / name for r in RUNS for name in ("metrics.csv", f"{CELL_NOTEBOOK}.ipynb")],


rule runs:
    input:
        [P / r / "metrics.csv" for r in RUNS],


# Cohorts (generated when absent), validation, lesion statistics and realism, mask propagation QC.
rule data:
    output:
        REPORT / "data.ipynb",
    log:
        P / "_logs" / "data.log",
    benchmark:
        TIMINGS / "data.tsv"
    shell:
        "{GRID} report {ARGS} --notebook data > {log} 2>&1"


# Shared by every cell of its method (nnU-Net's being the longest chain of the grid): run first.
rule prepare:
    input:
        REPORT / "data.ipynb",
    output:
        P / SHARED_DIR / "{method}.prepared",
    log:
        P / "_logs" / "prepare_{method}.log",
    benchmark:
        TIMINGS / "prepare_{method}.tsv"
    priority: 10
    resources:
        gpu=lambda wildcards: GPU if get_segmenter(wildcards.method).uses_gpu else 0,
    shell:
        "{GRID} prepare {ARGS} --method {wildcards.method} > {log} 2>&1 && touch {output}"


def _cell_inputs(wildcards):
    spec = RUNS[wildcards.run]
    inputs = [REPORT / "data.ipynb"]
    if spec.parent:
        inputs.append(P / spec.parent / f"{CELL_NOTEBOOK}.ipynb")
    if spec.method in PREPARED:
        inputs.append(P / SHARED_DIR / f"{spec.method}.prepared")
    return inputs


rule cell:
    input:
        _cell_inputs,
    output:
        metrics=P / "{run}" / "metrics.csv",
        notebook=P / "{run}" / f"{CELL_NOTEBOOK}.ipynb",
    log:
        P / "_logs" / "{run}.log",
    benchmark:
        TIMINGS / "{run}.tsv"
    wildcard_constraints:
        run="|".join(sorted(set(RUNS) - set(CHAINED))) or "(?!)",
    resources:
        # a GPU only for cuda profiles, and only for methods that use one (not LesionGnb)
        gpu=lambda wildcards: GPU if get_segmenter(RUNS[wildcards.run].method).uses_gpu else 0,
    shell:
        "{GRID} run {ARGS} --run-id {wildcards.run} > {log} 2>&1"


use rule cell as cell_chained with:
    wildcard_constraints:
        run="|".join(CHAINED) or "(?!)",
    priority: 5


rule report:
    input:
        rules.runs.input,
    output:
        tables=REPORT / "tables.ipynb",
        figures=REPORT / "figures.ipynb",
    log:
        tables=P / "_logs" / "report_tables.log",
        figures=P / "_logs" / "report_figures.log",
    benchmark:
        TIMINGS / "report.tsv"
    # the two notebooks read the cells, not each other: side by side (the grid's cores are free by then)
    threads: 2
    shell:
        "{GRID} report {ARGS} --notebook tables > {log.tables} 2>&1 & tables=$!; "
        "{GRID} report {ARGS} --notebook figures > {log.figures} 2>&1 || figures=$?; "
        "wait $tables || exit $?; exit ${{figures:-0}}"


# The book: pages show the report notebooks' artefacts; Sphinx warnings are errors (-W -n --keep-going).
rule book:
    input:
        rules.report.output,
        rules.runs.input,
    output:
        BOOK / "_build" / "html" / "index.html",
    log:
        P / "_logs" / "book.log",
    benchmark:
        TIMINGS / "book.tsv"
    shell:
        "LESIONLIB_PROFILE={PROFILE} LESIONLIB_RESULTS={RESULTS} "
        "{PY} -m lesionlib.reporting.book --profile {PROFILE} --results {RESULTS} --output {BOOK} > {log} 2>&1"
