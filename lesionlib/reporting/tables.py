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

``ResultTable.display`` is the long form (one column per group x DSC, HD, n; written as CSV).
:func:`render_table` lays it out as the paper's tables for the book: grouped column headers (Table 1:
ATLAS validation | children, no fine-tuning | children, fine-tuned), DSC and HD under each, ours over the
paper's value in each cell, n in the group header; Table 1's column the paper lacks (the models that never
saw a child, on every child image) follows as a second, small table.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from lesionlib.reporting import paper
from lesionlib.reporting.stats import summarise_conditions
from lesionlib.segmenters import get_segmenter, segmenter_labels
from lesionlib.splits import TRAIN_SET_LABELS

__all__ = ["ResultTable", "TABLE1_COLUMNS", "TABLE2_COLUMNS", "TABLE1_GROUPS", "TABLE1_EXTRA_GROUPS", "TABLE2_GROUPS",
           "METRICS", "row_label", "table1", "table2", "render_html", "render_table", "missing_cells"]

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
# The paper's column groups in its order, as (heading, group of the columns above); then ours it lacks.
TABLE1_GROUPS: list[tuple[str, str]] = [("ATLAS validation", "Adult validation"),
                                        ("Children, no fine-tuning", "Child"),
                                        ("Children, fine-tuned", "Child, fine-tuned")]
TABLE1_EXTRA_GROUPS: list[tuple[str, str]] = [("Children, all images", "Child, all images")]
TABLE2_GROUPS: list[tuple[str, str]] = [("Children", "Child")]


def row_label(method: str, train_set: str, encoder_pretrained: object = None, encoder_note: str = "") -> str:
    """``'Res-U-Net (ATLAS full; encoder not pretrained)'``; methods with one condition: their label.

    ``encoder_note`` (recorded by the cell, e.g. ``'encoder pretrained on synthetic tissue segmentation'``)
    is added as it is; without one, ``encoder_pretrained is False`` adds ``'encoder not pretrained'``.
    """
    label = segmenter_labels().get(method, method)
    notes = [TRAIN_SET_LABELS.get(train_set, train_set)] if get_segmenter(method).fine_tunes else []
    if encoder_note:
        notes.append(encoder_note)
    elif encoder_pretrained is False:
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
    groups: list[tuple[str, str]] = field(default_factory=list)
    extra_groups: list[tuple[str, str]] = field(default_factory=list)

    @property
    def caption(self) -> str:
        source = {"synthetic": "SYNTHETIC data: our numbers test the pipeline and are not comparable to the paper's",
                  "rehearsal": "REHEARSAL on synthetic stand-ins laid out as the paper's datasets, with smoke "
                               "schedules: the numbers test the code path only"}.get(self.data_source, "real data")
        return (f"{self.name} — ours ({source}; profile '{self.profile}') with the value published by "
                f"{paper.CITATION_SHORT} in brackets. Mean ± SD over subjects (images and seeds averaged per "
                "subject); n = subjects; undef. = Hausdorff distances undefined (empty prediction), counted "
                "not dropped.")

    def grouped(self, extra: bool = False) -> pd.DataFrame:
        """The paper's layout: columns ``(heading, 'DSC' | 'HD (mm)')`` in the paper's order, one row per
        method (index ``Method``), cells as in :attr:`display`; ``extra=True``: the groups the paper lacks."""
        groups = self.extra_groups if extra else self.groups
        columns = [(heading, label, f"{group} · {label}") for heading, group in groups for label, _, _ in METRICS]
        out = self.display[[c for _, _, c in columns]].copy()
        out.columns = pd.MultiIndex.from_tuples([(h, m) for h, m, _ in columns], names=[None, None])
        return out

    def group_n(self, heading: str) -> str:
        """The subjects behind a column group: ``'n = 14'``, ``'n = 12–14'`` when rows differ, ``''`` if none."""
        group = dict(self.groups + self.extra_groups)[heading]
        ns = sorted({int(v) for v in self.display[f"{group} · n"] if str(v).isdigit()})
        return "" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"


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


def _build(df: pd.DataFrame, name: str, which: int, columns: list[tuple[str, str, bool]],
           groups: list[tuple[str, str]], extra_groups: list[tuple[str, str]]) -> list[ResultTable]:
    tables: list[ResultTable] = []
    for (source, profile), part in df.groupby(["data_source", "profile"], sort=True):
        summary = summarise_conditions(part, [m for _, m, _ in METRICS] + ["hausdorff_penalised_mm"])
        lookup = {(r.method, r.train_set, r.eval_set, bool(r.fine_tuned), r.metric): r
                  for r in summary.itertuples(index=False)}
        out_rows, missing = [], []
        for method, train_set in _rows(part, which):
            rows = part[(part.method == method) & (part.train_set == train_set)]
            notes = sorted({n for n in rows.get("encoder_note", pd.Series(dtype=str)).fillna("") if n})
            out = {"Method": row_label(method, train_set, False if (rows.encoder_pretrained == False).any() else None,  # noqa: E712
                                       " / ".join(notes))}
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
        tables.append(ResultTable(name, str(source), str(profile), table, summary, missing, groups, extra_groups))
    return tables


def table1(df: pd.DataFrame) -> list[ResultTable]:
    """Our Table 1 (with the paper's values), one :class:`ResultTable` per (data_source, profile) in ``df``."""
    return _build(df, "Table 1", 1, TABLE1_COLUMNS, TABLE1_GROUPS, TABLE1_EXTRA_GROUPS)


def table2(df: pd.DataFrame) -> list[ResultTable]:
    """Our Table 2 (networks trained on the child images alone), with the paper's values."""
    return _build(df, "Table 2", 2, TABLE2_COLUMNS, TABLE2_GROUPS, [])


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


