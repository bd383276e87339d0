"""The published values of Lhermitte et al. (ISBI 2024), Tables 1 and 2, as data.

These numbers are quoted from the paper for comparison only. They were obtained on real
ATLAS v2.0 images and on the paper's private paediatric cohort; results computed by this
project on synthetic cohorts are *not* a reproduction of them and are always shown apart.

Conventions: ``dice`` is the Dice similarity coefficient (DSC, 0..1); ``hausdorff_mm`` is the
Hausdorff distance in millimetres (HD). Each row is one cell of a published table, in the same
tidy vocabulary as the project's ``metrics.csv`` files (``method``, ``train_set``,
``eval_set``, ``fine_tuned``). LesionGnb has one row per evaluation set; it is filed under
``train_set='adult_full'``, the single training condition of the baseline in this project's grid
(the paper used the toolbox's own model and quotes its adult values from Ito et al. 2019). The
paper's child column is its test set of 40 images (``child_test`` here).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["CITATION", "LESIONGNB_ADULT_SOURCE", "paper_results", "paper_table1", "paper_table2"]

CITATION = (
    "Lhermitte E, et al. Validating stroke lesion segmentation methods using MRI in children: "
    "transferability of deep learning models. IEEE International Symposium on Biomedical "
    "Imaging (ISBI), 2024."
)
"""Reference of the paper whose Tables 1 and 2 are quoted here."""

CITATION_SHORT = "Lhermitte et al., ISBI 2024"

LESIONGNB_ADULT_SOURCE = (
    "Ito KL, Kim H, Liew S-L. A comparison of automated lesion segmentation approaches for "
    "chronic stroke T1-weighted MRI data. Human Brain Mapping 40(16), 2019."
)
"""The paper quotes LesionGnb's adult DSC/HD from this benchmark rather than running it."""

# (method, train_set, eval_set, fine_tuned, dice, hausdorff_mm)
_TABLE1: list[tuple[str, str, str, bool, float, float]] = [
    ("lesiongnb", "adult_full", "adult_val", False, 0.42, 58.19),
    ("lesiongnb", "adult_full", "child_test", False, 0.34, 63.52),
    ("unet", "adult_full", "adult_val", False, 0.45, 75.10),
    ("unet", "adult_full", "child_test", False, 0.43, 96.88),
    ("unet", "adult_full", "child_test", True, 0.63, 85.80),
    ("resunet", "adult_full", "adult_val", False, 0.44, 100.47),
    ("resunet", "adult_full", "child_test", False, 0.40, 90.24),
    ("resunet", "adult_full", "child_test", True, 0.67, 26.75),
    ("nnunet", "adult_full", "adult_val", False, 0.61, 43.17),
    ("nnunet", "adult_full", "child_test", False, 0.49, 63.18),
    ("nnunet", "adult_full", "child_test", True, 0.73, 27.17),
    ("unet", "adult_subset", "adult_val", False, 0.54, 40.04),
    ("unet", "adult_subset", "child_test", False, 0.40, 107.22),
    ("unet", "adult_subset", "child_test", True, 0.70, 46.62),
    ("resunet", "adult_subset", "adult_val", False, 0.68, 62.18),
    ("resunet", "adult_subset", "child_test", False, 0.48, 65.09),
    ("resunet", "adult_subset", "child_test", True, 0.63, 26.15),
    ("nnunet", "adult_subset", "adult_val", False, 0.79, 27.41),
    ("nnunet", "adult_subset", "child_test", False, 0.57, 37.95),
    ("nnunet", "adult_subset", "child_test", True, 0.71, 30.23),
]

_TABLE2: list[tuple[str, str, str, bool, float, float]] = [
    ("unet", "child5", "child_test", False, 0.42, 44.97),
    ("resunet", "child5", "child_test", False, 0.50, 84.00),
    ("nnunet", "child5", "child_test", False, 0.70, 25.5),
]

_COLUMNS = ["method", "train_set", "eval_set", "fine_tuned", "dice", "hausdorff_mm"]
_QUOTED = {("lesiongnb", "adult_val"): f"{CITATION_SHORT}, quoting Ito et al. 2019"}
"""Published cells the paper quotes from elsewhere, and from where."""


def paper_results() -> pd.DataFrame:
    """All published cells of Tables 1 and 2, tidy: one row per (method, train_set, eval_set, fine_tuned).

    Columns: ``table`` (1 or 2), ``method``, ``train_set``, ``eval_set``, ``fine_tuned``, ``dice``,
    ``hausdorff_mm``, ``source`` (the citation of the number).
    """
    rows = [(1, *r) for r in _TABLE1] + [(2, *r) for r in _TABLE2]
    df = pd.DataFrame(rows, columns=["table", *_COLUMNS])
    df["source"] = [_QUOTED.get((m, e), CITATION_SHORT) for m, e in zip(df["method"], df["eval_set"])]
    return df


def paper_table1() -> pd.DataFrame:
    """Published Table 1 (tidy rows of :func:`paper_results` with ``table == 1``)."""
    df = paper_results()
    return df[df["table"] == 1].drop(columns="table").reset_index(drop=True)


def paper_table2() -> pd.DataFrame:
    """Published Table 2 (models trained on 5 child images), tidy."""
    df = paper_results()
    return df[df["table"] == 2].drop(columns="table").reset_index(drop=True)
