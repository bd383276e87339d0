"""The experiment grid, the Snakemake dry run per profile, and the notebook runner's atomicity."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lesionlib import config
from lesionlib.experiments import expand_grid, grid_by_id, run_id_for
from lesionlib.notebook_runner import StageFailed, py_to_ipynb, run_notebook

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _expected_counts(profile: str) -> dict[str, int]:
    seeds = len(config.load_profile(profile)["seeds"])
    networks = (3 * 2 + 3 * 2 + 3) * seeds  # adult x {full, subset}, fine-tuned, child-only
    return {"train": networks, "evaluate": networks, "lesiongnb": 1, "data": 1, "report": 1, "book": 1}


@pytest.mark.parametrize("profile", ["quick", "gpu", "paper"])
def test_grid_is_the_papers(profile):
    runs = expand_grid(profile)
    seeds = config.load_profile(profile)["seeds"]
    nets = [r for r in runs if r.method != "lesiongnb"]
    assert len(nets) == 15 * len(seeds)
    assert len({r.run_id for r in runs}) == len(runs)
    for seed in seeds:
        cells = {(r.method, r.train_set, r.fine_tuned) for r in nets if r.seed == seed}
        assert cells == ({(m, t, ft) for m in ("unet", "resunet", "nnunet") for t in ("adult_full", "adult_subset")
                          for ft in (False, True)} | {(m, "child5", False) for m in ("unet", "resunet", "nnunet")})
    gnb = [r for r in runs if r.method == "lesiongnb"]
    assert len(gnb) == 1 and gnb[0].train_set == "" and gnb[0].stages == ("lesiongnb",)
    by_id = {r.run_id: r for r in runs}
    order = [r.run_id for r in runs]
    for r in runs:
        if r.fine_tuned:
            parent = by_id[r.parent]
            assert (parent.method, parent.train_set, parent.seed, parent.fine_tuned) == \
                   (r.method, r.train_set, r.seed, False)
            assert order.index(r.parent) < order.index(r.run_id)
        else:
            assert r.parent is None


def test_run_ids_are_stable_and_readable():
    assert run_id_for("resunet", "adult_subset", True, 1) == "resunet_adult-subset_ft-child5_seed1"
    assert run_id_for("lesiongnb", "", False, 0) == "lesiongnb_seed0"
    assert [r.run_id for r in expand_grid("quick")] == [r.run_id for r in expand_grid("quick")]


def test_parameters_follow_the_profile(tmp_path):
    prof = config.load_profile("quick")
    grid = grid_by_id("quick")
    ft = grid["unet_adult-full_ft-child5_seed0"]
    p = ft.notebook_parameters("train", tmp_path / "stage", results_root=tmp_path)
    assert p["epochs"] == prof["epochs_finetune"] and p["fine_tuned"] is True
    assert p["init_from"] == str((tmp_path / "quick" / "unet_adult-full_seed0").resolve())
    assert p["run_dir"] == str((tmp_path / "quick" / ft.run_id).resolve())
    assert p["data_source"] == "synthetic" and p["patch_size"] == prof["patch_size"]
    assert grid["unet_child5_seed0"].params()["epochs"] == prof["epochs_child_only"]
    assert grid["nnunet_adult-full_seed0"].params()["epochs"] == prof["nnunet_epochs"]
    assert grid["nnunet_adult-full_seed0"].params()["iterations_per_epoch"] == prof["nnunet_iterations"]
    yaml.safe_dump(p)  # plain YAML types only (papermill parameters, params.yaml)
    with pytest.raises(ValueError, match="unknown stage"):
        ft.notebook_parameters("lesiongnb", tmp_path)


def test_profile_can_select_real_data_and_trim_the_grid():
    settings = {"name": "custom", "seeds": [3], "adult_dataset": "atlas_v2", "child_dataset": "child_cohort",
                "grid": {"methods": ["unet"], "fine_tune": False, "lesiongnb": False}}
    runs = expand_grid(settings)
    assert [r.run_id for r in runs] == ["unet_adult-full_seed3", "unet_adult-subset_seed3", "unet_child5_seed3"]
    assert runs[0].params()["data_source"] == "real"
    with pytest.raises(ValueError, match="unknown methods"):
        expand_grid({**settings, "grid": {"methods": ["vit"]}})


def _job_stats(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.mark.parametrize("profile", ["quick", "gpu", "paper"])
def test_snakemake_dry_run_lists_the_grid(profile, tmp_path):
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--config", f"profile={profile}", f"results={tmp_path}"],
                          cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = _job_stats(proc.stdout)
    expected = _expected_counts(profile)
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)
    assert counts["total"] == sum(expected.values()) + 1  # + rule all


def test_snakemake_skips_finished_runs_and_waits_for_parents(tmp_path):
    """A finished run (its executed notebooks and metrics present) is not re-run; its fine-tuning child is."""
    grid = grid_by_id("quick")
    report = tmp_path / "quick" / "_report"
    report.mkdir(parents=True)
    (report / "data.ipynb").write_text("{}")
    for run_id in ("unet_adult-full_seed0",):
        d = tmp_path / "quick" / run_id
        d.mkdir()
        for name in ("train.ipynb", "evaluate.ipynb", "metrics.csv"):
            (d / name).write_text("x")
    proc = subprocess.run([str(SNAKEMAKE), "-n", "runs", "--config", "profile=quick", f"results={tmp_path}"],
                          cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = _job_stats(proc.stdout)
    n_net = sum(1 for r in grid.values() if r.method != "lesiongnb")
    assert counts["train"] == n_net - 1 and counts["evaluate"] == n_net - 1
    assert "data" not in counts
    assert "unet_adult-full_ft-child5_seed0/train.ipynb" in proc.stdout


# ---------------------------------------------------------------- notebook runner
NOTEBOOK = '''# %% [markdown]
# # A stage

# %% tags=["parameters"]
out_dir = "."
fail = False

# %%
from pathlib import Path
Path(out_dir, "metrics.csv").write_text("case_id\\nsub-01_ses-1\\n")
Path(out_dir, "predictions").mkdir()
Path(out_dir, "predictions", "p.txt").write_text("p")

# %%
if fail:
    raise RuntimeError("asked to fail")
'''


@pytest.fixture()
def stage_notebook(tmp_path) -> Path:
    path = tmp_path / "stage.py"
    path.write_text(NOTEBOOK)
    return path


def test_py_to_ipynb_keeps_parameters_tag(stage_notebook, tmp_path):
    import nbformat

    out = py_to_ipynb(stage_notebook, tmp_path / "x.ipynb")
    nb = nbformat.read(str(out), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "fail = False" in tagged[0].source
    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="parameters"):
        py_to_ipynb(bad, tmp_path / "bad.ipynb")


def test_runner_success_moves_outputs_and_records_params(stage_notebook, tmp_path):
    run_dir = tmp_path / "run"
    out = run_notebook(stage_notebook, run_dir, stage="train", parameters=lambda d: {"out_dir": str(d)},
                       run_params={"run_id": "r", "seed": 0})
    assert out == run_dir / "train.ipynb" and out.is_file()
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "predictions" / "p.txt").is_file()
    assert not list(run_dir.glob(".partial-*")) and not list(run_dir.glob(".*.ipynb"))
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["run_id"] == "r" and "train" in params["stages"]
    # a second stage adds to the same folder (replacing same-named outputs) and to params.yaml
    run_notebook(stage_notebook, run_dir, stage="evaluate", parameters=lambda d: {"out_dir": str(d)},
                 run_params={"run_id": "r", "seed": 0})
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert set(params["stages"]) == {"train", "evaluate"} and (run_dir / "evaluate.ipynb").is_file()


def test_runner_failure_leaves_nothing_that_looks_finished(stage_notebook, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(StageFailed) as err:
        run_notebook(stage_notebook, run_dir, stage="evaluate",
                     parameters=lambda d: {"out_dir": str(d), "fail": True})
    assert not (run_dir / "evaluate.ipynb").exists()
    assert not (run_dir / "metrics.csv").exists()  # written by an early cell, but the stage failed
    assert not (run_dir / "params.yaml").exists()
    [failed] = list(run_dir.glob("FAILED-evaluate-*"))
    assert err.value.failed_dir == failed
    partial = (failed / "evaluate.FAILED.ipynb").read_text()
    assert "asked to fail" in partial  # the partial notebook shows the error
    assert "asked to fail" in (failed / "error.txt").read_text()


# ---------------------------------------------------------------- what a cell trains and is evaluated on
def _cohorts():
    from types import SimpleNamespace

    from lesionlib.experiments import Cohorts

    few = SimpleNamespace(train=["c1", "c2"], test=["c3", "c4"], to_dict=lambda: {"train": ["c1", "c2"]})
    return Cohorts(adult=[], child=[], adult_train=["a1", "a2", "a3"], adult_val=["v1", "v2"],
                   subset_train=["a2"], subset_val=["v2"], subset_report={}, few_shot=few)


def test_training_and_evaluation_sets_per_cell():
    from lesionlib.experiments import evaluation_records, training_records

    c = _cohorts()
    assert training_records(c, "adult_full", False) == (["a1", "a2", "a3"], ["v1", "v2"])
    assert training_records(c, "adult_subset", False) == (["a2"], ["v2"])
    assert training_records(c, "adult_subset", True) == (["c1", "c2"], [])
    assert training_records(c, "child5", False) == (["c1", "c2"], [])
    assert training_records(c, "", False) == (["a1", "a2", "a3"], [])
    assert evaluation_records(c, "adult_full", False) == {"adult_val": ["v1", "v2"], "child_test": ["c3", "c4"]}
    assert evaluation_records(c, "adult_subset", False) == {"adult_val": ["v2"], "child_test": ["c3", "c4"]}
    # fine-tuned and child-only models: only the child test set, the same one as the other cells
    assert evaluation_records(c, "adult_full", True) == {"child_test": ["c3", "c4"]}
    assert evaluation_records(c, "child5", False) == {"child_test": ["c3", "c4"]}
    with pytest.raises(ValueError):
        training_records(c, "everything", False)


def test_metrics_table_meets_the_collect_contract(tmp_path):
    """Rows written by metrics_table are read back by the book's collector without loss."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from lesionlib.data.records import ImageRecord
    from lesionlib.experiments import metrics_table
    from lesionlib.reporting.collect import collect_runs

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[4:8, 4:8, 4:8] = 1
    pred = np.zeros_like(gt)
    pred[4:8, 4:8, 5:8] = 1
    run_dir = tmp_path / "results" / "quick" / "unet_child5_seed0"
    records, preds = [], []
    for subject, p in (("01", pred), ("02", np.zeros_like(gt))):
        image = tmp_path / f"sub-{subject}_T1w.nii.gz"
        mask = tmp_path / f"sub-{subject}_mask.nii.gz"
        nib.save(nib.Nifti1Image(gt.astype(np.float32), affine), image)
        nib.save(nib.Nifti1Image(gt, affine), mask)
        out = run_dir / "predictions" / f"sub-{subject}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(p, affine), out)
        records.append(ImageRecord("synthetic_child", subject, "1", image, mask, domain="child",
                                   lesion_volume_ml=0.512))
        preds.append(out)
    params = {"method": "unet", "train_set": "child5", "fine_tuned": False, "seed": 0, "profile": "quick",
              "data_source": "synthetic"}
    table = metrics_table(records, preds, eval_set="child_test", params=params, relative_to=run_dir)
    assert table["pred_path"].tolist() == ["predictions/sub-01.nii.gz", "predictions/sub-02.nii.gz"]
    assert table.loc[0, "dice"] == pytest.approx(2 * 48 / (48 + 64))
    assert np.isnan(table.loc[1, "hausdorff_mm"])  # empty prediction: undefined, kept
    table.to_csv(run_dir / "metrics.csv", index=False)
    back = collect_runs(tmp_path / "results", "quick")
    assert len(back) == 2 and back["subject"].tolist() == ["01", "02"]
    assert pd.Series(back["pred_path"]).map(lambda p: Path(p).is_file()).all()  # resolved against the run folder
    with pytest.raises(ValueError, match="records but"):
        metrics_table(records, preds[:1], eval_set="child_test", params=params)


def test_runner_kernel_imports_the_runners_lesionlib(tmp_path, monkeypatch):
    """With another lesionlib earlier on the path (a second clone sharing the venv), the kernel
    still imports the lesionlib of the process that runs the notebook."""
    import lesionlib

    impostor = tmp_path / "other_clone"
    (impostor / "lesionlib").mkdir(parents=True)
    (impostor / "lesionlib" / "__init__.py").write_text("IMPOSTOR = True\n")
    monkeypatch.setenv("PYTHONPATH", str(impostor))
    nb = tmp_path / "which.py"
    nb.write_text('# %% tags=["parameters"]\nout_dir = "."\n\n'
                  '# %%\nimport pathlib\nimport lesionlib\n'
                  'pathlib.Path(out_dir, "where.txt").write_text(lesionlib.__file__)\n')
    run_dir = tmp_path / "run"
    run_notebook(nb, run_dir, stage="which", parameters=lambda d: {"out_dir": str(d)})
    assert (run_dir / "where.txt").read_text() == lesionlib.__file__
    assert os.environ["PYTHONPATH"] == str(impostor)  # restored after the run
