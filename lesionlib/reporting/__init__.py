"""Reporting for the book: collect runs, Tables 1–2 beside the paper's values, statistics,
Figures 1–2, provenance.

============================  ====================================================
``reporting.collect``         all ``results/<profile>/*/metrics.csv`` -> one tidy frame
``reporting.paper``           the paper's published Tables 1 and 2, with the citation
``reporting.tables``          our Tables 1 and 2 (mean ± SD, n, undefined HD counted)
``reporting.stats``           bootstrap CIs, paired Wilcoxon tests, spread across seeds
``reporting.figures``         Figure 1 (overlays), Figure 2 (Dice vs volume), viewer
``reporting.provenance``      git commit, package versions, profile, manifest hash
============================  ====================================================
"""

from lesionlib.reporting.collect import collect_runs, run_status
from lesionlib.reporting.provenance import provenance
from lesionlib.reporting.tables import table1, table2

__all__ = ["collect_runs", "run_status", "provenance", "table1", "table2"]
