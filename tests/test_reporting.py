"""Reporting: collection and contract validation, Tables 1-2, statistics, provenance, paper values."""

from __future__ import annotations

import hashlib
import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lesionlib.io import DataValidationError
from lesionlib.reporting import paper, stats, tables
from lesionlib.reporting.collect import CONTRACT_COLUMNS, METRIC_COLUMNS, collect_runs, run_status
from lesionlib.reporting.provenance import provenance, provenance_html


def _rows(method: str, train_set: str, fine_tuned: bool, seed: int, eval_set: str, dice: list[float],
          hd: list[float], profile: str = "quick", source: str = "synthetic", sessions: int = 1,
          encoder_pretrained: object = "") -> list[dict]:
    """One row per image: ``dice[i]`` is image i, i.e. subject ``i // sessions + 1``, session ``i % sessions + 1``."""
    out = []
    for i, (d, h) in enumerate(zip(dice, hd)):
        subject, session = f"{i // sessions + 1:02d}", str(i % sessions + 1)
        row = {"case_id": f"sub-{subject}_ses-{session}", "subject": subject, "session": session,
               "eval_set": eval_set, "method": method, "train_set": train_set, "fine_tuned": fine_tuned,
               "seed": seed, "profile": profile, "data_source": source, "lesion_volume_ml": 1.0 + i,
               "encoder_pretrained": encoder_pretrained}
        row.update({m: 0.5 for m in METRIC_COLUMNS})
        row.update(dice=d, hausdorff_mm=h)
        out.append(row)
    return out


def _write_run(root, run_id, rows, profile="quick"):
    run_dir = root / profile / run_id
    run_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "params.yaml").write_text(f"run_id: {run_id}\nepochs: 3\n")
    return run_dir


# ---------------------------------------------------------------- paper values
def test_paper_values_are_the_published_ones():
    t1, t2 = paper.paper_table1(), paper.paper_table2()
    assert len(t1) == 20 and len(t2) == 3
    cell = t1[(t1.method == "nnunet") & (t1.train_set == "adult_subset") & (t1.eval_set == "adult_val")]
    assert cell[["dice", "hausdorff_mm"]].values.tolist() == [[0.79, 27.41]]
    ft = t1[(t1.method == "resunet") & (t1.train_set == "adult_full") & t1.fine_tuned]
    assert ft[["dice", "hausdorff_mm"]].values.tolist() == [[0.67, 26.75]]
    assert t2.set_index("method").loc["nnunet", "hausdorff_mm"] == 25.5
    assert "Lhermitte" in paper.CITATION and "ISBI" in paper.CITATION


# ---------------------------------------------------------------- collection
def test_collect_reads_runs_validates_and_skips_non_runs(tmp_path):
    _write_run(tmp_path, "unet_adult-full_seed0", _rows("unet", "adult_full", False, 0, "child_test",
                                                         [0.5, 0.7], [10.0, float("nan")]))
    _write_run(tmp_path, "lesiongnb_adult-full_seed0", _rows("lesiongnb", "adult_full", False, 0, "child_test",
                                                              [0.2, 0.3], [50.0, 60.0]))
    # not runs: staging / report folders, and a failed attempt inside a run folder
    (tmp_path / "quick" / "_report").mkdir()
    pd.DataFrame(_rows("unet", "child5", False, 0, "child_test", [0.9], [1.0])).to_csv(
        tmp_path / "quick" / "_report" / "metrics.csv", index=False)
    df = collect_runs(tmp_path, "quick")
    assert sorted(df["run_id"].unique()) == ["lesiongnb_adult-full_seed0", "unet_adult-full_seed0"]
    assert len(df) == 4
    assert set(CONTRACT_COLUMNS) <= set(df.columns)
    assert df["encoder_pretrained"].isna().all()  # empty: methods without a pretrained encoder
    assert df["subject"].tolist()[0] == "01"  # leading zeros kept
    assert df["fine_tuned"].dtype == bool
    assert df["hausdorff_mm"].isna().sum() == 1  # undefined kept, not dropped
    assert (df["param_epochs"] == 3).all()


