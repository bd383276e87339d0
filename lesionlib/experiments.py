"""The paper's experiment grid, expanded from a profile, and the runner of its notebooks.

Cells, for every seed of the profile and every method of its grid (:mod:`lesionlib.segmenters`):

* methods that fine-tune (the networks): one cell per adult training set (ATLAS full, subset),
  the same fine-tuned on the few child images (each depends on its parent adult cell), and one
  trained on the child images alone;
* other methods (LesionGnb): one cell per seed, trained on the adult training split.

Every cell has a stable, readable ``run_id`` (``resunet_adult-subset_ft-child5_seed1``), a folder
``<results>/<profile>/<run_id>/`` and one stage, the ``cell`` notebook (``notebooks/cell.py``):
train (or fine-tune) then evaluate. Methods that share work across cells (nnU-Net's planning and
preprocessing) get a ``prepare`` step per profile, run before their cells. Profile-level report
notebooks (``data``, ``tables``, ``figures``) run into ``<results>/<profile>/_report/``.

Command line (used by the Snakefile)::

    lesionlib grid list --profile quick [--json]
    lesionlib grid prepare --profile quick --method nnunet
    lesionlib grid run --profile quick --run-id unet_adult-full_seed0
    lesionlib grid report --profile quick --notebook tables
    lesionlib grid timings --profile quick      # every job's wall-clock, CPU seconds and peak RSS, after a run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lesionlib import config
from lesionlib.profile import Profile, load_profile
from lesionlib.resources import RESOURCES_JSON, read_resources

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CELL_NOTEBOOK",
    "REPORT_NOTEBOOKS",
    "RunSpec",
    "expand_grid",
    "grid_by_id",
    "INTERACTIVE_DIR",
    "interactive_dir",
    "job_timings",
    "report_resources_file",
    "TIMINGS_DIR",
    "run_id_for",
    "resolved_settings",
    "run_cell",
    "run_prepare",
    "run_report",
    "shared_dir",
    "register_cli",
]

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
CELL_NOTEBOOK = "cell"
#: Where the Snakefile's jobs write their ``benchmark:`` tables, under ``<results>/<profile>/``.
TIMINGS_DIR = Path("_logs") / "benchmarks"
REPORT_NOTEBOOKS = ("data", "tables", "figures")
REPORT_DIR = "_report"
SHARED_DIR = "_shared"
#: Where notebooks run by hand (JupyterLab, papermill) write by default, under ``<results>/<profile>/``: never a
#: grid cell's folder (``<results>/<profile>/<run_id>/``), so neither Snakemake nor the book take them for one.
INTERACTIVE_DIR = "interactive"


def run_id_for(method: str, train_set: str, fine_tuned: bool, seed: int, few_shot_n: int = 5) -> str:
    """Stable, readable id of a grid cell: ``'<method>_<train-set>[_ft-child<n>]_seed<k>'``."""
    parts = [method, train_set.replace("_", "-")]
    if fine_tuned:
        parts.append(f"ft-child{few_shot_n}")
    parts.append(f"seed{int(seed)}")
    return "_".join(parts)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid.

    ``stage`` is what the cell trains for (``'adult'``, ``'finetune'``, ``'child_only'``);
    ``parent`` the ``run_id`` of the adult cell a fine-tuning cell starts from.
    """

    run_id: str
    profile: str
    method: str
    train_set: str
    fine_tuned: bool
    seed: int
    parent: str | None

    @property
    def stage(self) -> str:
        if self.fine_tuned:
            return "finetune"
        return "child_only" if self.train_set == "child5" else "adult"

    def run_dir(self, results_root: Path | None = None) -> Path:
        """``<results_root>/<profile>/<run_id>``."""
        return Path(results_root or config.results_root()) / self.profile / self.run_id

    def params(self) -> dict[str, Any]:
        """The cell's identity (written to ``params.yaml``; labels every row of its ``metrics.csv``)."""
        return {"run_id": self.run_id, "profile": self.profile, "method": self.method, "train_set": self.train_set,
                "fine_tuned": self.fine_tuned, "seed": self.seed, "stage": self.stage,
                "parent_run": self.parent or ""}


