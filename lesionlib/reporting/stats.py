"""Statistics the paper does not report: subject-level summaries with undefined distances counted,
bootstrap 95% confidence intervals, paired Wilcoxon tests between methods on the same subjects,
and the spread of results across training seeds.

Input everywhere is the tidy DataFrame of :func:`lesionlib.reporting.collect.collect_runs`
(one row per run x image x evaluation set). A *condition* is one cell of a table:
``(method, train_set, eval_set, fine_tuned)``; a condition may hold several seeds. The unit of
every summary and test is the **subject**: a child's two sessions are not independent, so values
are averaged over a subject's images and the training seeds before anything is resampled or paired.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = [
    "CONDITION",
    "Summary",
    "bootstrap_ci",
    "subject_means",
    "paired_wilcoxon",
    "seed_spread",
    "summarise",
    "summarise_conditions",
]

CONDITION: tuple[str, ...] = ("method", "train_set", "eval_set", "fine_tuned")
"""Columns that identify one table cell (seeds are pooled inside it)."""


@dataclass(frozen=True)
class Summary:
    """Summary of one metric over cases.

    ``mean``/``sd`` (sample SD, ddof=1) and the bootstrap CI use only the defined values;
    ``n`` counts all cases, ``n_undefined`` those whose value is NaN (e.g. a Hausdorff distance
    with an empty prediction), which are reported, never silently dropped.
    """

    mean: float
    sd: float
    n: int
    n_undefined: int
    ci_low: float
    ci_high: float

    def format(self, digits: int = 2) -> str:
        """``'0.45 ± 0.12'``; ``'–'`` when no value is defined; ``' (k undef.)'`` appended when some are NaN."""
        if self.n == 0 or self.n == self.n_undefined:
            text = "–"
        elif math.isnan(self.sd):
            text = f"{self.mean:.{digits}f}"
        else:
            text = f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"
        if self.n_undefined:
            text += f" ({self.n_undefined} undef.)"
        return text


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (``scipy.stats.bootstrap``).

    NaNs are ignored. Returns ``(nan, nan)`` with fewer than two defined values, and
    ``(v, v)`` when all values are equal (no spread to resample).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = sps.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarise(values: Sequence[float], *, bootstrap: bool = True, seed: int = 0) -> Summary:
    """Mean ± SD over cases with undefined values counted; optional bootstrap 95% CI."""
    x = np.asarray(values, dtype=float)
    defined = x[~np.isnan(x)]
    n_undefined = int(x.size - defined.size)
    mean = float(defined.mean()) if defined.size else math.nan
    sd = float(defined.std(ddof=1)) if defined.size > 1 else math.nan
    low, high = bootstrap_ci(defined, seed=seed) if bootstrap else (math.nan, math.nan)
    return Summary(mean, sd, int(x.size), n_undefined, low, high)


UNIT = "subject"
"""Column whose values are the independent units of summaries and tests."""


def subject_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per (condition, subject): the mean of ``metric`` over the subject's images and the
    seeds (NaN only when every value is NaN).

    Returns columns ``*CONDITION, subject, <metric>, n_seeds``.
    """
    keys = [*CONDITION, UNIT]
    if df.empty:
        return pd.DataFrame(columns=[*keys, metric, "n_seeds"])
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[metric].mean().rename(metric).to_frame()  # pandas' mean skips NaN
    out["n_seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def summarise_conditions(df: pd.DataFrame, metrics: Sequence[str] = ("dice", "hausdorff_mm"), *,
                         bootstrap: bool = True) -> pd.DataFrame:
    """Summary of each metric in each condition, over subjects (images and seeds averaged per subject first).

    Returns one row per (condition, metric) with ``mean, sd, n, n_undefined, ci_low, ci_high,
    n_seeds, seed_sd`` where ``seed_sd`` is the SD across seeds of the per-seed mean (NaN with
    one seed). ``n_undefined`` counts NaN values over all seeds' rows (each undefined distance
    of each run counts once).
    """
    rows = []
    for metric in metrics:
        per_case = subject_means(df, metric)
        spread = seed_spread(df, metric)
        for cond, group in per_case.groupby(list(CONDITION), dropna=False, sort=True):
            raw = df
            for col, val in zip(CONDITION, cond):
                raw = raw[raw[col] == val]
            s = summarise(group[metric].to_numpy(), bootstrap=bootstrap)
            sp = spread
            for col, val in zip(CONDITION, cond):
                sp = sp[sp[col] == val]
            rows.append({
                **dict(zip(CONDITION, cond)), "metric": metric, "mean": s.mean, "sd": s.sd,
                "n": s.n, "n_undefined": int(raw[metric].isna().sum()), "n_rows": len(raw),
                "ci_low": s.ci_low, "ci_high": s.ci_high,
                "n_seeds": int(raw["seed"].nunique()),
                "seed_sd": float(sp["seed_sd"].iloc[0]) if len(sp) else math.nan,
            })
    return pd.DataFrame(rows, columns=[*CONDITION, "metric", "mean", "sd", "n", "n_undefined", "n_rows",
                                       "ci_low", "ci_high", "n_seeds", "seed_sd"])


