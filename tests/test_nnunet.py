"""lesionlib.nnunet: export to nnU-Net's raw format, short trainers, and the real nnunetv2 pipeline.

A tiny synthetic dataset (32^3 voxels, 3 mm, a dark sphere in a bright ellipsoid as the lesion;
one case LPS-oriented with anisotropic voxels) goes through export, plan/preprocess, a
2-iteration training, prediction, evaluation and the fine-tuning path (plans transfer +
pretrained weights), all with nnunetv2 2.8.1 on CPU.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionlib import bids
from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError
from lesionlib.nnunet import NnUNetRun, NnUNetStageError, export_dataset, parse_trainer_name, trainer_name
from lesionlib.nnunet.paths import EXT_TRAINER_DIR, NnUNetPaths, dataset_folder_name
from lesionlib.nnunet.trainers import Schedule

SHAPE = (32, 32, 32)
RAS_3MM = np.array([[3.0, 0, 0, -48], [0, 3.0, 0, -48], [0, 0, 3.0, -48], [0, 0, 0, 1]])
# LPS voxel axes, anisotropic 3 x 3.5 x 2.5 mm, with an oblique-free but non-diagonal permutation
LPS_ANISO = np.array([[-3.0, 0, 0, 48], [0, 0, -3.5, 56], [0, 2.5, 0, -40], [0, 0, 0, 1]])


def make_case(root: Path, subject: str, session: str, seed: int, affine: np.ndarray,
              shape: tuple[int, int, int] = SHAPE, mask_scale: int = 1) -> ImageRecord:
    """A bright ellipsoidal 'brain' with a dark spherical lesion; returns its ImageRecord."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    centre = np.array(shape) / 2
    brain = (((grid - centre) / (np.array(shape) * 0.42)) ** 2).sum(-1) < 1
    lesion_centre = centre + rng.integers(-4, 5, 3)
    lesion = (((grid - lesion_centre) ** 2).sum(-1) < rng.uniform(3.5, 5.0) ** 2) & brain
    image = np.where(brain, 0.8, 0.0) + rng.normal(0, 0.03, shape)
    image[lesion] = 0.3 + rng.normal(0, 0.03, int(lesion.sum()))
    image_path = root / f"sub-{subject}_ses-{session}_T1w.nii.gz"
    mask_path = root / f"sub-{subject}_ses-{session}_mask.nii.gz"
    root.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), image_path)
    nib.save(nib.Nifti1Image((lesion * mask_scale).astype(np.uint8), affine), mask_path)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    return ImageRecord("toy", subject, session, image_path, mask_path, domain="adult",
                       lesion_volume_ml=float(lesion.sum() * voxel_ml))


# --------------------------------------------------------------------------- fast unit tests
def test_trainer_names_encode_the_schedule():
    assert trainer_name() == "nnUNetTrainer"  # nnU-Net's defaults: 1000 epochs x 250 (+50 val)
    assert trainer_name(2, 5) == "nnUNetTrainer_lesionlib_E2_I5_V1"
    assert trainer_name(100, 250) == "nnUNetTrainer_lesionlib_E100_I250_V50"
    assert trainer_name(1, 2, 1, final_validation=False) == "nnUNetTrainer_lesionlib_E1_I2_V1_NoFinalVal"
    assert trainer_name(1000, 250, 50, final_validation=False).endswith("E1000_I250_V50_NoFinalVal")
    for args in [(3, 7, 2, True), (1, 1, 1, False), (1000, 250, 50, True)]:
        assert parse_trainer_name(trainer_name(*args)) == Schedule(*args)
    assert parse_trainer_name("nnUNetTrainer_5epochs") is None
    assert parse_trainer_name("nnUNetTrainer_lesionlib_E0_I5_V1") is None
    with pytest.raises(ValueError):
        trainer_name(0, 5)
    with pytest.raises(ValueError):
        trainer_name(2, 5, 0)


def test_short_schedules_apply_to_nnunets_own_trainer_variants():
    from lesionlib.nnunet.trainers import make_short_trainer, parse_trainer_name, trainer_name

    name = trainer_name(10, 50, final_validation=False, base="nnUNetTrainerAdam1en3")
    assert name == "nnUNetTrainerAdam1en3_lesionlib_E10_I50_V10_NoFinalVal"
    assert parse_trainer_name(name).base == "nnUNetTrainerAdam1en3"
    assert trainer_name(base="nnUNetTrainerAdam1en3") == "nnUNetTrainerAdam1en3"  # nnU-Net's schedule: the class itself
    from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam1en3

    assert issubclass(make_short_trainer(10, 50, final_validation=False, base="nnUNetTrainerAdam1en3"),
                      nnUNetTrainerAdam1en3)
    with pytest.raises(ValueError, match="nnU-Net trainer class"):
        trainer_name(base="my_trainer; rm -rf")


