"""Build the Jupyter Book: run index pages from executed notebooks, then ``jupyter-book build``.

The book's pages (``book/*.md``, MyST notebooks) execute against the results of one profile,
chosen by ``$LESIONLIB_PROFILE`` (default ``quick``) and ``$LESIONLIB_RESULTS``
(default ``<project>/results``). Before building, every run's executed notebooks (and failed
attempts' partial notebooks) are copied under ``book/runs/<run_id>/`` with a title cell and
execution switched off, so the run index links to a rendered page per notebook.

    python -m lesionlib.reporting.book --profile quick       # prepare + build with -W -n --keep-going
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lesionlib import config
from lesionlib.reporting.collect import RunStatus, collect_runs, run_status

__all__ = ["BookContext", "book_context", "build_book", "collapsible_table", "prepare_run_pages", "run_index_table",
           "main"]

log = logging.getLogger(__name__)

RUN_PAGES = Path("book") / "runs"

STAGE_ORDER = {"data": 0, "cell": 1, "tables": 2, "figures": 3}


@dataclass
class BookContext:
    """What a results page needs: the profile, where results live, the collected runs, and the
    status of every expected run of the grid."""

    profile: str
    results_root: Path
    runs: pd.DataFrame
    statuses: list[RunStatus]

    @property
    def data_sources(self) -> list[str]:
        return sorted(set(self.runs["data_source"])) if len(self.runs) else []

    @property
    def missing(self) -> list[str]:
        return [s.run_id for s in self.statuses if s.status != "finished"]


def book_context(profile: str | None = None, results_root: Path | None = None) -> BookContext:
    """Profile from ``$LESIONLIB_PROFILE``, results from ``$LESIONLIB_RESULTS``; the collected runs of the paper's
    methods (ablations left out) and the status of every cell."""
    from lesionlib.experiments import expand_grid
    from lesionlib.reporting.collect import paper_rows

    profile = profile or os.environ.get("LESIONLIB_PROFILE", config.DEFAULT_PROFILE)
    results_root = Path(results_root or config.results_root())
    expected = [r.run_id for r in expand_grid(profile)]
    return BookContext(profile, results_root, paper_rows(collect_runs(results_root, profile)),
                       run_status(results_root, profile, expected))


def collapsible_table(table: pd.DataFrame, title: str, *, digits: int = 3) -> str:
    """A long table as an HTML ``<details>`` element, collapsed until the reader opens it."""
    import html

    body = table.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", na_rep="–", border=0,
                         classes="lesionlib-table")
    return (f"<details><summary><b>{html.escape(title)}</b> ({len(table)} rows; click to show)</summary>"
            f"{body}</details>")


def _stage_of(path: Path) -> str:
    return path.name.split(".")[0]


def _titled_copy(src: Path, dst: Path, title: str, note: str, extra: str | None = None) -> None:
    """``src`` as a book page: a title cell (``note`` below it), then ``extra`` (Markdown) if any, then the notebook."""
    import nbformat  # here: the book's pages import this module, and nbformat's schema checks take 1.4 s to load

    nb = nbformat.read(str(src), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}\n\n{note}"))
    if extra:
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(extra))
    nb.metadata["mystnb"] = {"execution_mode": "off"}  # show what ran; never re-execute
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dst))


CELL_STAGE = "cell"


def _rerun_section(run_dir: Path, profile: str) -> str | None:
    """A run page's "How to run it again" (:func:`lesionlib.reporting.rerun.rerun_markdown`); ``None`` (and
    logged) when the run's ``params.yaml`` is unreadable."""
    from lesionlib.reporting.rerun import rerun_markdown

    try:
        return rerun_markdown(run_dir, profile)
    except (FileNotFoundError, ValueError) as exc:
        log.info("%s: no re-run section (%s)", run_dir, exc)
        return None


def prepare_run_pages(results_root: Path, profile: str, book_root: Path = config.PROJECT_ROOT) -> list[Path]:
    """Copy executed notebooks into ``<book_root>/book/runs/<run_id>/`` (recreated each time).

    Finished stages become ``<stage>.ipynb``; the latest failed attempt of a stage becomes
    ``<stage>.FAILED.ipynb`` with its error summary; report notebooks go to ``runs/report/``.
    Returns the written pages.
    """
    pages_dir = Path(book_root) / RUN_PAGES
    if pages_dir.exists():
        shutil.rmtree(pages_dir)
    pages_dir.mkdir(parents=True)
    written: list[Path] = []
    profile_dir = Path(results_root) / profile
    for status in run_status(results_root, profile):
        rerun = _rerun_section(status.run_dir, profile)
        for nb in sorted(status.notebooks, key=lambda p: STAGE_ORDER.get(_stage_of(p), 9)):
            dst = pages_dir / status.run_id / nb.name
            _titled_copy(nb, dst, f"Run `{status.run_id}`: {_stage_of(nb)}",
                         f"Executed notebook of profile `{profile}` (status: {status.status}).",
                         rerun if _stage_of(nb) == CELL_STAGE else None)
            written.append(dst)
        latest_failed: dict[str, Path] = {}
        for nb in status.failed_notebooks:  # sorted by folder name = by time
            latest_failed[_stage_of(nb)] = nb
        for stage, nb in latest_failed.items():
            if (status.run_dir / f"{stage}.ipynb").exists():
                continue  # a later attempt succeeded
            error = (nb.parent / "error.txt")
            summary = error.read_text().strip().splitlines()[-1] if error.is_file() else "unknown error"
            dst = pages_dir / status.run_id / f"{stage}.FAILED.ipynb"
            _titled_copy(nb, dst, f"Run `{status.run_id}`: {stage} — FAILED",
                         f"This stage failed; the partial notebook below is kept for reading "
                         f"(`{nb.parent.name}`). Last error line: `{summary}`",
                         rerun if stage == CELL_STAGE else None)
            written.append(dst)
    from lesionlib.experiments import REPORT_DIR

    report = profile_dir / REPORT_DIR
    for nb in sorted(report.glob("*.ipynb"), key=lambda p: STAGE_ORDER.get(_stage_of(p), 9)):
        dst = pages_dir / "report" / nb.name
        _titled_copy(nb, dst, f"Report notebook: {_stage_of(nb)}", f"Executed for profile `{profile}`.")
        written.append(dst)
    log.info("prepared %d run pages under %s", len(written), pages_dir)
    return written


