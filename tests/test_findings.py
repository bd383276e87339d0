"""The paper's three findings as tests: they hold on results built to show them, and do not hold on
results built to contradict them (nothing in the code knows which outcome is expected)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionlib.reporting import findings
from lesionlib.reporting.collect import METRIC_COLUMNS

NETWORKS = ("unet", "resunet", "nnunet")


def _rows(method, train_set, fine_tuned, eval_set, dice, *, sessions=1, seed=0):
    out = []
    for i, d in enumerate(dice):
        subject = f"{'a' if eval_set == 'adult_val' else 'c'}{i // sessions:02d}"
        row = {m: 0.5 for m in METRIC_COLUMNS}
        row.update(case_id=f"sub-{subject}_ses-{i % sessions + 1}", subject=subject, session=str(i % sessions + 1),
                   eval_set=eval_set, method=method, train_set=train_set, fine_tuned=fine_tuned, seed=seed,
                   profile="quick", data_source="synthetic", lesion_volume_ml=5.0, encoder_pretrained=None, dice=d)
        out.append(row)
    return out


def _results(adult_minus_child: float, ft_gain: float, nnunet_lead: float, n: int = 12) -> pd.DataFrame:
    """Per-subject Dice with noise, built so that each finding's effect has the given sign and size."""
    rng = np.random.default_rng(0)
    rows = []
    for k, method in enumerate(NETWORKS):
        lead = nnunet_lead if method == "nnunet" else -0.02 * k
        for train_set in ("adult_full", "adult_subset"):
            child = np.clip(0.45 + lead + rng.normal(0, 0.03, n), 0, 1)
            rows += _rows(method, train_set, False, "adult_val", np.clip(child[:8] + adult_minus_child, 0, 1))
            rows += _rows(method, train_set, False, "child_test", np.repeat(child, 2), sessions=2)
            rows += _rows(method, train_set, False, "child_all", np.repeat(child, 2), sessions=2)
            tuned = np.clip(child + ft_gain + rng.normal(0, 0.01, n), 0, 1)
            rows += _rows(method, train_set, True, "child_test", np.repeat(tuned, 2), sessions=2)
        rows += _rows(method, "child5", False, "child_test",
                      np.repeat(np.clip(0.4 + lead + rng.normal(0, 0.03, n), 0, 1), 2), sessions=2)
    rows += _rows("lesiongnb", "adult_full", False, "child_test", np.repeat(np.full(n, 0.2), 2), sessions=2)
    return pd.DataFrame(rows)


def test_findings_hold_where_the_results_show_them():
    out = findings.all_findings(_results(adult_minus_child=0.2, ft_gain=0.15, nnunet_lead=0.2))
    assert [f.status for f in out] == ["holds", "holds", "holds"]
    a, b, c = out
    assert len(a.tests) == 6 and len(b.tests) == 6 and len(c.tests) == 5
    for test in b.tests:
        assert test.effect == pytest.approx(0.15, abs=0.02) and test.ci_low > 0 and test.p_value < 0.05
        assert test.n_pairs == 12  # children, not their 24 images


def test_findings_do_not_hold_where_the_results_contradict_them():
    out = findings.all_findings(_results(adult_minus_child=-0.2, ft_gain=-0.15, nnunet_lead=-0.2))
    assert [f.status for f in out] == ["does not hold", "does not hold", "does not hold"]
    assert all(t.ci_high < 0 for f in out for t in f.tests)


def test_findings_are_undecided_without_an_effect_or_enough_subjects():
    out = findings.all_findings(_results(adult_minus_child=0.0, ft_gain=0.0, nnunet_lead=0.0))
    assert out[1].status == "undecided"  # no gain from fine-tuning: neither shown nor contradicted
    few = findings.all_findings(_results(adult_minus_child=0.2, ft_gain=0.15, nnunet_lead=0.2, n=3))
    assert few[1].status == "undecided" and all(t.n_pairs == 3 for t in few[1].tests)


def test_findings_table_and_html_carry_every_test():
    out = findings.all_findings(_results(adult_minus_child=0.2, ft_gain=0.15, nnunet_lead=0.2))
    table = findings.findings_table(out)
    assert len(table) == 17 and set(table["finding"]) == {"a", "b", "c"}
    html = findings.render_findings_html(table, data_source="synthetic", profile="quick")
    assert html.count("<h4>") == 3 and "holds" in html and "synthetic" in html