def seed_spread(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Spread across training seeds of the per-seed mean over cases.

    Returns one row per condition: ``n_seeds, seed_mean, seed_sd (ddof=1, NaN with one seed),
    seed_min, seed_max``.
    """
    cols = [*CONDITION, "n_seeds", "seed_mean", "seed_sd", "seed_min", "seed_max"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    per_seed = df.groupby([*CONDITION, "seed"], dropna=False)[metric].mean().reset_index()
    g = per_seed.groupby(list(CONDITION), dropna=False)[metric]
    out = pd.DataFrame({
        "n_seeds": g.count(), "seed_mean": g.mean(), "seed_sd": g.std(ddof=1),
        "seed_min": g.min(), "seed_max": g.max(),
    }).reset_index()
    return out[cols]


def paired_wilcoxon(df: pd.DataFrame, metric: str = "dice", *,
                    by: Sequence[str] = ("train_set", "eval_set", "fine_tuned"),
                    methods: Sequence[str] | None = None, reference: str | None = "baseline") -> pd.DataFrame:
    """Two-sided paired Wilcoxon signed-rank tests between methods on the same subjects.

    Within each group of ``by`` (e.g. trained on the adult subset, child test, not fine-tuned),
    every pair of methods is compared on the subjects both evaluated with a defined value
    (per-subject means over images and seeds). The ``reference`` method (default: the registered
    method that is not fine-tuned, LesionGnb, which has a single training condition) is added to
    every group of the same ``eval_set`` so each model is also tested against the baseline.
    Benjamini–Hochberg q-values are computed over all tests returned.

    Returns columns ``*by, method_a, method_b, metric, n_pairs, median_diff`` (a − b),
    ``statistic, p_value, q_value``; tests with fewer than 5 pairs or all-zero differences get NaN
    p-values (no test is possible), and are kept so the table says so.
    """
    if reference == "baseline":
        from lesionlib.segmenters import get_segmenter, segmenter_names

        baselines = [m for m in segmenter_names() if not get_segmenter(m).fine_tunes]
        reference = baselines[0] if baselines else None
    per_case = subject_means(df, metric)
    ref_rows = per_case[per_case["method"] == reference] if reference else per_case.iloc[:0]
    if reference:
        per_case = per_case[per_case["method"] != reference]
        if per_case.empty:  # only the reference: compare it with nothing, but keep its own groups
            per_case = ref_rows
            ref_rows = ref_rows.iloc[:0]
    rows = []
    for key, group in per_case.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if len(ref_rows) and "eval_set" in by:
            eval_set = dict(zip(by, key))["eval_set"]
            group = pd.concat([group, ref_rows[ref_rows["eval_set"] == eval_set]], ignore_index=True)
        wide = group.pivot_table(index=UNIT, columns="method", values=metric, aggfunc="first")
        names = [m for m in (methods or sorted(wide.columns)) if m in wide.columns]
        for a, b in itertools.combinations(names, 2):
            pair = wide[[a, b]].dropna()
            diff = (pair[a] - pair[b]).to_numpy()
            stat = p = math.nan
            if len(diff) >= 5 and np.any(diff != 0):
                res = sps.wilcoxon(pair[a], pair[b], alternative="two-sided")
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({**dict(zip(by, key)), "method_a": a, "method_b": b, "metric": metric,
                         "n_pairs": len(diff), "median_diff": float(np.median(diff)) if len(diff) else math.nan,
                         "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows, columns=[*by, "method_a", "method_b", "metric", "n_pairs", "median_diff",
                                      "statistic", "p_value"])
    out["q_value"] = math.nan
    ok = out["p_value"].notna()
    if ok.any():
        out.loc[ok, "q_value"] = sps.false_discovery_control(out.loc[ok, "p_value"].to_numpy(), method="bh")
    return out
