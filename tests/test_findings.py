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


def _with_scratch(gain: float, n: int = 12) -> pd.DataFrame:
    """The Res-U-Net and its ablation on the same subjects, the Res-U-Net ahead by ``gain`` everywhere."""
    rng = np.random.default_rng(1)
    rows = []
    for train_set, fine_tuned, eval_set in (("adult_full", False, "adult_val"), ("adult_full", False, "child_test"),
                                            ("adult_full", True, "child_test"), ("child5", False, "child_test")):
        base = np.clip(0.4 + rng.normal(0, 0.05, n), 0, 1)
        sessions = 1 if eval_set == "adult_val" else 2
        for method, dice in (("resunet", base + gain + rng.normal(0, 0.01, n)), ("resunet_scratch", base)):
            rows += _rows(method, train_set, fine_tuned, eval_set, np.repeat(np.clip(dice, 0, 1), sessions),
                          sessions=sessions)
    df = pd.DataFrame(rows)
    df["encoder_note"] = np.where(df["method"] == "resunet", "narrow encoder pretrained on synthetic tissue "
                                  "segmentation", "narrow encoder not pretrained")
    return df


@pytest.mark.parametrize("gain, status", [(0.1, "holds"), (-0.1, "does not hold"), (0.0, "undecided")])
def test_ablation_is_compared_with_its_method_paired_by_subject(gain, status):
    df = _with_scratch(gain)
    (found,) = findings.ablation_tests(df)
    assert found.key == "resunet_scratch" and found.status == status
    assert len(found.tests) == 4  # adult validation; children: adult-trained, fine-tuned, child-only
    labels = [t.label for t in found.tests]
    assert any(lab.startswith("adult validation") for lab in labels)
    assert any("fine-tuned" in lab for lab in labels) and any("child images only" in lab for lab in labels)
    for t in found.tests:
        assert t.n_pairs == 12 and t.effect == pytest.approx(gain, abs=0.02)  # subjects, not images
        assert "pretrained on synthetic tissue segmentation" in t.note
    assert findings.ablation_tests(df[df["method"] != "resunet_scratch"]) == []  # no ablation ran
    paper = findings.findings_table(findings.all_findings(df))  # the paper's findings ignore the ablation
    assert len(paper) and not paper["comparison"].str.contains("scratch").any()
    assert not paper["note"].str.contains("scratch").any()


def test_paper_rows_leave_out_ablations():
    from lesionlib.reporting.collect import paper_rows

    df = pd.concat([_with_scratch(0.1), _results(0.2, 0.15, 0.2)], ignore_index=True)
    assert set(paper_rows(df)["method"]) == {"unet", "resunet", "nnunet", "lesiongnb"}