def expand_grid(profile: str | Profile = config.DEFAULT_PROFILE) -> list[RunSpec]:
    """All cells of a profile's grid, parents before their fine-tuning cells."""
    from lesionlib.segmenters import get_segmenter

    prof = load_profile(profile) if isinstance(profile, str) else profile
    grid, n = prof.grid, prof.splits.few_shot_n
    runs: list[RunSpec] = []

    def add(method: str, train_set: str, fine_tuned: bool, seed: int) -> None:
        parent = run_id_for(method, train_set, False, seed, n) if fine_tuned else None
        runs.append(RunSpec(run_id_for(method, train_set, fine_tuned, seed, n), prof.name, method, train_set,
                            fine_tuned, seed, parent))

    def trains_on(method: str, train_set: str) -> bool:
        return get_segmenter(method).ablation_of is None or train_set in grid.ablation_train_sets

    for seed in prof.seeds:
        networks = [m for m in prof.method_names if get_segmenter(m).fine_tunes]
        for method in prof.method_names:
            if not get_segmenter(method).fine_tunes:
                add(method, "adult_full", False, seed)
        for train_set in grid.adult_train_sets:
            for method in networks:
                if trains_on(method, train_set):
                    add(method, train_set, False, seed)
        if grid.fine_tune:
            for train_set in grid.adult_train_sets:
                for method in networks:
                    if trains_on(method, train_set):
                        add(method, train_set, True, seed)
        if grid.child_only:
            for method in networks:
                add(method, "child5", False, seed)
    ids = [r.run_id for r in runs]
    if len(ids) != len(set(ids)):
        raise ValueError(f"profile {prof.name!r}: run ids repeat")
    return runs


def grid_by_id(profile: str | Profile = config.DEFAULT_PROFILE) -> dict[str, RunSpec]:
    """:func:`expand_grid` as a mapping ``run_id -> RunSpec``."""
    return {r.run_id: r for r in expand_grid(profile)}


def interactive_dir(profile: str, name: str, results_root: Path | None = None, *,
                    now: _dt.datetime | None = None) -> Path:
    """``<results>/<profile>/interactive/<name>-<UTC time>/``: a fresh folder for one notebook run by hand.

    ``name`` is the run id (the ``cell`` notebook) or the report notebook's name. The folder is created;
    two runs in the same second get ``-2``, ``-3``... appended, so a run never writes into another's folder.
    """
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    parent = Path(results_root or config.results_root()) / profile / INTERACTIVE_DIR
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = parent / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        log.info("writing the outputs of this run by hand to %s", folder)
        return folder
    raise FileExistsError(f"{parent}: 999 folders named {name}-{stamp}* already exist")


def shared_dir(profile: str, method: str, results_root: Path | None = None) -> Path:
    """``<results>/<profile>/_shared/<method>``: work a method shares across a profile's cells."""
    return Path(results_root or config.results_root()) / profile / SHARED_DIR / method


def resolved_settings(spec: RunSpec, profile: Profile | None = None, *, with_data: bool = False) -> dict[str, Any]:
    """Everything a cell will do, before it runs: its identity, the method's plan (epochs, iterations,
    schedule, augmentation, folds, encoder weights...), devices and data (``lesionlib grid list --json``).

    ``with_data`` discovers the cohorts to count training and test images (slower); otherwise the
    counts come from the profile's cohort sizes.
    """
    from lesionlib.segmenters import build_segmenter

    prof = profile or load_profile(spec.profile)
    seg = build_segmenter(spec.method, prof, seed=spec.seed, model_dir=Path("model"))
    if with_data:
        from lesionlib.splits import make_splits

        splits = make_splits(prof, spec.seed)
        n_train = len(splits.training(spec.train_set, spec.fine_tuned)[0])
        test = {k: len(v) for k, v in splits.evaluation(spec.train_set, spec.fine_tuned).items()}
    else:
        n_adult_train = round(prof.data.n_adult * (1 - prof.splits.adult_val_fraction))
        n_train = prof.splits.few_shot_n if spec.stage != "adult" else n_adult_train
        test = {}
    return {**spec.params(), "label": seg.label, "device": prof.device, "data_source": prof.data_source,
            "resolution_mm": prof.data.resolution_mm, "n_train_images": n_train, "test_set_sizes": test,
            "settings": seg.plan(spec.stage, n_train)}


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------

def run_prepare(profile: str, method: str, *, results_root: Path | None = None, progress: bool = False) -> Path:
    """Run ``method``'s shared preparation for ``profile`` (a no-op for methods without one); its measured
    resources go to ``<folder>/resources.json`` (:class:`lesionlib.resources.ResourceMeter`)."""
    from lesionlib.resources import ResourceMeter, write_resources
    from lesionlib.segmenters import get_segmenter

    prof = load_profile(profile)
    folder = shared_dir(profile, method, results_root)
    folder.mkdir(parents=True, exist_ok=True)
    with ResourceMeter() as meter:
        get_segmenter(method).prepare(prof, folder, progress=progress)
    write_resources(folder / RESOURCES_JSON, {**meter.usage.record(), "stage": "prepare", "status": "complete"})
    return folder