# ours, then "[k undef.]", then "(paper x)": the parts of a cell of _cell, one line each in the book
# ("Res-U-Net (ATLAS full; encoder not pretrained)": the name and first note of a row label, then the others)
_LABEL_PARTS = re.compile(r"^(?P<name>[^(]*) \((?P<first>[^;)]*)(?:; (?P<more>.*))?\)$")
_CELL_PARTS = re.compile(r"^(?P<ours>.*?)(?: (?P<undef>\[\d+ undef\.\]))?(?: (?P<paper>\(paper [^)]*\)))?$")
# The layout of render_table's tables, scoped to each table by the Styler's id. Widths: at 0.85em in the
# book's text column (about 760 px at a 1400 px window) method names stay on one line and nothing scrolls.
_PAPER_LAYOUT_CSS = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0"},
    {"selector": "th, td", "props": "padding: 0.2em 0.3em; line-height: 1.25"},
    {"selector": "thead th", "props": "text-align: center; vertical-align: bottom; white-space: nowrap"},
    {"selector": "thead th.col_heading.level0", "props": "border-bottom: 1px solid var(--pst-color-border, #ccc)"},
    {"selector": "thead tr:last-child th", "props": "border-bottom: 2px solid var(--pst-color-border, #ccc)"},
    {"selector": "th.index_name", "props": "text-align: left"},
    {"selector": "th.row_heading", "props": "text-align: left; vertical-align: top; white-space: nowrap; "
                                            "font-weight: normal"},
    {"selector": "td", "props": "text-align: center; vertical-align: top; white-space: nowrap"},
    {"selector": "tbody tr + tr > *", "props": "border-top: 1px solid var(--pst-color-border, #e5e5e5)"},
    {"selector": "th.col_heading.level0", "props": "border-left: 1px solid var(--pst-color-border, #ccc)"},
    {"selector": ".paper, .n, .note", "props": "color: var(--pst-color-text-muted, #6c757d); font-size: 0.9em"},
    {"selector": ".n, .note", "props": "font-weight: normal"},
    # a row label's notes wrap under its name: the name line sets the column's width
    {"selector": "th.row_heading .note", "props": "white-space: normal; display: inline-block; min-width: 100%; "
                                                 "width: 0"},
]


def _cell_html(text: object) -> str:
    """A cell of :attr:`ResultTable.display` on up to three lines: ours, ``[k undef.]``, ``(paper x)``."""
    parts = _CELL_PARTS.match(str(text))
    lines = [html.escape(parts["ours"])]
    if parts["undef"]:
        lines.append(html.escape(parts["undef"]))
    if parts["paper"]:
        lines.append(f'<span class="paper">{html.escape(parts["paper"])}</span>')
    return "<br>".join(lines)


def _label_html(label: object) -> str:
    """A row label on one line (name and training set), further notes on the next (``encoder not pretrained``)."""
    parts = _LABEL_PARTS.match(str(label))
    if parts is None or not parts["more"]:
        return html.escape(str(label))
    notes = html.escape(parts["more"].replace("; ", ", "))
    return f'{html.escape(parts["name"])} ({html.escape(parts["first"])})<br><span class="note">{notes}</span>'


def _render_grouped(table: ResultTable, frame: pd.DataFrame, caption: str, table_id: str | None) -> str:
    headings = list(dict.fromkeys(frame.columns.get_level_values(0)))
    n = {h: table.group_n(h) for h in headings}
    shown = frame.copy()
    shown.index.name = None
    shown.columns.names = [None, "Method"]  # the first column's header, on the row of DSC and HD
    starts = [i for i, (_, metric) in enumerate(frame.columns) if metric == METRICS[0][0]]  # a group's first
    group_rule = {"selector": ", ".join(f"td.col{i}, th.level1.col{i}" for i in starts),
                  "props": "border-left: 1px solid var(--pst-color-border, #ccc)"}
    styler = (shown.style.format(_cell_html)
              .format_index(lambda h: html.escape(h) + (f'<br><span class="n">{n[h]}</span>' if n[h] else ""),
                            axis=1, level=0)
              .format_index(html.escape, axis=1, level=1)
              .format_index(_label_html, axis=0)
              .set_table_attributes('class="lesionlib-table lesionlib-paper-layout"')
              .set_table_styles([*_PAPER_LAYOUT_CSS, group_rule]))
    if table_id:
        styler = styler.set_uuid(table_id)
    # a figure caption wraps at the page's width, a <caption> at the table's (narrow tables: many lines)
    return ('<figure class="lesionlib-table-figure" style="margin: 0 0 1.2em 0; padding: 0">'
            '<figcaption style="text-align: left; margin: 0 0 0.4em 0; padding: 0">'
            f"{html.escape(caption)}</figcaption>\n{styler.to_html()}</figure>\n")


def render_table(table: ResultTable, *, table_id: str | None = None) -> str:
    """A result table as HTML laid out as the paper's: grouped headers (n under each group's name), DSC and
    HD under each group, ours over the paper's value in every cell, method names on one line; the groups the
    paper lacks follow as a second table (its id ``<table_id>-extra``). The long form stays in
    :attr:`ResultTable.display` (the CSV artefact)."""
    out = _render_grouped(table, table.grouped(), table.caption, table_id)
    if table.extra_groups:
        extra = table.grouped(extra=True)
        if any(table.group_n(h) for h in dict.fromkeys(extra.columns.get_level_values(0))):
            caption = (f"{table.name}, continued (not in the paper): the models that never saw a child, on every "
                       f"child image; ours ({table.data_source} data, profile '{table.profile}') with the "
                       "paper's child column (its 40 test images) in brackets. Conventions as above.")
            out += _render_grouped(table, extra, caption, f"{table_id}-extra" if table_id else None)
    return out
