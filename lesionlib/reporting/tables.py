"""Tables 1 and 2 of the paper: our numbers with the published value beside each cell.

Table 1: rows LesionGnb and every network x adult training set (ATLAS full, subset); columns
adult-validation DSC and HD, child DSC and HD without and with fine-tuning on the few child images
(on the same child test images: the children not used for fine-tuning), and child DSC on *all* child
images for models that never saw a child. Table 2: the networks trained on the child images alone.

A cell reads ``0.62 ± 0.10 (paper 0.61)``: mean ± SD over subjects (a subject's images and the
training seeds averaged first), the paper's value in brackets; HD cells add ``[k undef.]`` when a
Hausdorff distance is undefined (an empty prediction), counted not dropped. Rows, labels and their
order come from the method registry (:mod:`lesionlib.segmenters`); a Res-U-Net whose encoder was not
pretrained says so in its row label. Every table names its data source and profile.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from lesionlib.reporting import paper
from lesionlib.reporting.stats import summarise_conditions
from lesionlib.segmenters import get_segmenter, segmenter_labels
from lesionlib.splits import TRAIN_SET_LABELS

__all__ = ["ResultTable", "TABLE1_COLUMNS", "TABLE2_COLUMNS", "METRICS", "row_label", "table1", "table2",
           "render_html", "missing_cells"]

# (column group label, eval_set, fine_tuned)
TABLE1_COLUMNS: list[tuple[str, str, bool]] = [
    ("Adult validation", "adult_val", False),
    ("Child", "child_test", False),
    ("Child, fine-tuned", "child_test", True),
    ("Child, all images", "child_all", False),
]
TABLE2_COLUMNS: list[tuple[str, str, bool]] = [("Child", "child_test", False)]
METRICS = (("DSC", "dice", 2), ("HD (mm)", "hausdorff_mm", 1))
_PAPER_EVAL_SET = {"child_all": "child_test"}  # the paper's child column is one set of 40 images


def row_label(method: str, train_set: str, encoder_pretrained: object = None) -> str:
    """``'Res-U-Net (ATLAS full; encoder not pretrained)'``; methods with one condition: their label."""
    label = segmenter_labels().get(method, method)
    notes = [TRAIN_SET_LABELS.get(train_set, train_set)] if get_segmenter(method).fine_tunes else []
    if encoder_pretrained is False:
        notes.append("encoder not pretrained")
    return f"{label} ({'; '.join(notes)})" if notes else label


@dataclass
class ResultTable:
    """Our table for one data source and profile, merged with the paper's values.

    ``display`` holds the strings shown; ``summary`` the numbers behind them (tidy, from
    :func:`~lesionlib.reporting.stats.summarise_conditions`); ``missing`` the cells no run has filled.
    """

    name: str
    data_source: str
    profile: str
    display: pd.DataFrame
    summary: pd.DataFrame
    missing: list[str]

    @property
    def caption(self) -> str:
        source = {"synthetic": "SYNTHETIC data: our numbers test the pipeline and are not comparable to the paper's",
                  "rehearsal": "REHEARSAL on synthetic stand-ins laid out as the paper's datasets, with smoke "
                               "schedules: the numbers test the code path only"}.get(self.data_source, "real data")
        return (f"{self.name} — ours ({source}; profile '{self.profile}') with the value published by "
                f"{paper.CITATION_SHORT} in brackets. Mean ± SD over subjects (images and seeds averaged per "
                "subject); n = subjects; undef. = Hausdorff distances undefined (empty prediction), counted "
                "not dropped.")


def _rows(df: pd.DataFrame, which: int) -> list[tuple[str, str]]:
    methods = list(segmenter_labels())
    networks = [m for m in methods if get_segmenter(m).fine_tunes]
    rows = [(m, "adult_full") for m in methods if m not in networks] if which == 1 else []
    for train_set in (("adult_full", "adult_subset") if which == 1 else ("child5",)):
        rows += [(m, train_set) for m in networks]  # the paper's order: by training set, then model
    present = set(zip(df["method"], df["train_set"]))
    published = set(zip(paper.paper_results()["method"], paper.paper_results()["train_set"]))
    return [r for r in rows if r in present or r in published]


def _paper_value(method: str, train_set: str, eval_set: str, fine_tuned: bool, metric: str) -> float | None:
    pub = paper.paper_results()
    hit = pub[(pub.method == method) & (pub.train_set == train_set) & (pub.fine_tuned == fine_tuned)
              & (pub.eval_set == _PAPER_EVAL_SET.get(eval_set, eval_set))]
    return float(hit[metric].iloc[0]) if len(hit) else None


def _cell(r: object | None, published: float | None, digits: int) -> str:
    if r is None or math.isnan(r.mean):
        ours = "not run" if r is None else "–"
    elif math.isnan(r.sd):
        ours = f"{r.mean:.{digits}f}"
    else:
        ours = f"{r.mean:.{digits}f} ± {r.sd:.{digits}f}"
    if r is not None and r.n_undefined:
        ours += f" [{r.n_undefined} undef.]"
    return f"{ours} (paper {published:.{digits}f})" if published is not None else ours


def _build(df: pd.DataFrame, name: str, which: int, columns: list[tuple[str, str, bool]]) -> list[ResultTable]:
    tables: list[ResultTable] = []
    for (source, profile), part in df.groupby(["data_source", "profile"], sort=True):
        summary = summarise_conditions(part, [m for _, m, _ in METRICS] + ["hausdorff_penalised_mm"])
        lookup = {(r.method, r.train_set, r.eval_set, bool(r.fine_tuned), r.metric): r
                  for r in summary.itertuples(index=False)}
        out_rows, missing = [], []
        for method, train_set in _rows(part, which):
            pretrained = part.loc[(part.method == method) & (part.train_set == train_set), "encoder_pretrained"]
            out = {"Method": row_label(method, train_set, False if (pretrained == False).any() else None)}  # noqa: E712
            for group, eval_set, ft in columns:
                if ft and not get_segmenter(method).fine_tunes:
                    out[f"{group} · DSC"] = out[f"{group} · HD (mm)"] = out[f"{group} · n"] = "n/a"
                    continue
                n = None
                for label, metric, digits in METRICS:
                    r = lookup.get((method, train_set, eval_set, ft, metric))
                    out[f"{group} · {label}"] = _cell(r, _paper_value(method, train_set, eval_set, ft, metric), digits)
                    n = r.n if r is not None else n
                if n is None:
                    missing.append(f"{row_label(method, train_set)} — {group}")
                out[f"{group} · n"] = "–" if n is None else str(n)
            out_rows.append(out)
        table = pd.DataFrame(out_rows).set_index("Method")
        tables.append(ResultTable(name, str(source), str(profile), table, summary, missing))
    return tables


def table1(df: pd.DataFrame) -> list[ResultTable]:
    """Our Table 1 (with the paper's values), one :class:`ResultTable` per (data_source, profile) in ``df``."""
    return _build(df, "Table 1", 1, TABLE1_COLUMNS)


def table2(df: pd.DataFrame) -> list[ResultTable]:
    """Our Table 2 (networks trained on the child images alone), with the paper's values."""
    return _build(df, "Table 2", 2, TABLE2_COLUMNS)


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
