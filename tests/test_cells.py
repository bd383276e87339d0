"""One grid cell through lesionlib.cells and the cell notebook: train, fine-tune, evaluate, on tiny cohorts."""

from __future__ import annotations

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


def test_cell_notebook_by_hand_with_papermill(tiny_profile, tmp_path):
    """The README's recipe: jupytext to .ipynb, then papermill with other parameters."""
    bin_dir = Path(sys.executable).parent
    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "cell.py"
    converted = tmp_path / "cell.ipynb"
    subprocess.run([str(bin_dir / "jupytext"), "--to", "ipynb", str(notebook), "-o", str(converted)], check=True,
                   capture_output=True)
    out_dir = tmp_path / "by_hand"
    proc = subprocess.run([str(bin_dir / "papermill"), str(converted), str(tmp_path / "out.ipynb"),
                           "-p", "profile", "tiny", "-p", "run_id", "unet_child5_seed0", "-p", "out_dir", str(out_dir),
                           "-y", "overrides: {epochs_child_only: 2}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out_dir / "metrics.csv").is_file()
    history = pd.read_csv(out_dir / "model" / "history.csv")
    assert len(history) == 2  # the override took effect