def test_nnunet_finds_short_trainers_through_ext_trainer(monkeypatch):
    """nnU-Net 2.8.1's own lookup resolves our names via nnUNet_extTrainer; classes are picklable."""
    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_DIR))
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_trainer_class_by_name("nnUNetTrainer_lesionlib_E3_I4_V2")
    assert issubclass(cls, nnUNetTrainer) and cls.__name__ == "nnUNetTrainer_lesionlib_E3_I4_V2"
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.perform_actual_validation is nnUNetTrainer.perform_actual_validation
    no_val = recursive_find_trainer_class_by_name("nnUNetTrainer_lesionlib_E3_I4_V2_NoFinalVal")
    assert no_val.perform_actual_validation is not nnUNetTrainer.perform_actual_validation
    with pytest.raises(RuntimeError):
        recursive_find_trainer_class_by_name("nnUNetTrainer_lesionlib_E3_I4")


def test_environment_points_inside_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/global/raw")
    monkeypatch.setenv("nnUNet_extTrainer", "/elsewhere/trainers")
    paths = NnUNetPaths(tmp_path / "ws")
    env = paths.environment(num_processes=3)
    for key, sub in [("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                     ("nnUNet_results", "nnUNet_results")]:
        assert env[key] == str((tmp_path / "ws" / sub).resolve())
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(EXT_TRAINER_DIR), "/elsewhere/trainers"]
    assert env["nnUNet_n_proc_DA"] == "3" and env["nnUNet_def_n_proc"] == "3"
    assert paths.environment(num_processes=0, augmentation_workers=0)["nnUNet_n_proc_DA"] == "0"
    assert paths.environment(num_processes=0)["nnUNet_n_proc_DA"] == "1"  # planning needs >= 1
    assert os.environ["nnUNet_raw"] == "/global/raw"  # the caller's environment is untouched
    assert dataset_folder_name(7, "Child") == "Dataset007_Child"
    for bad in [(0, "A"), (1000, "A"), (5, "Child_5"), (5, "")]:
        with pytest.raises(ValueError):
            dataset_folder_name(*bad)


def test_export_writes_nnunet_raw_layout(tmp_path):
    train = [make_case(tmp_path / "src", f"{i:02d}", "1", i, RAS_3MM) for i in range(2)]
    train.append(make_case(tmp_path / "src", "02", "1", 2, LPS_ANISO, shape=(32, 28, 30)))
    test = [make_case(tmp_path / "src", "09", "2", 9, LPS_ANISO)]
    out = export_dataset(tmp_path / "raw" / "Dataset001_Toy", train, test, progress=False)

    info = json.loads((out / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "T1"}
    assert info["labels"] == {"background": 0, "lesion": 1}
    assert info["numTraining"] == 3 and info["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"sub-0{i}_ses-1_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"sub-0{i}_ses-1.nii.gz" for i in range(3)]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["sub-09_ses-2_0000.nii.gz"]

    for rec in train:
        src_img, src_mask = nib.load(rec.image_path), nib.load(rec.mask_path)
        img = nib.load(out / "imagesTr" / f"{rec.case_id}_0000.nii.gz")
        lab = nib.load(out / "labelsTr" / f"{rec.case_id}.nii.gz")
        assert img.shape == src_img.shape and np.allclose(img.affine, src_img.affine, atol=1e-5)
        assert np.allclose(img.get_fdata(), src_img.get_fdata(), atol=1e-6)
        assert lab.get_data_dtype() == np.uint8 and np.array_equal(lab.affine, img.affine)
        data = np.asarray(lab.dataobj)
        assert set(np.unique(data)) <= {0, 1}
        assert np.array_equal(data, np.asarray(src_mask.dataobj))
    assert nib.aff2axcodes(nib.load(out / "imagesTr" / "sub-02_ses-1_0000.nii.gz").affine) == ("L", "S", "P")
    records = json.loads((out / "lesionlib_records.json").read_text())
    assert [r["case_id"] for r in records["test"]] == ["sub-09_ses-2"]

    # a re-export with fewer cases leaves no stale files behind
    export_dataset(out, train[:1], progress=False)
    assert [p.name for p in (out / "imagesTr").iterdir()] == ["sub-00_ses-1_0000.nii.gz"]
    assert not list((out / "imagesTs").iterdir())
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1


def test_export_rejects_bad_input(tmp_path):
    good = make_case(tmp_path / "src", "01", "1", 1, RAS_3MM)
    no_mask = ImageRecord("toy", "02", "1", good.image_path, None)
    with pytest.raises(DataValidationError, match="no lesion mask"):
        export_dataset(tmp_path / "raw" / "Dataset001_Toy", [good, no_mask], progress=False)
    with pytest.raises(ValueError, match="occurs twice"):
        export_dataset(tmp_path / "raw" / "Dataset001_Toy", [good], [good], progress=False)
    with pytest.raises(ValueError, match="no training records"):
        export_dataset(tmp_path / "raw" / "Dataset001_Toy", [], progress=False)
    other = make_case(tmp_path / "src2", "03", "1", 3, RAS_3MM, shape=(30, 32, 32))
    mismatched = ImageRecord("toy", "03", "1", good.image_path, other.mask_path)
    expected = r"mask is not on the grid of its image .*shape \(30, 32, 32\) vs \(32, 32, 32\)"
    with pytest.raises(DataValidationError, match=expected) as err:
        export_dataset(tmp_path / "raw" / "Dataset001_Toy", [mismatched], progress=False)
    assert err.value.path == other.mask_path
    shifted = tmp_path / "shifted_mask.nii.gz"
    moved = RAS_3MM.copy()
    moved[0, 3] += 1.5
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), moved), shifted)
    with pytest.raises(DataValidationError, match="affine"):
        export_dataset(tmp_path / "raw" / "Dataset001_Toy",
                       [ImageRecord("toy", "04", "1", good.image_path, shifted)], progress=False)
    # a {0, 255} mask is rejected, never thresholded, and every bad file is named before anything is written
    scaled = make_case(tmp_path / "src3", "05", "1", 5, RAS_3MM, mask_scale=255)
    with pytest.raises(DataValidationError) as err:
        export_dataset(tmp_path / "raw" / "Dataset001_Toy", [good, scaled], [mismatched], progress=False)
    assert err.value.path == scaled.mask_path and "values found: 0, 255" in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_failed_stage_raises_with_log_tail(tmp_path):
    run = NnUNetRun(tmp_path / "ws", 1, "Toy", device="cpu")
    with pytest.raises(NnUNetStageError) as err:
        run._run("probe", [sys.executable, "-c",
                           "import os; print('raw at', os.environ['nnUNet_raw']); raise SystemExit('boom 42')"])
    assert "boom 42" in str(err.value) and err.value.returncode == 1
    log_text = err.value.log_path.read_text()
    assert str(run.paths.raw) in log_text  # the subprocess saw the run-local nnUNet_raw
    assert err.value.log_path.parent == run.paths.logs


