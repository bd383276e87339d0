"""The paper's three qualitative findings, each tested on a profile's own results.

Lhermitte et al. (2024) conclude that (a) models trained on adults score lower on children than on
adults, (b) fine-tuning on five child images improves every model on children and (c) nnU-Net is
the best model on children. Here each becomes a test on the collected ``metrics.csv`` rows of one
profile (:func:`lesionlib.reporting.collect.collect_runs`), with

* an **effect** in Dice, in the direction the paper claims (positive = the paper's direction),
* its **bootstrap 95% CI** (2,000 resamples of *subjects*: a child's two sessions are not
  independent, so children — not images — are resampled, and values are averaged over sessions
  and training seeds per subject first),
* a **paired test** (two-sided Wilcoxon signed-rank),

and a status read from them: **holds** (CI entirely on the paper's side of zero and p < 0.05),
**does not hold** (CI entirely on the other side and p < 0.05) or **undecided** (anything else,
including too few pairs to test). A finding about several models or conditions holds when it holds
for each of them and does not hold when it fails significantly for any. Nothing here knows what the
paper's numbers were; synthetic data may well not show a finding, and the book then says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["ALPHA", "MIN_PAIRS", "PAPER_BEST_METHOD", "Test", "Finding", "subject_values",
           "adults_above_children", "fine_tuning_helps", "best_on_children", "all_findings", "findings_table",
           "render_findings_html", "ablation_tests"]

ALPHA = 0.05
MIN_PAIRS = 5
N_RESAMPLES = 2000
PAPER_BEST_METHOD = "nnunet"
"""The model the paper found best on children (finding c)."""

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"


@dataclass
class Test:
    """One comparison: ``effect`` (Dice, positive = the paper's direction), CI, test and status."""

    label: str
    effect: float
    ci_low: float
    ci_high: float
    n_pairs: int
    p_value: float
    status: str
    note: str = ""


@dataclass
class Finding:
    """A finding of the paper, its tests on our data and the overall status."""

    key: str
    claim: str
    how: str
    tests: list[Test] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.tests:
            return UNDECIDED
        statuses = [t.status for t in self.tests]
        if any(s == FAILS for s in statuses):
            return FAILS
        return HOLDS if all(s == HOLDS for s in statuses) else UNDECIDED

    @property
    def summary(self) -> str:
        counts = {s: sum(t.status == s for t in self.tests) for s in (HOLDS, FAILS, UNDECIDED)}
        return ", ".join(f"{s} for {n} of {len(self.tests)}" for s, n in counts.items() if n)


def _status(ci_low: float, ci_high: float, p: float, n: int) -> str:
    if n < MIN_PAIRS or math.isnan(p):
        return UNDECIDED
    if ci_low > 0 and p < ALPHA:
        return HOLDS
    if ci_high < 0 and p < ALPHA:
        return FAILS
    return UNDECIDED


def _wilcoxon(diff: np.ndarray) -> float:
    diff = np.asarray(diff, dtype=float)
    if len(diff) < MIN_PAIRS or not np.any(diff != 0):
        return math.nan
    return float(sps.wilcoxon(diff, alternative="two-sided").pvalue)


def _bootstrap(statistic: Callable[[np.random.Generator], float], seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng) for _ in range(N_RESAMPLES)])
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def subject_values(df: pd.DataFrame, metric: str = "dice", **where: object) -> pd.Series:
    """``metric`` per subject (mean over sessions and seeds) of the rows matching ``where`` (column=value)."""
    rows = df
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows.groupby("subject")[metric].mean().dropna()


def _paired_test(label: str, diffs: pd.Series, note: str = "", seed: int = 0) -> Test:
    """Effect = mean of per-subject differences; bootstrap over subjects; Wilcoxon on the differences."""
    x = diffs.to_numpy(dtype=float)
    if x.size == 0:
        return Test(label, math.nan, math.nan, math.nan, 0, math.nan, UNDECIDED, note or "no paired subjects")
    low, high = _bootstrap(lambda rng: float(x[rng.integers(0, x.size, x.size)].mean()), seed)
    p = _wilcoxon(x)
    return Test(label, float(x.mean()), low, high, int(x.size), p, _status(low, high, p, x.size), note)


def _networks(df: pd.DataFrame) -> list[str]:
    from lesionlib.segmenters import get_segmenter, segmenter_names

    present = set(df["method"])
    return [m for m in segmenter_names() if m in present and get_segmenter(m).fine_tunes]


def _label(method: str, train_set: str = "", fine_tuned: bool = False) -> str:
    from lesionlib.segmenters import segmenter_labels
    from lesionlib.splits import TRAIN_SET_LABELS

    text = segmenter_labels().get(method, method)
    if train_set:
        text += f" ({TRAIN_SET_LABELS.get(train_set, train_set)}{', fine-tuned' if fine_tuned else ''})"
    return text


