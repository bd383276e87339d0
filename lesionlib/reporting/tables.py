"""Tables 1 and 2 of the paper, computed from our runs and shown beside the published values.

Table 1: rows LesionGnb and {U-Net, Res-U-Net, nnU-Net} x {trained on adult full, adult subset};
columns adult-validation DSC and HD, child DSC and HD without and with fine-tuning on 5 child
images. Table 2: the three models trained on the 5 child images alone, child DSC and HD.

Our cells read ``mean ± SD`` over cases (seeds averaged per case), with the number of cases and
of undefined Hausdorff distances; every table of ours carries its data source
(``synthetic``/``real``) and profile in a column and in its caption, and is rendered apart
from the paper's numbers (:mod:`lesionlib.reporting.paper`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from lesionlib.reporting import paper
from lesionlib.reporting.stats import summarise_conditions

__all__ = [
    "METHOD_LABELS",
    "TRAIN_SET_LABELS",
    "ResultTable",
    "table1",
    "table2",
    "paper_table1_wide",
    "paper_table2_wide",
    "render_html",
    "missing_cells",
]

METHOD_LABELS = {"lesiongnb": "LesionGnb", "unet": "U-Net", "resunet": "Res-U-Net", "nnunet": "nnU-Net"}
TRAIN_SET_LABELS = {"adult_full": "ATLAS full", "adult_subset": "ATLAS subset", "child5": "5 child images",
                    "": "adult (pretrained model)"}

# (column group label, eval_set, fine_tuned)
TABLE1_COLUMNS: list[tuple[str, str, bool]] = [
    ("Adult validation", "adult_val", False),
    ("Child", "child_test", False),
    ("Child, fine-tuned", "child_test", True),
]
TABLE1_ROWS: list[tuple[str, str]] = [("lesiongnb", "")] + [
    (m, t) for t in ("adult_full", "adult_subset") for m in ("unet", "resunet", "nnunet")
]
TABLE2_COLUMNS: list[tuple[str, str, bool]] = [("Child", "child_test", False)]
TABLE2_ROWS: list[tuple[str, str]] = [(m, "child5") for m in ("unet", "resunet", "nnunet")]
METRICS = (("DSC", "dice", 2), ("HD (mm)", "hausdorff_mm", 1))


def _row_label(method: str, train_set: str) -> str:
    if method == "lesiongnb":
        return METHOD_LABELS[method]
    return f"{METHOD_LABELS.get(method, method)} ({TRAIN_SET_LABELS.get(train_set, train_set)})"


@dataclass
class ResultTable:
    """A rendered-ready table of our results for one data source and profile.

    ``display`` holds strings (``'0.45 ± 0.12'``), ``summary`` the numbers behind them (tidy,
    from :func:`~lesionlib.reporting.stats.summarise_conditions`), ``cases`` the number of
    cases per cell, ``missing`` the cells for which no run has finished.
    """

    name: str
    data_source: str
    profile: str
    display: pd.DataFrame
    summary: pd.DataFrame
    missing: list[str]

    @property
    def caption(self) -> str:
        source = "SYNTHETIC data — not comparable to the paper's numbers" if self.data_source == "synthetic" \
            else "real data"
        return (f"{self.name} — ours: {source}; profile '{self.profile}'. "
                "Mean ± SD over cases (seeds averaged per case); n = cases; "
                "undef. = Hausdorff distances undefined (empty prediction or mask), counted not dropped.")


def _build(df: pd.DataFrame, name: str, rows: list[tuple[str, str]], columns: list[tuple[str, str, bool]],
           *, bootstrap: bool) -> list[ResultTable]:
    tables = []
    if df.empty:
        return tables
    for (source, profile), part in df.groupby(["data_source", "profile"], sort=True):
        summary = summarise_conditions(part, [m for _, m, _ in METRICS], bootstrap=bootstrap)
        lookup = {(r.method, r.train_set, r.eval_set, bool(r.fine_tuned), r.metric): r
                  for r in summary.itertuples(index=False)}
        out_rows, missing = [], []
        for method, train_set in rows:
            out = {"Method": _row_label(method, train_set), "Data": f"{source} · {profile}"}
            for group, eval_set, ft in columns:
                if method == "lesiongnb" and ft:
                    out[f"{group} · DSC"] = out[f"{group} · HD (mm)"] = out[f"{group} · n"] = "n/a"
                    continue
                n = None
                for label, metric, digits in METRICS:
                    r = lookup.get((method, train_set, eval_set, ft, metric))
                    if r is None:
                        out[f"{group} · {label}"] = "not run"
                        continue
                    out[f"{group} · {label}"] = _format(r.mean, r.sd, r.n_undefined, digits)
                    n = r.n
                if n is None:
                    missing.append(f"{_row_label(method, train_set)} — {group}")
                out[f"{group} · n"] = "–" if n is None else str(n)
            out_rows.append(out)
        display = pd.DataFrame(out_rows).set_index("Method")
        tables.append(ResultTable(name, str(source), str(profile), display, summary, missing))
    return tables


def _format(mean: float, sd: float, n_undefined: int, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        text = "–"
    elif sd is None or math.isnan(sd):
        text = f"{mean:.{digits}f}"
    else:
        text = f"{mean:.{digits}f} ± {sd:.{digits}f}"
    if n_undefined:
        text += f" ({n_undefined} undef.)"
    return text


def table1(df: pd.DataFrame, *, bootstrap: bool = True) -> list[ResultTable]:
    """Our Table 1, one :class:`ResultTable` per (data_source, profile) present in ``df``.

    ``df`` is the tidy frame of :func:`~lesionlib.reporting.collect.collect_runs`. A cell with no
    finished run reads ``'not run'`` and is listed in ``missing``. Empty list for an empty frame.
    """
    return _build(df, "Table 1", TABLE1_ROWS, TABLE1_COLUMNS, bootstrap=bootstrap)


def table2(df: pd.DataFrame, *, bootstrap: bool = True) -> list[ResultTable]:
    """Our Table 2 (models trained on the 5 child images alone)."""
    return _build(df, "Table 2", TABLE2_ROWS, TABLE2_COLUMNS, bootstrap=bootstrap)


def _paper_wide(tidy: pd.DataFrame, rows: list[tuple[str, str]], columns: list[tuple[str, str, bool]]) -> pd.DataFrame:
    out_rows = []
    for method, train_set in rows:
        out = {"Method": _row_label(method, train_set)}
        for group, eval_set, ft in columns:
            hit = tidy[(tidy.method == method) & (tidy.train_set == train_set) & (tidy.eval_set == eval_set)
                       & (tidy.fine_tuned == ft)]
            for label, metric, digits in METRICS:
                out[f"{group} · {label}"] = f"{hit[metric].iloc[0]:.2f}" if len(hit) else "–"
        out_rows.append(out)
    return pd.DataFrame(out_rows).set_index("Method")


def paper_table1_wide() -> pd.DataFrame:
    """The paper's Table 1 in the layout of ours (strings; '–' where the paper has no number)."""
    return _paper_wide(paper.paper_table1(), TABLE1_ROWS, TABLE1_COLUMNS)


def paper_table2_wide() -> pd.DataFrame:
    """The paper's Table 2 in the layout of ours."""
    return _paper_wide(paper.paper_table2(), TABLE2_ROWS, TABLE2_COLUMNS)


def missing_cells(tables: list[ResultTable]) -> list[str]:
    """All cells without a finished run, over the given tables."""
    return [f"{t.name} ({t.data_source}, {t.profile}): {cell}" for t in tables for cell in t.missing]


def render_html(table: pd.DataFrame, caption: str, *, css_class: str = "lesionlib-table",
                table_id: str | None = None) -> str:
    """A table as HTML with a caption (pandas Styler), for the book and the report notebooks."""
    styler = table.style.set_caption(html.escape(caption)).set_table_attributes(f'class="{css_class}"')
    if table_id:
        styler = styler.set_uuid(table_id)
    return styler.to_html()
