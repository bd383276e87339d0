"""The fast rehearsal (issue #22 item 7): every kind of paper cell once, on tiny data laid out as the real datasets.

The researcher's path of ``make rehearsal``, shrunk to run in `make test`: a tiny ATLAS v2.0 tree and a tiny child
BIDS dataset *without* session-2 masks, both pointed at by the variables README gives researchers, a random
ResNet-10 in MedicalNet's release layout, and a profile of a researcher's own file that ``extends: paper`` with
one-iteration schedules. Then the data stage (propagation of session-1 masks), nnU-Net's shared preparation, and
one cell of each kind of the paper's grid: nnU-Net on the adult subset (5-fold cross-validation, 5 models
ensembled, TTA) and fine-tuned on five child images (the 5 models fine-tuned, ensembled), the Res-U-Net
(MedicalNet's file) on the five child images alone, the U-Net on all adults (DataLoader workers), LesionGnb.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lesionlib import bids

pytestmark = pytest.mark.slow

OWN_PROFILES = """profiles:
  tiny_rehearsal:
    extends: paper
    device: cpu
    seeds: [0]
    data: {resolution_mm: 3.0, n_adult: 10, n_children: 6}
    methods:
      unet: {epochs_adult: 1, epochs_finetune: 1, epochs_child_only: 1, iterations_per_epoch: 1,
             patch_size: [16, 16, 16], num_workers: 1, model: {channels: [4, 8, 16], strides: [2, 2]},
             augmentation: {enabled: false}}
      resunet: {epochs_adult: 1, epochs_finetune: 1, epochs_child_only: 1, iterations_per_epoch: 1,
                patch_size: [32, 32, 32], num_workers: 1, model: {decoder_channels: [16, 8, 8, 4]},
                augmentation: {enabled: false}}
      nnunet: {epochs_adult: 1, epochs_finetune: 1, epochs_child_only: 1, iterations_per_epoch: 1,
               val_iterations_per_epoch: 1, final_validation: false, num_processes: 1, threads: 1,
               width_divisor: 8}
      lesiongnb: {working_resolution_mm: 3.0}
"""

ADULTS = {f"r00{site}s00{i}": n for site, i, n in
          [(1, 1, 150), (1, 2, 160), (1, 3, 170), (1, 4, 180), (1, 5, 190), (2, 1, 200), (2, 2, 210),
           (2, 3, 40), (2, 4, 220), (2, 5, 230)]}  # 3 mm voxels: 93 voxels = 2.5 mL; one adult below it
CHILDREN = [f"{i:02d}" for i in range(1, 7)]


def _synthetic_description(root: Path, name: str) -> None:
    """Mark a tree as synthetic, as lesionlib.synth does: results on it are a rehearsal, never 'real'."""
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": name, "BIDSVersion": "1.9.0", "DatasetType": "raw", "Synthetic": True}))


def _smooth_head(path: Path) -> None:
    """Replace a tiny image by a smooth, asymmetric 'head' (a registration has something to hold on to)."""
    import nibabel as nib
    import numpy as np

    img = nib.load(path)
    grid = np.indices(img.shape).astype(np.float32)
    centre = (np.asarray(img.shape, np.float32) - 1) / 2
    r2 = sum(((g - c) / (0.35 * n)) ** 2 for g, c, n in zip(grid, centre, img.shape))
    spot = sum(((g - c - 0.2 * n) / (0.15 * n)) ** 2 for g, c, n in zip(grid, centre, img.shape))
    data = (np.exp(-r2) + 0.6 * np.exp(-spot) + 0.05).astype(np.float32)
    nib.save(nib.Nifti1Image(data, img.affine), path)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The tiny rehearsal run once; returns its roots and the outputs of each stage."""
    from lesionlib.cells import evaluate_cell, open_cell, train_cell
    from lesionlib.experiments import run_prepare, run_report
    from lesionlib.rehearsal import write_medicalnet_release

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("rehearsal")
    atlas, child = tmp / "ATLAS_2", tmp / "child_bids"
    # conftest's tree factories are function-scoped: build the trees here with the same helpers
    from conftest import build_atlas_tree, build_child_tree

    build_atlas_tree(atlas, ADULTS, shape=(16, 16, 16))
    build_child_tree(child, {(s, ses): 60 + 10 * i for i, s in enumerate(CHILDREN) for ses in ("1", "2")},
                     shape=(14, 16, 12))
    for s in CHILDREN:  # the paper's cohort has session-1 masks only
        shutil.rmtree(child / "derivatives" / bids.CHILD_MASK_DERIVATIVE / f"sub-{s}" / "ses-2")
        # tiny noise images cannot be registered to each other: both sessions get one smooth, asymmetric head
        for session in ("1", "2"):
            _smooth_head(bids.child_t1w_path(child, s, session))
    _synthetic_description(atlas, "tiny ATLAS stand-in")
    _synthetic_description(child, "tiny child stand-in")
    weights = write_medicalnet_release(tmp / "MedicalNet" / "pretrain" / "resnet_10.pth")
    own = tmp / "my_profiles.yaml"
    own.write_text(OWN_PROFILES)
    results = tmp / "results"
    for key, value in {"ATLAS_V2_ROOT": atlas, "CHILD_BIDS_ROOT": child, "MEDICALNET_RESNET10": weights,
                       "LESIONLIB_PROFILES": own, "LESIONLIB_RESULTS": results,
                       "LESIONLIB_DATA": tmp / "data"}.items():
        mp.setenv(key, str(value))
    out = {"tmp": tmp, "results": results, "atlas": atlas, "child": child, "cells": {}, "seconds": {}}
    try:
        start = time.perf_counter()
        out["data"] = run_report("data", "tiny_rehearsal", results_root=results, timeout_s=600)
        out["seconds"]["data"] = time.perf_counter() - start
        run_prepare("tiny_rehearsal", "nnunet", results_root=results)
        out["seconds"]["prepare_nnunet"] = time.perf_counter() - start - out["seconds"]["data"]
        for run_id in ("nnunet_adult-subset_seed0", "nnunet_adult-subset_ft-child5_seed0", "resunet_child5_seed0",
                       "unet_adult-full_seed0", "lesiongnb_adult-full_seed0"):
            run_dir = results / "tiny_rehearsal" / run_id
            cell_start = time.perf_counter()
            cell = open_cell("tiny_rehearsal", run_id, run_dir, results_root=results)
            fit = train_cell(cell)
            out["cells"][run_id] = {"dir": run_dir, "fit": fit, "metrics": evaluate_cell(cell, fit)}
            out["seconds"][run_id] = time.perf_counter() - cell_start
        print("fast rehearsal, seconds per stage:", {k: round(v, 1) for k, v in out["seconds"].items()})
        yield out
    finally:
        mp.undo()