def test_collect_names_the_file_when_contract_is_broken(tmp_path):
    rows = _rows("unet", "adult_full", False, 0, "child_test", [0.5], [1.0])
    for r in rows:
        del r["data_source"]
    run_dir = _write_run(tmp_path, "bad", rows)
    with pytest.raises(DataValidationError, match="data_source") as err:
        collect_runs(tmp_path, "quick")
    assert err.value.path == run_dir / "metrics.csv"


def test_collect_rejects_unknown_method_and_wrong_profile(tmp_path):
    _write_run(tmp_path, "r1", _rows("segformer", "adult_full", False, 0, "child_test", [0.5], [1.0]))
    with pytest.raises(DataValidationError, match="unknown values"):
        collect_runs(tmp_path, "quick")
    _write_run(tmp_path, "r2", _rows("unet", "adult_full", False, 0, "child_test", [0.5], [1.0], profile="gpu"),
               profile="other")
    with pytest.raises(DataValidationError, match="profile"):
        collect_runs(tmp_path, "other")


def test_collect_empty_profile_has_contract_columns(tmp_path):
    df = collect_runs(tmp_path, "quick")
    assert df.empty and set(CONTRACT_COLUMNS) <= set(df.columns)
    assert tables.table1(df) == []


def test_run_status_distinguishes_finished_failed_missing(tmp_path):
    _write_run(tmp_path, "done", _rows("unet", "adult_full", False, 0, "child_test", [0.5], [1.0]))
    failed = tmp_path / "quick" / "broken" / "FAILED-train-20260101T000000Z"
    failed.mkdir(parents=True)
    (failed / "train.FAILED.ipynb").write_text("{}")
    status = {s.run_id: s.status for s in run_status(tmp_path, "quick", ["done", "broken", "never"])}
    assert status == {"done": "finished", "broken": "failed", "never": "missing"}


# ---------------------------------------------------------------- statistics
def test_summarise_counts_undefined_and_matches_numpy():
    values = [0.2, 0.4, float("nan"), 0.9]
    s = stats.summarise(values)
    assert s.n == 4 and s.n_undefined == 1
    assert s.mean == pytest.approx(np.mean([0.2, 0.4, 0.9]))
    assert s.sd == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert s.ci_low <= s.mean <= s.ci_high
    assert s.format() == f"{s.mean:.2f} ± {s.sd:.2f} (1 undef.)"
    assert stats.summarise([float("nan")]).format() == "– (1 undef.)"


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.1, 10)
    large = rng.normal(0.5, 0.1, 400)
    lo_s, hi_s = stats.bootstrap_ci(small)
    lo_l, hi_l = stats.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.3]))


def test_paired_wilcoxon_matches_scipy_on_shared_cases():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.3, 0.9, 12)
    b = a - rng.uniform(0.01, 0.2, 12)
    rows = (_rows("unet", "adult_full", False, 0, "child_test", list(a), [1.0] * 12)
            + _rows("nnunet", "adult_full", False, 0, "child_test", list(b), [1.0] * 12))
    rows[0]["dice"] = float("nan")  # an undefined pair is dropped from the test, not imputed
    df = pd.DataFrame(rows)
    out = stats.paired_wilcoxon(df, "dice")
    assert len(out) == 1
    r = out.iloc[0]
    assert {r.method_a, r.method_b} == {"unet", "nnunet"} and r.n_pairs == 11
    ref = sps.wilcoxon(a[1:], b[1:]) if r.method_a == "unet" else sps.wilcoxon(b[1:], a[1:])
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.q_value == pytest.approx(r.p_value)  # a single test: BH leaves it unchanged


def test_seed_spread_and_subject_means_average_seeds_and_sessions():
    rows = (_rows("unet", "child5", False, 0, "child_test", [0.2, 0.4], [1.0, 2.0])
            + _rows("unet", "child5", False, 1, "child_test", [0.6, 0.8], [3.0, float("nan")]))
    df = pd.DataFrame(rows)
    spread = stats.seed_spread(df, "dice").iloc[0]
    assert spread.n_seeds == 2
    assert spread.seed_mean == pytest.approx(0.5)
    assert spread.seed_sd == pytest.approx(np.std([0.3, 0.7], ddof=1))
    per_subject = stats.subject_means(df, "hausdorff_mm").set_index("subject")["hausdorff_mm"]
    assert per_subject["01"] == pytest.approx(2.0)
    assert per_subject["02"] == pytest.approx(2.0)  # NaN of one seed does not poison the mean
    # two sessions of one child are one unit: four images, two subjects
    two = pd.DataFrame(_rows("unet", "child5", False, 0, "child_test", [0.2, 0.4, 0.6, 0.8], [1.0] * 4, sessions=2))
    summary = stats.summarise_conditions(two, ["dice"])
    assert summary["n"].tolist() == [2] and summary["mean"].tolist() == [pytest.approx(0.5)]