def adults_above_children(df: pd.DataFrame) -> Finding:
    """(a) Every adult-trained network scores lower on children (all child images) than on the adult validation set.

    Per network and adult training set: effect = mean adult Dice − mean child Dice over subjects,
    CI by resampling adults and children independently, test = Mann-Whitney U between the two
    cohorts' per-subject values (they are different people, so the comparison is unpaired).
    """
    finding = Finding("a", "Models trained on adults score lower on children than on adults",
                      "adult validation Dice − Dice on all child images, per adult-trained network")
    for method in _networks(df):
        for train_set in sorted(set(df.loc[(df["method"] == method) & ~df["fine_tuned"], "train_set"]) - {"child5"}):
            cond = dict(method=method, train_set=train_set, fine_tuned=False)
            adults = subject_values(df, eval_set="adult_val", **cond).to_numpy()
            children = subject_values(df, eval_set="child_all", **cond).to_numpy()
            label = _label(method, train_set)
            if adults.size < 2 or children.size < 2:
                finding.tests.append(Test(label, math.nan, math.nan, math.nan, 0, math.nan, UNDECIDED,
                                          "too few evaluated subjects"))
                continue

            def resampled(rng: np.random.Generator, a: np.ndarray = adults, c: np.ndarray = children) -> float:
                return float(a[rng.integers(0, a.size, a.size)].mean() - c[rng.integers(0, c.size, c.size)].mean())

            low, high = _bootstrap(resampled)
            p = float(sps.mannwhitneyu(adults, children, alternative="two-sided").pvalue)
            n = min(adults.size, children.size)
            finding.tests.append(Test(label, float(adults.mean() - children.mean()), low, high, n, p,
                                      _status(low, high, p, n), f"{adults.size} adults, {children.size} children"))
    return finding


def fine_tuning_helps(df: pd.DataFrame) -> Finding:
    """(b) Fine-tuning on the few child images raises every adult-trained network's Dice on the child test images."""
    finding = Finding("b", "Fine-tuning on five child images improves every model on children",
                      "child test Dice fine-tuned − not fine-tuned, per network and adult training set, paired by child")
    child = df[df["eval_set"] == "child_test"]
    for method in _networks(df):
        for train_set in sorted(set(child.loc[(child["method"] == method) & child["fine_tuned"], "train_set"])):
            tuned = subject_values(child, method=method, train_set=train_set, fine_tuned=True)
            base = subject_values(child, method=method, train_set=train_set, fine_tuned=False)
            both = tuned.index.intersection(base.index)
            finding.tests.append(_paired_test(_label(method, train_set), tuned[both] - base[both]))
    return finding


def best_on_children(df: pd.DataFrame, best: str = PAPER_BEST_METHOD) -> Finding:
    """(c) ``best`` (nnU-Net) beats every other model on the child test images, in every training condition.

    Per condition (training set, fine-tuned or not) the competitor is the other model with the
    highest mean child Dice (methods that are not fine-tuned, LesionGnb, compete in the adult,
    not fine-tuned conditions); effect = ``best`` − that runner-up, paired by child.
    """
    from lesionlib.segmenters import get_segmenter

    finding = Finding("c", f"{_label(best)} is the best model on children",
                      f"child test Dice of {_label(best)} − the best other model, per training condition, "
                      "paired by child")
    child = df[df["eval_set"] == "child_test"]
    conditions = child.loc[child["method"] == best, ["train_set", "fine_tuned"]].drop_duplicates()
    for train_set, fine_tuned in conditions.itertuples(index=False):
        ours = subject_values(child, method=best, train_set=train_set, fine_tuned=fine_tuned)
        rivals = {}
        for method in sorted(set(child["method"]) - {best}):
            if get_segmenter(method).fine_tunes:
                values = subject_values(child, method=method, train_set=train_set, fine_tuned=fine_tuned)
            elif not fine_tuned and train_set != "child5":
                values = subject_values(child, method=method)
            else:
                continue
            if len(values):
                rivals[method] = values
        label = f"{TRAIN_SET_TEXT.get(train_set, train_set)}{', fine-tuned' if fine_tuned else ''}"
        if not rivals or ours.empty:
            finding.tests.append(Test(label, math.nan, math.nan, math.nan, 0, math.nan, UNDECIDED, "no competitor"))
            continue
        runner_up = max(rivals, key=lambda m: rivals[m].mean())
        both = ours.index.intersection(rivals[runner_up].index)
        finding.tests.append(_paired_test(label, ours[both] - rivals[runner_up][both],
                                          note=f"vs {_label(runner_up)}"))
    return finding


TRAIN_SET_TEXT = {"adult_full": "trained on ATLAS full", "adult_subset": "trained on ATLAS subset",
                  "child5": "trained on child images only"}


def all_findings(df: pd.DataFrame) -> list[Finding]:
    """Findings (a), (b), (c) on one profile's collected rows (one data source; ablations' rows are ignored)."""
    from lesionlib.reporting.collect import paper_rows

    df = paper_rows(df)
    return [adults_above_children(df), fine_tuning_helps(df), best_on_children(df)]