def run_index_table(results_root: Path, profile: str, expected_run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run: status, and HTML links to its rendered notebook pages (relative to ``book/runs.html``)."""
    rows = []
    for s in run_status(results_root, profile, expected_run_ids or []):
        links = [f'<a href="runs/{s.run_id}/{nb.stem}.html">{nb.stem}</a>'
                 for nb in sorted(s.notebooks, key=lambda p: STAGE_ORDER.get(_stage_of(p), 9))]
        failed = sorted({_stage_of(nb) for nb in s.failed_notebooks} - {_stage_of(nb) for nb in s.notebooks})
        links += [f'<a href="runs/{s.run_id}/{stage}.FAILED.html">{stage} (FAILED)</a>' for stage in failed]
        rows.append({"run": s.run_id, "status": s.status, "notebooks": " · ".join(links) or "–"})
    return pd.DataFrame(rows, columns=["run", "status", "notebooks"])


def _jupyter_book() -> str:
    candidate = Path(sys.executable).with_name("jupyter-book")
    return str(candidate) if candidate.exists() else (shutil.which("jupyter-book") or "jupyter-book")


REHEARSAL_BANNER = ("REHEARSAL — every number in this book comes from synthetic stand-ins laid out as ATLAS v2.0 and "
                    "a paediatric BIDS cohort, a random ResNet-10 in MedicalNet's file layout and smoke schedules "
                    "(make rehearsal): it tests the paper's code path, not its findings.")


def data_source_banner(profile: str) -> str | None:
    """The banner every page of a profile's book carries, or ``None`` (only a rehearsal has one)."""
    from lesionlib.profile import load_profile

    return REHEARSAL_BANNER if load_profile(profile).data_source == "rehearsal" else None


def _config_with_banner(config_file: Path, out: Path, banner: str) -> Path:
    """A copy of the book's ``_config.yml`` whose pages all carry ``banner`` (the theme's announcement bar)."""
    import yaml

    from lesionlib.io import atomic_path

    book_config = yaml.safe_load(config_file.read_text()) or {}
    book_config.setdefault("html", {})["announcement"] = banner
    book_config["title"] = f"REHEARSAL — {book_config.get('title', '')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(book_config, sort_keys=False, allow_unicode=True))
    return out


def build_book(profile: str | None = None, results_root: Path | None = None, *,
               source_root: Path = config.PROJECT_ROOT, output_root: Path | None = None,
               strict: bool = True, timeout_s: float | None = None) -> Path:
    """Prepare run pages and build the HTML book; returns ``<output_root>/_build/html/index.html``.

    ``strict`` passes ``-W -n --keep-going`` (warnings are errors, nitpicky references), as CI does.
    The pages read ``$LESIONLIB_PROFILE`` / ``$LESIONLIB_RESULTS``, set here from the arguments.
    Raises ``RuntimeError`` with the tail of the build log when the build fails.
    """
    profile = profile or os.environ.get("LESIONLIB_PROFILE", config.DEFAULT_PROFILE)
    results_root = Path(results_root or config.results_root()).resolve()
    source_root = Path(source_root).resolve()
    prepare_run_pages(results_root, profile, source_root)
    cmd = [_jupyter_book(), "build", str(source_root)]
    banner = data_source_banner(profile)
    if banner:
        overlay = Path(output_root or source_root).resolve() / "_build" / "_config.banner.yml"
        cmd += ["--config", str(_config_with_banner(source_root / "_config.yml", overlay, banner))]
    if output_root is not None:
        cmd += ["--path-output", str(Path(output_root).resolve())]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = {**os.environ, "LESIONLIB_PROFILE": profile, "LESIONLIB_RESULTS": str(results_root)}
    log.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        raise RuntimeError(f"jupyter-book build of {source_root} failed (exit {proc.returncode}):\n{tail}")
    index = Path(output_root or source_root).resolve() / "_build" / "html" / "index.html"
    log.info("book written: %s", index)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lesionlib.reporting.book", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("LESIONLIB_PROFILE", config.DEFAULT_PROFILE))
    parser.add_argument("--results", type=Path, default=None, help="results root (default $LESIONLIB_RESULTS)")
    parser.add_argument("--output", type=Path, default=None, help="folder for _build/ (default the project)")
    parser.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    build_book(args.profile, args.results, output_root=args.output, strict=not args.no_strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