def test_folds_and_splits_are_checked(tmp_path):
    recs = [make_case(tmp_path / "src", f"{i:02d}", "1", i, RAS_3MM, shape=(8, 8, 8)) for i in range(3)]
    run = NnUNetRun(tmp_path / "ws", 3, "Toy", device="cpu")
    with pytest.raises(FileNotFoundError, match="export"):
        run.plan_and_preprocess()
    run.export(recs, progress=False)
    run.plans_file().parent.mkdir(parents=True)
    run.plans_file().write_text("{}")
    with pytest.raises(ValueError, match=">= 5 training cases"):
        run.train(0, epochs=1, iterations=1)
    with pytest.raises(ValueError, match="unknown case ids"):
        run.write_splits([{"train": ["sub-00_ses-1"], "val": ["sub-77_ses-1"]}])
    with pytest.raises(ValueError, match="both train and val"):
        run.write_splits([{"train": ["sub-00_ses-1"], "val": ["sub-00_ses-1"]}])
    path = run.write_splits([{"train": ["sub-00_ses-1", "sub-01_ses-1"], "val": ["sub-02_ses-1"]}])
    assert json.loads(path.read_text()) == [{"train": ["sub-00_ses-1", "sub-01_ses-1"], "val": ["sub-02_ses-1"]}]
    with pytest.raises(FileNotFoundError, match="pretrained"):  # gets past the fold check now
        run.train(0, epochs=1, iterations=1, pretrained_weights=tmp_path / "missing.pth")