def test_the_rehearsal_reads_the_real_datasets_and_is_labelled_rehearsal(rehearsal):
    from lesionlib.profile import load_profile

    for run in rehearsal["cells"].values():
        params = yaml.safe_load((run["dir"] / "params.yaml").read_text())
        assert params["data_source"] == "rehearsal"
        assert set(run["metrics"]["data_source"]) == {"rehearsal"}
        datasets = {Path(rel).parts[1] for rel in run["metrics"]["pred_path"]}  # predictions/<dataset>/...
        assert datasets <= {"atlas_v2", "child_cohort"} and datasets
    assert load_profile("tiny_rehearsal").data_source == "rehearsal"


def test_validate_profile_checks_the_datasets_the_profile_reads(rehearsal, caplog):
    import logging

    from lesionlib.cli import main

    with caplog.at_level(logging.INFO):
        assert main(["validate", "--profile", "tiny_rehearsal", "--no-progress"]) == 0
    assert "profile tiny_rehearsal reads atlas_v2 and child_cohort: checking both" in caplog.text
    assert f"child_cohort: {len(CHILDREN)} later-session images checked without their masks" in caplog.text
    assert "all 22 records of atlas_v2, child_cohort are valid" in caplog.text


def test_session2_masks_are_propagated_and_scored_against(rehearsal):
    from lesionlib.splits import session2_root

    root = session2_root("tiny_rehearsal", rehearsal["results"])
    for s in CHILDREN:
        assert bids.prediction_path(root, s, "2", desc="propagated").is_file()
    records = pd.read_csv(rehearsal["results"] / "tiny_rehearsal" / "_report" / "records_child.csv")
    assert records["lesion_volume_ml"].notna().all() and len(records) == 2 * len(CHILDREN)
    child_rows = rehearsal["cells"]["unet_adult-full_seed0"]["metrics"].query("eval_set == 'child_all'")
    assert set(child_rows["session"].astype(str)) == {"1", "2"}


def test_nnunet_cross_validates_five_folds_fine_tunes_each_and_ensembles(rehearsal):
    adult = rehearsal["cells"]["nnunet_adult-subset_seed0"]
    ft = rehearsal["cells"]["nnunet_adult-subset_ft-child5_seed0"]
    for run in (adult, ft):
        folds = sorted(p.name for p in (run["dir"] / "model").rglob("fold_*") if (p / "checkpoint_final.pth").is_file())
        assert len(folds) == 5, folds  # five models (fold indices are numbered per training set)
    details = yaml.safe_load((ft["dir"] / "params.yaml").read_text())
    assert details["resolved"]["models"] == 5 and details["resolved"]["test_time_augmentation"] is True
    assert set(ft["metrics"]["eval_set"]) == {"child_test"}
    split = yaml.safe_load((adult["dir"] / "split.yaml").read_text())
    assert "sub-r002s003_ses-1" not in split["subset_train"] + split["subset_val"]  # 40 voxels = 1.1 mL: excluded


def test_resunet_loads_medicalnets_release_file_and_unet_uses_workers(rehearsal):
    res = rehearsal["cells"]["resunet_child5_seed0"]
    assert res["fit"].encoder_pretrained is True
    params = yaml.safe_load((res["dir"] / "params.yaml").read_text())
    assert params["encoder_pretrained"] is True
    unet = rehearsal["cells"]["unet_adult-full_seed0"]
    assert unet["fit"].details["cache"]["cache"] == "memory" if isinstance(unet["fit"].details.get("cache"), dict) \
        else unet["fit"].details.get("cache") is not None
    assert set(unet["metrics"]["eval_set"]) >= {"adult_val", "child_all"}
    gnb = rehearsal["cells"]["lesiongnb_adult-full_seed0"]["metrics"]
    assert {"adult_val", "child_all"} <= set(gnb["eval_set"])


def test_every_prediction_is_a_bids_derivative_the_validator_accepts(rehearsal, tmp_path):
    from test_bids_derivatives import VALIDATOR_CONFIG, bids_validator, run_validator

    roots = sorted({p.parent for run in rehearsal["cells"].values()
                    for p in (run["dir"] / "predictions").rglob("dataset_description.json")})
    assert {r.name for r in roots} == {"atlas_v2", "child_cohort"}, roots
    for root in roots:
        assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    exe = bids_validator()
    if exe is None:
        pytest.skip("bids-validator not installed: run scripts/bids_validator.sh")
    config = tmp_path / "bids-validator-config.json"
    config.write_text(json.dumps(VALIDATOR_CONFIG))
    for root in roots:
        report = run_validator(exe, root, config)
        assert report["issues"]["errors"] == [], (root, json.dumps(report["issues"]["errors"], indent=1)[:3000])