# ---------------------------------------------------------------- tables
def test_table1_cells_labels_and_missing():
    rows = (_rows("unet", "adult_full", False, 0, "adult_val", [0.4, 0.6], [10.0, 20.0])
            + _rows("unet", "adult_full", False, 0, "child_test", [0.2, 0.4, 0.6], [5.0, float("nan"), 7.0])
            + _rows("lesiongnb", "adult_full", False, 0, "child_test", [0.1, 0.3], [40.0, 60.0])
            + _rows("resunet", "adult_full", False, 0, "adult_val", [0.3, 0.5], [9.0, 9.0], encoder_pretrained=False))
    df = pd.DataFrame(rows)
    [t] = tables.table1(df)
    assert t.data_source == "synthetic" and t.profile == "quick"
    assert "SYNTHETIC" in t.caption and "quick" in t.caption
    d = t.display
    assert d.loc["U-Net (ATLAS full)", "Adult validation · DSC"] == \
        f"0.50 ± {np.std([0.4, 0.6], ddof=1):.2f} (paper 0.45)"
    assert d.loc["U-Net (ATLAS full)", "Child · HD (mm)"] == \
        f"6.0 ± {np.std([5.0, 7.0], ddof=1):.1f} [1 undef.] (paper 96.9)"
    assert d.loc["U-Net (ATLAS full)", "Child · n"] == "3"
    assert d.loc["U-Net (ATLAS full)", "Child, fine-tuned · DSC"] == "not run (paper 0.63)"
    assert d.loc["LesionGnb", "Child, fine-tuned · DSC"] == "n/a"
    assert d.loc["LesionGnb", "Child · DSC"].endswith("(paper 0.34)")
    assert "U-Net (ATLAS full) — Child, fine-tuned" in t.missing
    assert "LesionGnb — Adult validation" in t.missing
    # a Res-U-Net trained without a pretrained encoder says so in its row label
    assert list(d.index) == ["LesionGnb", "U-Net (ATLAS full)", "Res-U-Net (ATLAS full; encoder not pretrained)",
                             "nnU-Net (ATLAS full)", "U-Net (ATLAS subset)", "Res-U-Net (ATLAS subset)",
                             "nnU-Net (ATLAS subset)"]


def test_tables_keep_data_sources_apart():
    rows = (_rows("unet", "child5", False, 0, "child_test", [0.2, 0.4], [1.0, 2.0], source="synthetic")
            + _rows("unet", "child5", False, 0, "child_test", [0.8, 0.9], [1.0, 2.0], source="real"))
    df = pd.DataFrame(rows)
    t2 = tables.table2(df)
    assert [t.data_source for t in t2] == ["real", "synthetic"]
    real = t2[0].display.loc["U-Net (child images)", "Child · DSC"]
    assert real.startswith("0.85")
    assert "real data" in t2[0].caption and "SYNTHETIC" not in t2[0].caption
    html = tables.render_html(t2[1].display, t2[1].caption)
    assert "<table" in html and "SYNTHETIC" in html


