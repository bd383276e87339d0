"""The report artefacts of a profile: computed once by the report notebooks, shown by the book.

``write_tables_report`` (the ``tables`` notebook) and ``write_figures`` (the ``figures`` notebook)
write into ``<results>/<profile>/_report/``::

    status.md                    which cells finished, data source
    findings.csv / .html         the paper's findings tested on these results (reporting.findings)
    table1.csv / .html           our Table 1 with the published value beside each cell: the long form
                                 (CSV) and the paper's layout (HTML, tables.render_table)
    table2.csv / .html           the same for Table 2
    ablations.csv / .html        each ablation the profile ran (e.g. the Res-U-Net without its pretrained
                                 encoder) against its method, paired by subject (findings.ablation_tests);
                                 ablations stay out of every other artefact
    summary_by_condition.csv     mean, SD, CI, seed spread per condition and metric (subjects)
    paired_wilcoxon.csv          paired tests between methods (subjects)
    figure1.png, figure2.png, figure2_data.csv, forest.png

The book's results page reads these files (:func:`read_artefact`) instead of recomputing them,
so what a reader sees is exactly what the notebooks computed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lesionlib import config
from lesionlib.io import atomic_path

__all__ = ["TablesReport", "write_tables_report", "write_figures", "report_dir", "read_artefact"]

log = logging.getLogger(__name__)


def report_dir(profile: str, results_root: Path | None = None) -> Path:
    """``<results>/<profile>/_report`` (where the report notebooks' outputs end up)."""
    from lesionlib.experiments import REPORT_DIR

    return Path(results_root or config.results_root()) / profile / REPORT_DIR


def read_artefact(profile: str, name: str, results_root: Path | None = None) -> str | pd.DataFrame | Path | None:
    """A report artefact by file name: text for ``.md``/``.html``, a DataFrame for ``.csv``, the path for
    an image; ``None`` when the report notebooks have not written it (yet)."""
    path = report_dir(profile, results_root) / name
    if not path.is_file():
        return None
    if path.suffix in (".md", ".html"):
        return path.read_text()
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return path


@dataclass
class TablesReport:
    """What the ``tables`` notebook displays (the same content it wrote to files)."""

    status_markdown: str
    findings_html: str
    tables_html: list[str]
    summary: pd.DataFrame
    tests: pd.DataFrame


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def _status(profile: str, root: Path, runs: pd.DataFrame) -> str:
    from lesionlib.experiments import expand_grid
    from lesionlib.reporting.collect import run_status

    statuses = run_status(root, profile, [r.run_id for r in expand_grid(profile)])
    finished = [s for s in statuses if s.status == "finished"]
    missing = [s.run_id for s in statuses if s.status != "finished"]
    sources = ", ".join(sorted(set(runs["data_source"]))) or "none yet"
    text = (f"Profile **`{profile}`**: **{len(finished)} of {len(statuses)} cells finished**; "
            f"data source: **{sources}**.")
    if missing:
        text += " Not (yet) available, so absent from the tables: " + ", ".join(f"`{r}`" for r in missing) + "."
    return text


def write_tables_report(profile: str, results_root: Path | None, out_dir: Path) -> TablesReport:
    """Collect the runs, test the findings, build Tables 1 and 2 and the statistics; write them to ``out_dir``."""
    from lesionlib.reporting import findings, stats, tables
    from lesionlib.reporting.collect import collect_runs, paper_rows

    root = Path(results_root or config.results_root())
    out_dir = Path(out_dir)
    every_run = collect_runs(root, profile)
    status = _status(profile, root, every_run)
    _write_text(out_dir / "status.md", status)
    source = ", ".join(sorted(set(every_run["data_source"]))) or "none"
    ablations = findings.findings_table(findings.ablation_tests(every_run) if len(every_run) else [])
    _write_csv(out_dir / "ablations.csv", ablations)
    _write_text(out_dir / "ablations.html", findings.render_findings_html(
        ablations, data_source=source, profile=profile, what="ablation"))
    runs = paper_rows(every_run)
    found = findings.all_findings(runs) if len(runs) else []
    found_table = findings.findings_table(found)
    found_html = findings.render_findings_html(found_table, data_source=source, profile=profile)
    _write_csv(out_dir / "findings.csv", found_table)
    _write_text(out_dir / "findings.html", found_html)
    tables_html = []
    for name, build in (("table1", tables.table1), ("table2", tables.table2)):
        for t in build(runs):
            _write_csv(out_dir / f"{name}.csv", t.display, index=True)
            html = tables.render_table(t, table_id=name)
            _write_text(out_dir / f"{name}.html", html)
            tables_html.append(html)
    summary = stats.summarise_conditions(runs, ("dice", "hausdorff_mm", "hausdorff_penalised_mm")) \
        if len(runs) else pd.DataFrame()
    tests = (pd.concat([stats.paired_wilcoxon(runs, m) for m in ("dice", "hausdorff_penalised_mm")],
                       ignore_index=True) if len(runs) else pd.DataFrame())
    _write_csv(out_dir / "summary_by_condition.csv", summary)
    _write_csv(out_dir / "paired_wilcoxon.csv", tests)
    return TablesReport(status, found_html, tables_html, summary, tests)


def write_figures(profile: str, results_root: Path | None, out_dir: Path) -> list[Path]:
    """Figure 1, Figure 2 (with its data) and the forest plot as files in ``out_dir``; returns them."""
    import matplotlib.pyplot as plt

    from lesionlib.reporting import figures
    from lesionlib.reporting.collect import collect_runs, paper_rows

    runs = paper_rows(collect_runs(Path(results_root or config.results_root()), profile))
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, make in (("figure1.png", figures.figure1_overlays), ("figure2.png", figures.figure2_dice_vs_volume),
                       ("forest.png", figures.forest_plot)):
        fig = make(runs) if len(runs) else None
        if fig is None:
            continue
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight")
        plt.close(fig)
        written.append(out_dir / name)
    child = runs[runs["eval_set"] == "child_test"] if len(runs) else runs
    if len(child):
        _write_csv(out_dir / "figure2_data.csv", child[["run_id", "method", "train_set", "fine_tuned", "seed",
                                                        "case_id", "subject", "lesion_volume_ml", "dice"]])
        written.append(out_dir / "figure2_data.csv")
    return written
