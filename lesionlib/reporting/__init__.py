"""Reporting for the book: collect runs, Tables 1–2 beside the paper's values, statistics,
Figures 1–2, provenance.

============================  ====================================================
``reporting.collect``         all ``results/<profile>/*/metrics.csv`` -> one tidy frame
``reporting.paper``           the paper's published Tables 1 and 2, with the citation
``reporting.tables``          our Tables 1 and 2 with the paper's value beside each cell
``reporting.stats``           subject-level summaries, bootstrap CIs, paired Wilcoxon tests, seed spread
``reporting.findings``        the paper's three findings as tests on a profile's results
``reporting.figures``         Figure 1 (overlays), Figure 2 (Dice vs volume), forest plot, viewer
``reporting.runs``            what the cell notebook shows about its run
``reporting.book``            builds the book (run pages, the report artefacts)
``reporting.provenance``      git commit, package versions, profile, manifest hash
============================  ====================================================
"""

from lesionlib.reporting.collect import collect_runs, run_status
from lesionlib.reporting.provenance import provenance
from lesionlib.reporting.tables import table1, table2

__all__ = ["collect_runs", "run_status", "provenance", "table1", "table2"]