def run_cell(spec: RunSpec, *, results_root: Path | None = None, notebooks_dir: Path = NOTEBOOKS_DIR,
             timeout_s: float | None = None) -> Path:
    """Execute the ``cell`` notebook of ``spec`` into its run folder (:func:`lesionlib.notebook_runner.run_notebook`).

    Returns the executed notebook ``<run_dir>/cell.ipynb``; on failure the partial notebook is left
    under ``<run_dir>/FAILED-cell-<time>/`` and the exception propagates.
    """
    from lesionlib.notebook_runner import run_notebook

    root = Path(results_root or config.results_root()).resolve()
    return run_notebook(
        Path(notebooks_dir) / f"{CELL_NOTEBOOK}.py", spec.run_dir(root), stage=CELL_NOTEBOOK,
        parameters=lambda out_dir: {"profile": spec.profile, "run_id": spec.run_id, "results_root": str(root),
                                    "out_dir": str(out_dir)},
        run_params=spec.params(), timeout_s=timeout_s, resources_file=RESOURCES_JSON,
    )


def run_report(name: str, profile: str = config.DEFAULT_PROFILE, *, results_root: Path | None = None,
               notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: float | None = None) -> Path:
    """Execute a profile-level notebook (``data``, ``tables``, ``figures``) into ``<results>/<profile>/_report/``.

    Its parameters: ``profile``, ``results_root`` and ``out_dir`` (the staging folder).
    """
    from lesionlib.notebook_runner import run_notebook

    if name not in REPORT_NOTEBOOKS:
        raise ValueError(f"unknown report notebook {name!r}; known {list(REPORT_NOTEBOOKS)}")
    root = Path(results_root or config.results_root()).resolve()
    load_profile(profile)  # a bad profile fails here, before a kernel starts
    return run_notebook(Path(notebooks_dir) / f"{name}.py", root / profile / REPORT_DIR, stage=name,
                        parameters=lambda out_dir: {"profile": profile, "results_root": str(root),
                                                    "out_dir": str(out_dir)},
                        timeout_s=timeout_s, resources_file=report_resources_file(name))


def report_resources_file(name: str) -> str:
    """File, in ``<results>/<profile>/_report/``, of a report notebook's measured resources."""
    return f"resources-{name}.json"


def _exact_resources(profile_dir: Path, job: str) -> dict[str, Any] | None:
    """The job's own measured resources (:data:`lesionlib.resources.RESOURCES_JSON`), if every notebook
    of the job left one: a cell's ``<run_id>/resources.json``; a preparation's ``_shared/<method>/resources.json``;
    the ``data`` report's; for the ``report`` job, its ``tables`` and ``figures`` notebooks together (seconds
    added, the larger peak)."""
    if job.startswith("prepare_"):
        files = [profile_dir / SHARED_DIR / job.removeprefix("prepare_") / RESOURCES_JSON]
    elif job == "report" or job in REPORT_NOTEBOOKS:
        names = [n for n in REPORT_NOTEBOOKS if n != "data"] if job == "report" else [job]
        files = [profile_dir / REPORT_DIR / report_resources_file(n) for n in names]
    else:
        files = [profile_dir / job / RESOURCES_JSON]
    records = [read_resources(f) for f in files]
    if not records or any(r is None for r in records):
        return None
    return {"cpu_s": sum(r["cpu_s"] for r in records), "peak_rss_mib": max(r["peak_rss_mib"] for r in records)}