class _TableParser(HTMLParser):
    """The tables of an HTML fragment: per table, header rows and body rows of ``(tag, colspan, text)``
    (text lines joined by ``|`` where the cell breaks them with ``<br>``), and figure captions."""

    def __init__(self):
        super().__init__()
        self.tables, self.captions, self._cell, self._in_caption, self._part = [], [], None, False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"thead": [], "tbody": []})
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr":
            self.tables[-1][self._part].append([])
        elif tag in ("th", "td"):
            self._cell = [tag, int(dict(attrs).get("colspan") or 1), ""]
        elif tag == "br" and self._cell is not None:
            self._cell[2] += "|"
        elif tag == "figcaption":
            self._in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.tables[-1][self._part][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data.strip()
        elif self._in_caption:
            self.captions[-1] += data


def test_table1_is_laid_out_as_the_papers():
    rows = (_rows("unet", "adult_full", False, 0, "adult_val", [0.4, 0.6], [10.0, 20.0])
            + _rows("unet", "adult_full", False, 0, "child_test", [0.2, 0.4, 0.6], [5.0, float("nan"), 7.0])
            + _rows("unet", "adult_full", True, 0, "child_test", [0.5, 0.7], [4.0, 6.0])
            + _rows("unet", "adult_full", False, 0, "child_all", [0.2, 0.4, 0.6, 0.8], [5.0] * 4)
            + _rows("lesiongnb", "adult_full", False, 0, "child_test", [0.1, 0.3], [40.0, 60.0])
            + _rows("resunet", "adult_full", False, 0, "adult_val", [0.3, 0.5], [9.0, 9.0], encoder_pretrained=False))
    [t] = tables.table1(pd.DataFrame(rows))
    paper_groups = ["ATLAS validation", "Children, no fine-tuning", "Children, fine-tuned"]
    # the DataFrame: the paper's three groups in its order, DSC and HD under each, one row per method
    g = t.grouped()
    assert list(g.columns) == [(group, metric) for group in paper_groups for metric in ("DSC", "HD (mm)")]
    assert list(g.index) == list(t.display.index) and g.index.name == "Method"
    assert g.loc["U-Net (ATLAS full)", ("Children, fine-tuned", "DSC")] == t.display.loc[
        "U-Net (ATLAS full)", "Child, fine-tuned · DSC"]
    assert list(t.grouped(extra=True).columns) == [("Children, all images", "DSC"), ("Children, all images", "HD (mm)")]
    # the HTML: grouped header (n under each group's name: a range where rows differ), DSC and HD, a row per method
    parsed = _TableParser()
    parsed.feed(tables.render_table(t, table_id="table1"))
    main, extra = parsed.tables
    top, sub = main["thead"]
    assert [(c[1], c[2]) for c in top[1:]] == [(2, "ATLAS validation|n = 2"), (2, "Children, no fine-tuning|n = 2–3"),
                                                (2, "Children, fine-tuned|n = 2")]
    assert [c[2] for c in sub] == ["Method"] + ["DSC", "HD (mm)"] * 3
    labels = [r[0][2] for r in main["tbody"]]
    assert labels == ["LesionGnb", "U-Net (ATLAS full)", "Res-U-Net (ATLAS full)|encoder not pretrained",
                      "nnU-Net (ATLAS full)", "U-Net (ATLAS subset)", "Res-U-Net (ATLAS subset)",
                      "nnU-Net (ATLAS subset)"]  # the method on one line, a further note on the next
    assert all(len(r) == 7 and r[0][0] == "th" and {c[0] for c in r[1:]} == {"td"} for r in main["tbody"])
    unet = [c[2] for c in main["tbody"][labels.index("U-Net (ATLAS full)")][1:]]
    assert unet[0] == f"0.50 ± {np.std([0.4, 0.6], ddof=1):.2f}|(paper 0.45)"  # ours over the paper's, one cell
    assert unet[3] == f"6.0 ± {np.std([5.0, 7.0], ddof=1):.1f}|[1 undef.]|(paper 96.9)"
    assert main["tbody"][labels.index("LesionGnb")][5][2] == "n/a"  # LesionGnb is not fine-tuned
    assert parsed.captions[0] == t.caption and "SYNTHETIC" in parsed.captions[0]
    # the column the paper lacks: a second table, named as such, with its own data source
    assert [(c[1], c[2]) for c in extra["thead"][0][1:]] == [(2, "Children, all images|n = 4")]
    assert "not in the paper" in parsed.captions[1] and "synthetic" in parsed.captions[1]
    # without runs on every child image, no second table
    [t_no_all] = tables.table1(pd.DataFrame([r for r in rows if r["eval_set"] != "child_all"]))
    parsed = _TableParser()
    parsed.feed(tables.render_table(t_no_all))
    assert len(parsed.tables) == 1


def test_table2_is_laid_out_as_the_papers():
    rows = _rows("nnunet", "child5", False, 0, "child_test", [0.6, 0.8], [20.0, 30.0])
    [t] = tables.table2(pd.DataFrame(rows))
    assert list(t.grouped().columns) == [("Children", "DSC"), ("Children", "HD (mm)")]
    assert t.grouped(extra=True).empty
    parsed = _TableParser()
    parsed.feed(tables.render_table(t, table_id="table2"))
    [table] = parsed.tables
    assert [(c[1], c[2]) for c in table["thead"][0][1:]] == [(2, "Children|n = 2")]
    body = {r[0][2]: [c[2] for c in r[1:]] for r in table["tbody"]}
    assert body["nnU-Net (child images)"][0] == f"0.70 ± {np.std([0.6, 0.8], ddof=1):.2f}|(paper 0.70)"
    assert body["U-Net (child images)"] == ["not run|(paper 0.42)", "not run|(paper 45.0)"]


# ---------------------------------------------------------------- provenance
def test_provenance_has_commit_versions_and_manifest_hash(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_bytes(b"version: 1\n")
    prov = provenance("quick", data_source="synthetic", manifest=manifest)
    assert prov["manifest"]["sha256"] == hashlib.sha256(b"version: 1\n").hexdigest()
    assert len(prov["git"]["commit"]) == 40 or prov["git"]["commit"] == "unknown"
    assert prov["packages"]["pandas"] == pd.__version__
    html = provenance_html(prov)
    assert "quick" in html and prov["manifest"]["sha256"] in html
    assert provenance("quick", manifest=tmp_path / "absent.yaml")["manifest"]["sha256"] == "absent"


def test_paired_wilcoxon_compares_each_model_with_the_baseline():
    rng = np.random.default_rng(3)
    gnb = rng.uniform(0.1, 0.4, 10)
    unet = gnb + rng.uniform(0.05, 0.3, 10)
    rows = (_rows("lesiongnb", "adult_full", False, 0, "child_test", list(gnb), [1.0] * 10)
            + _rows("unet", "adult_full", False, 0, "child_test", list(unet), [1.0] * 10)
            + _rows("unet", "adult_full", True, 0, "child_test", list(unet + 0.1), [1.0] * 10))
    out = stats.paired_wilcoxon(pd.DataFrame(rows), "dice")
    assert len(out) == 2  # U-Net (no FT) vs LesionGnb, U-Net (FT) vs LesionGnb (the baseline, found in the registry)
    assert set(out["fine_tuned"]) == {False, True}
    for r in out.itertuples():
        assert {r.method_a, r.method_b} == {"lesiongnb", "unet"} and r.n_pairs == 10
    ref = sps.wilcoxon(gnb, unet)
    row = out[~out["fine_tuned"].astype(bool)].iloc[0]
    assert row.p_value == pytest.approx(ref.pvalue)


def test_tables_report_compares_an_ablation_and_keeps_it_out_of_the_papers_tables(tmp_path):
    from lesionlib.reporting.report import write_tables_report

    rng = np.random.default_rng(0)
    child = list(rng.uniform(0.3, 0.6, 12))
    for method, shift in (("resunet", 0.1), ("resunet_scratch", 0.0), ("unet", 0.05)):
        for seed in (0,):
            dice = [min(1.0, d + shift) for d in child]
            _write_run(tmp_path, f"{method}_adult-full_seed{seed}",
                       _rows(method, "adult_full", False, seed, "child_test", dice, [10.0] * 12, sessions=2))
    out = tmp_path / "report"
    report = write_tables_report("quick", tmp_path, out)
    ablations = pd.read_csv(out / "ablations.csv")
    assert set(ablations["finding"]) == {"resunet_scratch"} and len(ablations) == 1
    row = ablations.iloc[0]
    assert row["effect_dice"] == pytest.approx(0.1, abs=1e-9) and row["n"] == 6  # 6 children, 12 images
    assert "Res-U-Net, encoder from scratch" in (out / "ablations.html").read_text()
    assert any("U-Net" in html for html in report.tables_html)
    assert not any("from scratch" in html for html in report.tables_html)  # Table 1 has the paper's methods
    for name in ("summary_by_condition.csv", "paired_wilcoxon.csv", "table1.csv"):
        assert "resunet_scratch" not in (out / name).read_text() and "from scratch" not in (out / name).read_text()
    assert "from scratch" not in (out / "findings.html").read_text()
