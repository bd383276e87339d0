"""One grid cell through lesionlib.cells and the cell notebook: train, fine-tune, evaluate, on tiny cohorts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from lesionlib import bids
from lesionlib.cells import evaluate_cell, open_cell, train_cell
from lesionlib.profile import ProfileError

TINY = """profiles:
  tiny:
    device: cpu
    seeds: [0]
    data: {resolution_mm: 3.0, n_adult: 5, n_children: 3}
    splits: {few_shot_n: 1, adult_val_fraction: 0.25}
    grid: {methods: [unet]}
    methods:
      unet:
        model: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
        patch_size: [16, 16, 16]
        epochs_adult: 1
        epochs_finetune: 1
        epochs_child_only: 1
        iterations_per_epoch: 2
        augmentation: {enabled: false}
        inference_overlap: 0.25
"""


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch, isolated_roots, make_atlas_tree, make_child_tree):
    """A profile 'tiny' whose synthetic cohorts are tiny trees under $LESIONLIB_DATA."""
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(TINY)
    monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(experiments))
    base = isolated_roots["data"] / "synthetic" / "tiny"
    make_atlas_tree(base / "adult", lesion_voxels={f"r001s00{i}": 20 + 5 * i for i in range(1, 6)},
                    shape=(16, 16, 16))
    make_child_tree(base / "child", lesion_voxels={(s, ses): 30 for s in ("01", "02", "03") for ses in ("1", "2")},
                    shape=(14, 16, 12))
    return isolated_roots


def test_unet_cell_trains_fine_tunes_and_scores_each_evaluation_set(tiny_profile, tmp_path):
    root = tiny_profile["results"]
    adult_dir = root / "tiny" / "unet_adult-full_seed0"
    adult = open_cell("tiny", "unet_adult-full_seed0", adult_dir, results_root=root)
    fit = train_cell(adult)
    assert fit.encoder_pretrained is None and (adult_dir / "model" / "checkpoint_best.pt").is_file()
    metrics = evaluate_cell(adult, fit)
    # adults trained on adults: validation adults, the child test set and every child image
    assert metrics.groupby("eval_set").size().to_dict() == {"adult_val": 1, "child_test": 4, "child_all": 6}
    params = yaml.safe_load((adult_dir / "params.yaml").read_text())
    assert params["resolved"]["epochs"] == 1 and params["data_source"] == "synthetic"
    split = yaml.safe_load((adult_dir / "split.yaml").read_text())
    assert len(split["adult_train"]) == 4 and len(split["few_shot"]["train"]) == 1

    ft_dir = root / "tiny" / "unet_adult-full_ft-child1_seed0"
    ft = open_cell("tiny", "unet_adult-full_ft-child1_seed0", ft_dir, results_root=root)
    assert ft.parent_model_dir == adult_dir / "model"
    ft_metrics = evaluate_cell(ft, train_cell(ft))
    on_disk = pd.read_csv(ft_dir / "metrics.csv")
    assert set(on_disk["eval_set"]) == {"child_test"} and len(on_disk) == 4
    assert set(on_disk["case_id"]) == set(metrics.loc[metrics["eval_set"] == "child_test", "case_id"])
    assert (ft_metrics["fine_tuned"]).all()
    # masks on each child image's own grid (LPS, anisotropic)
    for rel, subject, session in zip(on_disk["pred_path"], on_disk["subject"], on_disk["session"]):
        pred = nib.load(ft_dir / rel)
        source = nib.load(bids.child_t1w_path(tiny_profile["data"] / "synthetic" / "tiny" / "child",
                                              f"{int(subject):02d}", str(session)))
        assert pred.shape == source.shape
        np.testing.assert_allclose(pred.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_overrides_change_one_cell_and_unknown_keys_are_errors(tiny_profile, tmp_path):
    cell = open_cell("tiny", "unet_child5_seed0", tmp_path / "c", overrides={"epochs_child_only": 3})
    assert cell.segmenter.plan(cell.spec.stage, 1)["epochs"] == 3
    with pytest.raises(Exception, match="epochs_chld"):
        open_cell("tiny", "unet_child5_seed0", tmp_path / "c", overrides={"epochs_chld": 3})
    with pytest.raises(KeyError, match="unknown run id"):
        open_cell("tiny", "unet_child9_seed0", tmp_path / "c")
    with pytest.raises(ProfileError):
        open_cell("nope", "unet_child5_seed0", tmp_path / "c")


def _papermill(notebook: str, tmp_path: Path, *args: str, cwd: Path | None = None) -> Path:
    """README's recipe: jupytext to .ipynb, then papermill with parameters; returns the executed notebook."""
    bin_dir = Path(sys.executable).parent
    source = Path(__file__).resolve().parent.parent / "notebooks" / f"{notebook}.py"
    converted = tmp_path / f"{notebook}.ipynb"
    subprocess.run([str(bin_dir / "jupytext"), "--to", "ipynb", str(source), "-o", str(converted)], check=True,
                   capture_output=True)
    executed = tmp_path / f"{notebook}.out.ipynb"
    proc = subprocess.run([str(bin_dir / "papermill"), str(converted), str(executed), *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return executed


def test_cell_notebook_by_hand_writes_under_interactive_and_explore_reads_it(tiny_profile, tmp_path):
    """The cell notebook run by hand (papermill, no out_dir) writes a fresh results/<profile>/interactive/ folder,
    nothing where it runs, and the grid does not take it for a finished cell; explore.py then shows its
    prediction, metrics and lesion-size figure, without training."""
    import nbformat

    from lesionlib.experiments import expand_grid
    from lesionlib.reporting.collect import collect_runs, run_status

    root = tiny_profile["results"]
    cwd = tmp_path / "cwd"  # where the notebook runs (JupyterLab: notebooks/): nothing may land there
    cwd.mkdir()
    _papermill("cell", tmp_path, "-p", "profile", "tiny", "-p", "run_id", "unet_child5_seed0",
               "-y", "overrides: {epochs_child_only: 2}", cwd=cwd)
    assert list(cwd.iterdir()) == []
    runs = list((root / "tiny" / "interactive").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"unet_child5_seed0-\d{8}T\d{6}Z", runs[0].name), runs
    out_dir = runs[0]
    assert (out_dir / "metrics.csv").is_file()
    assert len(pd.read_csv(out_dir / "model" / "history.csv")) == 2  # the override took effect
    params = yaml.safe_load((out_dir / "params.yaml").read_text())
    assert params["overrides"] == {"epochs_child_only": 2} and params["resolved"]["epochs"] == 2
    # its run page's command is the one just run
    from lesionlib.reporting.rerun import rerun_commands

    assert rerun_commands(out_dir)["papermill"].endswith(
        "-p profile tiny -p run_id unet_child5_seed0 -y 'overrides: {epochs_child_only: 2}'")
    # not a grid cell: the grid's own folder is untouched, the run index and the tables do not see it
    assert not (root / "tiny" / "unet_child5_seed0").exists()
    expected = [r.run_id for r in expand_grid("tiny")]
    assert {s.run_id for s in run_status(root, "tiny", expected)} == set(expected)
    assert {s.status for s in run_status(root, "tiny", expected)} == {"missing"}
    assert collect_runs(root, "tiny").empty

    executed = _papermill("explore", tmp_path, "-p", "profile", "tiny", "-p", "run_dir", str(out_dir))
    nb = nbformat.read(str(executed), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    text = "".join(o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
                   for o in outputs)
    child_test = pd.read_csv(out_dir / "metrics.csv").query("eval_set == 'child_test'")
    largest = child_test.sort_values(["lesion_volume_ml", "case_id"], ascending=[False, True]).iloc[0]
    assert f"image** `{largest.case_id}` of `child_test`" in text  # the default image: the largest lesion
    assert "brainsprite" in html.lower()  # nilearn's viewer of the prediction over the image
    assert "hausdorff95_mm" in html and f"{largest.dice:.3f}".rstrip("0") in html  # its metrics
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the lesion-size figure
    assert not (root / "tiny" / "interactive" / "explore").exists() and len(list(cwd.iterdir())) == 0


def test_an_empty_evaluation_set_adds_no_rows_and_keeps_the_columns_typed(tiny_profile, monkeypatch):
    """E.g. the subset rule leaving no validation image: metrics.csv must still say fine_tuned False, seed 0."""
    root = tiny_profile["results"]
    cell = open_cell("tiny", "unet_adult-full_seed0", root / "tiny" / "unet_adult-full_seed0", results_root=root)
    fit = train_cell(cell)
    sets = cell.splits.evaluation(cell.spec.train_set, cell.spec.fine_tuned)
    assert sets["adult_val"] and len(sets) > 1
    monkeypatch.setattr(cell.splits, "evaluation", lambda *args, **kwargs: {**sets, "adult_val": []})
    metrics = evaluate_cell(cell, fit)
    assert "adult_val" not in set(metrics.eval_set) and len(metrics) > 0
    written = pd.read_csv(cell.out_dir / "metrics.csv", dtype=str)
    assert set(written.fine_tuned) == {"False"} and set(written.seed) == {"0"}