def ablation_tests(df: pd.DataFrame) -> list[Finding]:
    """Each ablation present in ``df`` (e.g. ``resunet_scratch``) against the method it varies (``resunet``).

    One :class:`Finding` per ablation, keyed by its name; effect = Dice of the method − Dice of the ablation,
    paired by subject (the same adults, the same children), for every condition both ran: adult validation
    and child test images per adult training set, fine-tuned or not, and trained on the child images alone.
    The note gives both means and, where the cells recorded one, the method's encoder note.
    """
    from lesionlib.segmenters import ablation_names, get_segmenter

    out = []
    for ablation in [m for m in ablation_names() if m in set(df["method"])]:
        base = get_segmenter(ablation).ablation_of
        finding = Finding(ablation, get_segmenter(ablation).ablation_claim or f"{_label(base)} scores higher than "
                          f"{_label(ablation)}", f"Dice of {_label(base)} − {_label(ablation)}, paired by subject")
        ran = df[df["method"] == ablation]
        notes = sorted({n for n in df.loc[df["method"] == base, "encoder_note"].fillna("") if n}) \
            if "encoder_note" in df.columns else []
        base_text = _label(base) + (f" ({'; '.join(notes)})" if notes else "")
        conditions = ran[["eval_set", "train_set", "fine_tuned"]].drop_duplicates().sort_values(
            ["eval_set", "fine_tuned", "train_set"])
        for eval_set, train_set, fine_tuned in conditions.itertuples(index=False):
            cond = dict(eval_set=eval_set, train_set=train_set, fine_tuned=fine_tuned)
            ours, theirs = subject_values(df, method=base, **cond), subject_values(df, method=ablation, **cond)
            both = ours.index.intersection(theirs.index)
            where = "adult validation" if eval_set == "adult_val" else "child test" if eval_set == "child_test" \
                else "all child images"
            label = f"{where}, {TRAIN_SET_TEXT.get(train_set, train_set)}{', fine-tuned' if fine_tuned else ''}"
            note = (f"{base_text} {ours[both].mean():.3f}, {_label(ablation)} {theirs[both].mean():.3f}"
                    if len(both) else "")
            finding.tests.append(_paired_test(label, ours[both] - theirs[both], note=note))
        out.append(finding)
    return out


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """One row per test: finding, claim, comparison, effect, CI, pairs, p, status (for CSV and HTML)."""
    rows = []
    for f in findings:
        for t in f.tests:
            rows.append({"finding": f.key, "claim": f.claim, "finding_status": f.status, "comparison": t.label,
                         "effect_dice": t.effect, "ci_low": t.ci_low, "ci_high": t.ci_high, "n": t.n_pairs,
                         "p_value": t.p_value, "status": t.status, "note": t.note})
    return pd.DataFrame(rows, columns=["finding", "claim", "finding_status", "comparison", "effect_dice", "ci_low",
                                       "ci_high", "n", "p_value", "status", "note"])


_BADGE = {HOLDS: ("#1b7837", "holds"), FAILS: ("#b2182b", "does not hold"), UNDECIDED: ("#8c8c8c", "undecided")}


def render_findings_html(table: pd.DataFrame, *, data_source: str, profile: str, what: str = "finding") -> str:
    """The findings of :func:`findings_table` as HTML: one block per finding (claim, status, tests).

    ``what='ablation'``: the blocks of :func:`ablation_tests` (effect positive when the method beats its
    ablation, no "(key)" before the claim)."""
    import html

    if table.empty:
        return ("<p>No finding can be tested yet: no finished runs.</p>" if what == "finding" else
                "<p>This profile ran no ablation.</p>")
    direction = "the paper's direction" if what == "finding" else "the method's favour"
    parts = [f'<div class="lesionlib-findings"><p>Tested on <b>{html.escape(data_source)}</b> data, profile '
             f'<code>{html.escape(profile)}</code>. Effect in Dice, positive in {direction}; 95% CI '
             f"by bootstrap over subjects; two-sided tests (α = {ALPHA}).</p>"]
    for key, rows in table.groupby("finding", sort=True):
        first = rows.iloc[0]
        colour, text = _BADGE[first["finding_status"]]
        prefix = f"({html.escape(key)}) " if what == "finding" else ""
        parts.append(f'<h4>{prefix}{html.escape(first["claim"])} — '
                     f'<span style="color:{colour}">{text}</span></h4><table class="lesionlib-table">'
                     "<tr><th>comparison</th><th>effect [95% CI]</th><th>n</th><th>p</th><th>status</th>"
                     "<th>note</th></tr>")
        for r in rows.itertuples(index=False):
            effect = "–" if math.isnan(r.effect_dice) else (
                f"{r.effect_dice:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if not math.isnan(r.ci_low)
                else f"{r.effect_dice:+.3f}")
            p = "–" if math.isnan(r.p_value) else f"{r.p_value:.2g}"
            c, t = _BADGE[r.status]
            parts.append(f"<tr><td>{html.escape(r.comparison)}</td><td>{effect}</td><td>{r.n}</td><td>{p}</td>"
                         f'<td style="color:{c}">{t}</td><td>{html.escape(str(r.note))}</td></tr>')
        parts.append("</table>")
    parts.append("</div>")
    return "\n".join(parts)