def job_timings(profile: str, results_root: Path | None = None) -> pd.DataFrame:
    """Wall-clock seconds, CPU seconds and peak memory of every job of a profile's last ``snakemake`` run,
    longest first.

    Read from Snakemake's ``benchmark:`` files, ``<results>/<profile>/_logs/benchmarks/<job>.tsv``
    (columns ``s``, ``cpu_time``, ``max_rss``), and from the resources each notebook job measured itself
    (``<run_id>/resources.json``, ``_shared/<method>/resources.json``, ``_report/resources-<notebook>.json``;
    :mod:`lesionlib.resources`).
    One row per job:

    * ``wall_s``: Snakemake's wall-clock seconds of the whole job;
    * ``cpu_s``: the job's own ``getrusage`` figure (the notebook runner, its kernel and every process
      they waited for) when present, else the CPU time Snakemake's sampling of the job's processes saw (it
      misses short-lived subprocesses, e.g. most of nnU-Net's, so it is a lower bound);
    * ``peak_rss_mib``: the job's own figure when present (the peak RSS of its largest single process,
      exact), else Snakemake's ``max_rss`` (the sum of RSS over the job's process tree, sampled: every
      0.5 s for 15 s, then every 30 s; pages shared by forked workers counted once per process);
    * ``sampled_rss_mib``: Snakemake's ``max_rss`` (MiB; NaN when it recorded none);
    * ``exact``: whether ``cpu_s`` and ``peak_rss_mib`` are the job's own figures.

    Raises ``FileNotFoundError`` naming the folder when there is no benchmark file, ``ValueError``
    naming a file that is not a benchmark table.
    """
    import pandas as pd

    profile_dir = Path(results_root or config.results_root()) / profile
    folder = profile_dir / TIMINGS_DIR
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no job timings (run the profile with snakemake / make book first)")
    rows = []
    for f in files:
        try:
            table = pd.read_csv(f, sep="\t", na_values=["NA", "-"])
            wall, cpu = float(table["s"].iloc[-1]), float(table["cpu_time"].iloc[-1])
            sampled_rss = float(table["max_rss"].iloc[-1]) if "max_rss" in table else float("nan")
        except (KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
            raise ValueError(f"{f}: not a Snakemake benchmark file (columns s, cpu_time): {exc}") from exc
        exact = _exact_resources(profile_dir, f.stem)
        rows.append({"job": f.stem, "wall_s": wall, "cpu_s": exact["cpu_s"] if exact else cpu,
                     "peak_rss_mib": exact["peak_rss_mib"] if exact else sampled_rss,
                     "sampled_rss_mib": sampled_rss, "exact": exact is not None})
    return pd.DataFrame(rows).sort_values("wall_s", ascending=False, ignore_index=True)


def _print_timings(table: pd.DataFrame) -> None:
    """``lesionlib grid timings``: the table, then totals and the largest peak."""
    shown = table.assign(exact=table.exact.map({True: "yes", False: "sampled"}))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-"))
    n_exact = int(table.exact.sum())
    print(f"total: {table.wall_s.sum():.0f} job-s wall over {len(table)} jobs ({table.cpu_s.sum():.0f} CPU-s; "
          f"{n_exact} of {len(table)} jobs measured by themselves, the others as seen by Snakemake's sampling)")
    if table.peak_rss_mib.notna().any():
        top = table.loc[table.peak_rss_mib.idxmax()]
        print(f"largest peak RSS: {top.peak_rss_mib:.0f} MiB ({top.job}; "
              f"{'one process, exact' if top.exact else 'process tree, sampled'})")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def _add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="print the cells of a profile (run_id, method, train set, ...)")
    p.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p.add_argument("--json", action="store_true", help="every cell's fully resolved settings, as JSON")
    p.add_argument("--with-data", action="store_true", help="count training and test images (reads the cohorts)")
    p = sub.add_parser("prepare", help="a method's preparation shared by every cell of a profile")
    p.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p.add_argument("--method", required=True)
    p.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    p = sub.add_parser("run", help="train and evaluate one cell (its notebook)")
    p.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p.add_argument("--run-id", required=True)
    p.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    p.add_argument("--timeout-s", type=float, default=None, help="per-notebook-cell timeout")
    p = sub.add_parser("report", help="execute a profile-level notebook (data, tables, figures)")
    p.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p.add_argument("--notebook", required=True, choices=REPORT_NOTEBOOKS)
    p.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    p.add_argument("--timeout-s", type=float, default=None, help="per-notebook-cell timeout")
    p = sub.add_parser("timings", help="wall-clock, CPU seconds and peak RSS (MiB) of every job of the profile's "
                                       "last snakemake run")
    p.add_argument("--profile", default=config.DEFAULT_PROFILE)
    p.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")


def _list(args: argparse.Namespace) -> int:
    prof = load_profile(args.profile)
    runs = expand_grid(prof)
    if args.json:
        cells = [resolved_settings(r, prof, with_data=args.with_data) for r in runs]
        print(json.dumps({"profile": prof.to_dict(), "cells": cells}, indent=1))
        return 0
    for r in runs:
        print("\t".join([r.run_id, r.method, r.train_set, str(r.fine_tuned), str(r.seed), r.stage, r.parent or "-"]))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _list(args)
    if args.command == "prepare":
        run_prepare(args.profile, args.method, results_root=args.results)
        return 0
    if args.command == "timings":
        _print_timings(job_timings(args.profile, args.results))
        return 0
    if args.command == "report":
        run_report(args.notebook, args.profile, results_root=args.results, timeout_s=args.timeout_s)
        return 0
    grid = grid_by_id(args.profile)
    if args.run_id not in grid:
        raise SystemExit(f"lesionlib grid run: unknown run id {args.run_id!r} in profile {args.profile!r}")
    run_cell(grid[args.run_id], results_root=args.results, timeout_s=args.timeout_s)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """``lesionlib grid {list,prepare,run,report,timings}`` (for :mod:`lesionlib.cli`)."""
    parser = subparsers.add_parser("grid", help="the experiment grid: list cells, prepare, run a cell, run a report",
                                   description=__doc__.splitlines()[0])
    _add_commands(parser.add_subparsers(dest="command", required=True))
    parser.set_defaults(func=_dispatch)


if __name__ == "__main__":  # pragma: no cover - the CLI is ``lesionlib grid``
    sys.exit("use `lesionlib grid ...`")