# --------------------------------------------------------------------------- the real pipeline
@pytest.fixture(scope="module")
def adult_model(tmp_path_factory):
    """An adult dataset (4 RAS cases) exported, planned, preprocessed and trained for 1 x 2 iterations."""
    tmp = tmp_path_factory.mktemp("nnunet_adult")
    src = tmp / "src"
    train = [make_case(src / "adult", f"a{i}", "1", i, RAS_3MM) for i in range(4)]
    child_test = [make_case(src / "child", "c9", "2", 19, LPS_ANISO, shape=(30, 32, 28))]
    adult = NnUNetRun(tmp / "ws", 901, "Adult", device="cpu", num_processes=0)
    adult.export(train, child_test, progress=False)
    plans_file = adult.plan_and_preprocess(verify=False)  # nnU-Net's integrity check runs on the child data
    # nnU-Net's final validation (here: re-predicting the 4 training cases) would cost ~40 s
    fold_dir = adult.train("all", epochs=1, iterations=2, final_validation=False)
    return {"run": adult, "tmp": tmp, "train": train, "child_test": child_test, "plans_file": plans_file,
            "fold_dir": fold_dir}


@pytest.mark.slow
def test_plan_train_predict_evaluate(adult_model):
    """plan/preprocess -> 1 x 2-iteration training -> predict (on the input grids) -> evaluate."""
    adult, tmp, child_test = adult_model["run"], adult_model["tmp"], adult_model["child_test"]
    plans = json.loads(adult_model["plans_file"].read_text())
    assert plans["dataset_name"] == "Dataset901_Adult" and "3d_fullres" in plans["configurations"]
    assert list((adult.preprocessed_dir / "nnUNetPlans_3d_fullres").glob("sub-a0_ses-1*"))

    fold_dir = adult_model["fold_dir"]
    assert fold_dir == (tmp / "ws").resolve() / "nnUNet_results/Dataset901_Adult" / \
        "nnUNetTrainer_lesionlib_E1_I2_V1_NoFinalVal__nnUNetPlans__3d_fullres/fold_all"
    debug = json.loads((fold_dir / "debug.json").read_text())  # nnU-Net's dump of the trainer's attributes
    assert (debug["num_epochs"], debug["num_iterations_per_epoch"], debug["num_val_iterations_per_epoch"]) \
        == ("1", "2", "1")
    assert (fold_dir / "checkpoint_final.pth").is_file() and not (fold_dir / "validation").exists()

    pred_dir = tmp / "pred_adult"
    cases = child_test + adult_model["train"][:1]
    preds = adult.predict(cases, pred_dir, tta=False)
    assert preds == [bids.prediction_mask_path(pred_dir, rec) for rec in cases]  # the derivative dataset "toy"
    for rec, pred_path in zip(cases, preds):
        img, pred = nib.load(rec.image_path), nib.load(pred_path)
        assert pred.shape == img.shape and np.array_equal(pred.affine, img.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
        sidecar = json.loads(bids.sidecar_path(pred_path).read_text())
        assert sidecar["model"] == "nnU-Net" and sidecar["test_time_augmentation"] is False
    assert nib.aff2axcodes(nib.load(preds[0]).affine) == nib.aff2axcodes(LPS_ANISO)
    description = json.loads((pred_dir / "toy" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and "nnU-Net" in description["GeneratedBy"][0]["Description"]
    assert sorted(p.name for p in pred_dir.iterdir()) == ["toy"]  # temporary nnU-Net outputs cleaned up

    table = adult.evaluate(child_test, pred_dir, out_csv=tmp / "metrics.csv",
                           metadata={"eval_set": "child_test", "train_set": "adult_full", "fine_tuned": False})
    assert list(table["case_id"]) == ["sub-c9_ses-2"]
    assert table.loc[0, "method"] == "nnunet" and table.loc[0, "eval_set"] == "child_test"
    assert 0.0 <= table.loc[0, "dice"] <= 1.0
    assert table.loc[0, "lesion_volume_ml"] == pytest.approx(child_test[0].lesion_volume_ml)
    assert (tmp / "metrics.csv").read_text().startswith("case_id,")
    print("adult stage timings (s):", {k: round(v, 1) for k, v in adult.timings_s.items()})


@pytest.mark.slow
def test_finetune_with_transferred_plans_and_pretrained_weights(adult_model):
    """The child run (its own workspace) gets the adult plans, preprocesses with them, trains from the adult weights."""
    adult, tmp, child_test = adult_model["run"], adult_model["tmp"], adult_model["child_test"]
    child_train = [make_case(tmp / "src" / "child", f"c{i}", "1", 10 + i, LPS_ANISO) for i in range(3)]
    child = NnUNetRun(tmp / "ws_child", 902, "Child", device="cpu", num_processes=0)
    child.export(child_train, progress=False)
    ft_dir = child.finetune(adult, epochs=1, iterations=2, final_validation=False, verify=True)

    plans_file = adult_model["plans_file"]
    assert (child.paths.preprocessed / "Dataset901_Adult" / "nnUNetPlans.json").read_text() == plans_file.read_text()
    adult_cfg = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    child_plans = json.loads(child.plans_file("nnUNetPlans_fromDataset901").read_text())
    child_cfg = child_plans["configurations"]["3d_fullres"]
    assert child_plans["dataset_name"] == "Dataset902_Child"
    for key in ("patch_size", "spacing", "architecture"):
        assert child_cfg[key] == adult_cfg[key]  # the adult's plans, hence the adult's network topology
    assert ft_dir.parent.name == "nnUNetTrainer_lesionlib_E1_I2_V1_NoFinalVal__nnUNetPlans_fromDataset901__3d_fullres"
    train_log = next(child.paths.logs.glob("Dataset902_Child_train_*.log")).read_text()
    assert "Loading pretrained weights from file" in train_log
    assert str(adult_model["fold_dir"] / "checkpoint_final.pth") in train_log

    ft_preds = child.predict(child_test, tmp / "pred_ft", tta=True)
    ft, test_img = nib.load(ft_preds[0]), nib.load(child_test[0].image_path)
    assert ft.shape == test_img.shape and np.array_equal(ft.affine, test_img.affine)
    print("child stage timings (s):", {k: round(v, 1) for k, v in child.timings_s.items()})


@pytest.mark.slow
def test_seeded_training_is_repeatable(adult_model):
    """Two trainings with the same seed (CPU, augmentation in the training process) end with the same weights;
    nnU-Net seeds nothing itself, so without ``seed`` the runs would differ in initialisation and sampling."""
    import torch

    tmp = adult_model["tmp"]
    weights = []
    for name in ("seeded_a", "seeded_b"):
        run = NnUNetRun(tmp / "ws", 901, "Adult", device="cpu", num_processes=0, results_dir=tmp / name, seed=7)
        assert run.environment(training=True)["LESIONLIB_NNUNET_SEED"] == "7"
        fold_dir = run.train("all", epochs=1, iterations=2, final_validation=False)
        weights.append(torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu",
                                  weights_only=False)["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert "LESIONLIB_NNUNET_SEED" not in adult_model["run"].environment(training=True)


def test_cli_export_and_missing_plans(tmp_path, monkeypatch):
    """``lesionlib nnunet export`` exports the chosen cases; ``train`` before planning fails clearly."""
    import argparse

    import lesionlib.data.discovery
    from lesionlib.nnunet.cli import register_cli

    recs = [make_case(tmp_path / "src", f"{i:02d}", "1", i, RAS_3MM, shape=(8, 8, 8)) for i in range(3)]
    monkeypatch.setattr(lesionlib.data.discovery, "discover", lambda name, profile, root, **kwargs: recs)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    base = ["nnunet", "{}", "--run-dir", str(tmp_path / "ws"), "--dataset-id", "12", "--dataset-name", "Toy",
            "--device", "cpu"]
    args = parser.parse_args([a.format("export") for a in base]
                             + ["--records", "toy", "--case", "sub-00_ses-1", "--case", "sub-02_ses-1"])
    assert args.func(args) == 0
    images = sorted(p.name for p in (tmp_path / "ws/nnUNet_raw/Dataset012_Toy/imagesTr").iterdir())
    assert images == ["sub-00_ses-1_0000.nii.gz", "sub-02_ses-1_0000.nii.gz"]
    with pytest.raises(SystemExit, match="no such cases"):
        bad = parser.parse_args([a.format("export") for a in base] + ["--records", "toy", "--case", "sub-09_ses-1"])
        bad.func(bad)
    args = parser.parse_args([a.format("train") for a in base] + ["--epochs", "1", "--iterations", "1"])
    with pytest.raises(FileNotFoundError, match="plan_and_preprocess"):
        args.func(args)


def test_cli_predict_and_evaluate_use_the_derivative_datasets(tmp_path, monkeypatch):
    """``lesionlib nnunet predict`` writes one BIDS-derivatives dataset per source dataset (nnU-Net's worker
    replaced by one that answers each case's true mask) and ``nnunet evaluate`` reads the masks back from it."""
    import argparse

    import lesionlib.data.discovery
    from lesionlib.nnunet.cli import register_cli

    recs = [make_case(tmp_path / "src", f"{i:02d}", "1", i, RAS_3MM, shape=(12, 12, 12)) for i in range(2)]
    recs.append(make_case(tmp_path / "src", "02", "2", 2, LPS_ANISO, shape=(12, 14, 10)))
    monkeypatch.setattr(lesionlib.data.discovery, "discover", lambda name, profile, root, **kwargs: recs)
    masks = {r.case_id: r.mask_path for r in recs}

    def fake_worker(self, stage, cmd, *, training=False):
        assert stage == "predict"
        spec = json.loads(Path(cmd[-1]).read_text())
        for output in spec["outputs"]:
            img = nib.load(masks[Path(output).name])
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), output + ".nii.gz")
        return 0.0

    monkeypatch.setattr(NnUNetRun, "_run", fake_worker)
    model_dir = tmp_path / "ws" / "nnUNet_results" / "Dataset012_Toy" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model_dir / "fold_all").mkdir(parents=True)
    (model_dir / "fold_all" / "checkpoint_final.pth").write_bytes(b"")
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    base = ["--run-dir", str(tmp_path / "ws"), "--dataset-id", "12", "--dataset-name", "Toy", "--device", "cpu",
            "--records", "toy"]
    out = tmp_path / "pred"
    args = parser.parse_args(["nnunet", "predict", *base, "--out", str(out), "--no-tta"])
    assert args.func(args) == 0

    assert sorted(p.name for p in out.iterdir()) == ["toy"]  # no generic derivatives/ tree, no temporaries left
    description = json.loads((out / "toy" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and "nnU-Net" in description["GeneratedBy"][0]["Description"]
    assert (out / "toy" / "README").is_file()
    for rec in recs:
        path = out / "toy" / f"sub-{rec.subject}" / f"ses-{rec.session}" / "anat" / \
            f"sub-{rec.subject}_ses-{rec.session}_desc-lesion_mask.nii.gz"
        assert path == bids.prediction_mask_path(out, rec)
        pred, img = nib.load(path), nib.load(rec.image_path)
        assert pred.shape == img.shape and np.array_equal(pred.affine, img.affine)
        assert pred.get_data_dtype() == np.uint8
        sidecar = json.loads(bids.sidecar_path(path).read_text())
        assert sidecar["Sources"] == [f"bids:source:{rec.image_path.name}"]  # images outside sub-* folders
        assert sidecar["model"] == "nnU-Net" and sidecar["folds"] == ["all"] and sidecar["test_time_augmentation"] is False
    assert not list(out.rglob(".*"))

    args = parser.parse_args(["nnunet", "evaluate", *base, "--out", str(out), "--out-csv", str(tmp_path / "m.csv")])
    assert args.func(args) == 0
    text = (tmp_path / "m.csv").read_text()
    assert text.startswith("case_id,") and text.count("\n") == 1 + len(recs)
    table = NnUNetRun(tmp_path / "ws", 12, "Toy", device="cpu").evaluate(recs, out)
    assert list(table["dice"]) == [1.0] * len(recs)  # the true masks, read back from the derivative dataset


def test_interrupted_stage_stops_its_processes(tmp_path, monkeypatch):
    """An exception while waiting for a stage (e.g. Ctrl-C) terminates its whole process group."""
    import subprocess
    import time

    run = NnUNetRun(tmp_path / "ws", 1, "Toy", device="cpu")
    pid_file = tmp_path / "worker.pid"
    # the stage starts a worker of its own (as nnU-Net does) and writes the worker's pid
    script = ("import subprocess, sys, time; "
              "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(w.pid)); time.sleep(60)")
    real_wait = subprocess.Popen.wait

    def wait_then_interrupt(self, timeout=None):
        if timeout is not None:  # the clean-up's waits
            return real_wait(self, timeout)
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess.Popen, "wait", wait_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run._run("sleepy", [sys.executable, "-c", script])
    monkeypatch.undo()

    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{worker}/stat")
        if not stat.exists() or stat.read_text().split()[2] == "Z":  # gone, or killed and awaiting reaping
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker process {worker} of the interrupted stage is still running")
