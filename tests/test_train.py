"""Training loop: it learns, resumes exactly, fine-tunes from a parent, records what it did."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lesionlib.data.records import ImageRecord
from lesionlib.io import save_nifti_atomic
from lesionlib.train import TrainConfig, load_checkpoint, train
from lesionlib.training_settings import AugmentationSettings

TINY_UNET = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}  # 3 levels: 16^3 patches suffice


def _case(root, subject, center=(18, 14, 16), radius=5, seed=0, size=32):
    """A ``size``^3 volume at 3 mm: ball brain (1) with a dark ball lesion (0.4) and mild noise."""
    shape = (size, size, size)
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    brain = (((grid - c[:, None, None, None]) / (0.42 * size)) ** 2).sum(0) < 1
    lesion = ((((grid - np.array(center, float)[:, None, None, None]) ** 2).sum(0) < radius ** 2) & brain)
    image = (brain * 1.0 - 0.6 * lesion + rng.normal(0, 0.05, shape) * brain).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -48.0
    ip = save_nifti_atomic(nib.Nifti1Image(image, affine), root / f"sub-{subject}_T1w.nii.gz")
    mp = save_nifti_atomic(nib.Nifti1Image(lesion.astype(np.uint8), affine), root / f"sub-{subject}_mask.nii.gz")
    return ImageRecord(dataset="toy", subject=subject, session="1", image_path=ip, mask_path=mp)


def _config(**kw):
    base = dict(model_kwargs=TINY_UNET, epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=(16, 16, 16),
                augmentation=AugmentationSettings(enabled=False), val_overlap=0.0, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def cases(tmp_path):
    data = tmp_path / "data"
    return [_case(data, "01"), _case(data, "02", center=(12, 18, 14), radius=4, seed=1)]


def test_tiny_unet_overfits_one_case(tmp_path):
    case = _case(tmp_path / "data", "01", center=(14, 10, 12), radius=4, size=24)
    cfg = _config(model_kwargs={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}, epochs=3,
                  iterations_per_epoch=8, patch_size=(24, 24, 24), lr_schedule="constant", foreground_fraction=0.5)
    result = train(cfg, [case], [case], tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
    assert len(history) == 3
    assert history["val_dice"].iloc[-1] > 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert result.best_val_dice == history["val_dice"].max()
    params = yaml.safe_load((tmp_path / "run" / "params.yaml").read_text())
    assert params["encoder_pretrained"] is False and params["status"] == "complete"
    assert params["spacing_mm"] == [3.0, 3.0, 3.0]  # median of the training images
    assert params["split"] == {"train": ["toy/sub-01_ses-1"], "val": ["toy/sub-01_ses-1"]}
    assert result.checkpoint_best.exists() and result.checkpoint_last.exists()
    # cache 'auto' (the default): one tiny image (train and validation) fits in memory, and the run says why
    assert params["cache"]["requested"] == "auto" and params["cache"]["cache"] == "memory"
    assert params["cache"]["n_images"] == 2 and params["config"]["cache"] == "memory"
    assert result.cache == params["cache"]
    assert "cache: memory — 2 images need" in (tmp_path / "run" / "train.log").read_text()


class _Killed(Exception):
    pass


def test_resumed_run_ends_with_the_same_weights(tmp_path, cases):
    aug = AugmentationSettings(p_flip=0.5, p_affine=0.5, p_elastic=0.5, p_bias_field=0.5, p_noise=0.5, p_motion=0.5,
                               extra_spatial=True)
    cfg = _config(epochs=4, augmentation=aug)
    straight = train(cfg, cases, cases[1:], tmp_path / "straight")

    at_kill = {}

    def kill_after_two(epoch, row):
        if epoch == 2:
            at_kill.update(load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["model_state"])
            raise _Killed()

    with pytest.raises(_Killed):
        train(cfg, cases, cases[1:], tmp_path / "resumed", on_epoch_end=kill_after_two)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["epoch"] == 2
    # the resumed half uses a worker process: the data stream must not depend on it
    resumed = train(cfg.model_copy(update={"num_workers": 1}), cases, cases[1:], tmp_path / "resumed")
    a = load_checkpoint(straight.checkpoint_last)
    b = load_checkpoint(resumed.checkpoint_last)
    assert a["model_state"].keys() == b["model_state"].keys()
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    pd.testing.assert_frame_equal(straight.history.drop(columns="seconds"), resumed.history.drop(columns="seconds"))
    params = yaml.safe_load((tmp_path / "resumed" / "params.yaml").read_text())
    assert params["status"] == "complete" and [r["from_epoch"] for r in params["resumed"]] == [2]
    assert "epoch 4/4" in (tmp_path / "resumed" / "train.log").read_text()
    # and the resumed epochs did train: the weights moved after the kill
    assert any(not torch.equal(at_kill[k], b["model_state"][k]) for k in at_kill)


def test_resume_refuses_a_changed_configuration(tmp_path, cases):
    train(_config(epochs=1, iterations_per_epoch=1), cases[:1], [], tmp_path / "run")
    with pytest.raises(ValueError, match="lr"):
        train(_config(epochs=2, iterations_per_epoch=1, lr=0.001), cases[:1], [], tmp_path / "run")
    with pytest.raises(FileExistsError):
        train(_config(epochs=2, iterations_per_epoch=1, resume=False), cases[:1], [], tmp_path / "run")


def test_finetuning_records_parent_and_keeps_frozen_encoder(tmp_path, cases):
    parent = train(_config(epochs=1), cases, [], tmp_path / "parent")
    cfg = _config(epochs=1, model_kwargs={}, init_from=str(parent.checkpoint_last), freeze_encoder=True, lr=0.05)
    child = train(cfg, cases[1:], cases[:1], tmp_path / "finetune", split_info={"few_shot": {"n_images": 1}})
    params = yaml.safe_load((tmp_path / "finetune" / "params.yaml").read_text())
    assert params["parent"]["checkpoint"] == str(parent.checkpoint_last.resolve())
    assert params["parent"]["run_dir"] == str((tmp_path / "parent").resolve())
    assert params["split"]["few_shot"] == {"n_images": 1}
    assert params["config"]["model_kwargs"]["channels"] == list(TINY_UNET["channels"])
    assert params["n_trainable_parameters"] < params["n_parameters"]
    before = load_checkpoint(parent.checkpoint_last)["model_state"]
    after = load_checkpoint(child.checkpoint_last)["model_state"]
    from lesionlib.models import build_model

    model = build_model("unet", **TINY_UNET)
    encoder_ids = {id(p) for m in model.encoder_modules() for p in m.parameters()}
    encoder_keys = {name for name, p in model.named_parameters() if id(p) in encoder_ids}
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(before[key], after[key]), key
    decoder_keys = [k for k, _ in model.named_parameters() if k not in encoder_keys]
    assert any(not torch.equal(before[k], after[k]) for k in decoder_keys)


def test_finetuning_refuses_a_different_model(tmp_path, cases):
    parent = train(_config(epochs=1, iterations_per_epoch=1), cases[:1], [], tmp_path / "parent")
    with pytest.raises(ValueError, match="'unet' model"):
        train(_config(model="resunet", model_kwargs={}, init_from=str(parent.checkpoint_last)), cases[:1], [],
              tmp_path / "ft")


def test_resunet_run_records_whether_the_encoder_was_pretrained(tmp_path, cases):
    from monai.networks.nets.resnet import ResNetFeatures

    cfg = _config(model="resunet", model_kwargs={"decoder_channels": (16, 8, 8, 4)}, epochs=1,
                  iterations_per_epoch=1, patch_size=(16, 16, 16))
    plain = train(cfg, cases, [], tmp_path / "plain")
    assert plain.encoder_pretrained is False
    assert yaml.safe_load((tmp_path / "plain" / "params.yaml").read_text())["encoder_pretrained"] is False

    weights = tmp_path / "resnet_10.pth"
    encoder = ResNetFeatures("resnet10", pretrained=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in encoder.state_dict().items()}}, weights)
    pre = train(cfg.model_copy(update={"encoder_weights": str(weights)}), cases, [], tmp_path / "pre")
    params = yaml.safe_load((tmp_path / "pre" / "params.yaml").read_text())
    assert pre.encoder_pretrained is True and params["encoder_pretrained"] is True
    assert params["encoder_weights"] == str(weights)
    assert load_checkpoint(pre.checkpoint_last)["encoder_pretrained"] is True


def test_disk_cache_is_written_under_results(tmp_path, cases, isolated_roots):
    train(_config(epochs=1, iterations_per_epoch=1, cache="disk"), cases[:1], cases[1:], tmp_path / "run")
    cached = list((isolated_roots["results"] / "cache" / "preprocessed").rglob("*.pt"))
    assert len(cached) == 2  # one train and one validation volume
    params = yaml.safe_load((tmp_path / "run" / "params.yaml").read_text())
    assert params["cache"]["cache"] == "disk" and params["cache"]["reason"].startswith("set explicitly")


def test_patch_size_must_fit_the_model(tmp_path, cases):
    with pytest.raises(ValueError, match="multiple of 4"):
        train(_config(patch_size=(18, 16, 16)), cases[:1], [], tmp_path / "run")
    with pytest.raises(ValueError, match="multiple of 8"):
        train(_config(model="resunet", model_kwargs={}, patch_size=(12, 16, 16)), cases[:1], [], tmp_path / "run2")
    with pytest.raises(ValueError, match="no pretrained encoder"):
        train(_config(encoder_weights="resnet_10.pth"), cases[:1], [], tmp_path / "run3")


def test_config_round_trips_through_params_yaml():
    from pydantic import ValidationError

    cfg = _config(seed=3, init_from="parent/checkpoint_best.pt", spacing_mm=(3.0, 3.0, 3.6))
    again = TrainConfig(**yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValidationError, match="scheduler"):
        TrainConfig(scheduler="poly")  # a misspelt setting is an error, never a silent default


CLI_PROFILE = """profiles:
  tiny:
    device: cpu
    data: {resolution_mm: 3.0, n_adult: 4, n_children: 2}
    splits: {few_shot_n: 1, adult_val_fraction: 0.25}
    methods:
      unet: {model: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}, patch_size: [16, 16, 16],
             epochs_adult: 3, iterations_per_epoch: 1, augmentation: {enabled: false}}
"""


def test_command_line_trains_finetunes_and_predicts(tmp_path, make_atlas_tree, make_child_tree, isolated_roots,
                                                    monkeypatch):
    """``lesionlib train`` draws its images with make_splits (as the grid does) and takes overrides."""
    from lesionlib import bids
    from lesionlib.cli import main

    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(CLI_PROFILE)
    monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(experiments))
    base = isolated_roots["data"] / "synthetic" / "tiny"
    make_atlas_tree(base / "adult", lesion_voxels={"r001s001": 30, "r001s002": 40, "r002s001": 200, "r002s002": 150})
    child = make_child_tree(base / "child")
    common = ["--profile", "tiny", "--no-progress"]
    assert main(["train", *common, "--model", "unet", "--epochs", "1", "--out", str(tmp_path / "adult")]) == 0
    params = yaml.safe_load((tmp_path / "adult" / "params.yaml").read_text())
    assert len(params["split"]["train"]) == 3 and len(params["split"]["val"]) == 1
    assert params["config"]["patch_size"] == [16, 16, 16] and params["config"]["epochs"] == 1  # profile + override

    assert main(["train", *common, "--model", "unet", "--fine-tune-from", str(tmp_path / "adult"),
                 "--out", str(tmp_path / "ft")]) == 0
    params = yaml.safe_load((tmp_path / "ft" / "params.yaml").read_text())
    assert params["parent"]["run_dir"] == str((tmp_path / "adult").resolve())
    [trained] = params["split"]["train"]

    assert main(["predict", "--profile", "tiny", "--dataset", "synthetic_child", "--checkpoint",
                 str(tmp_path / "ft" / "checkpoint_last.pt"), "--out", str(tmp_path / "pred"),
                 "--exclude-split", str(tmp_path / "ft" / "params.yaml"), "--device", "cpu", "--no-progress"]) == 0
    written = sorted((tmp_path / "pred").rglob("*_desc-lesion_mask.nii.gz"))
    assert len(written) == 3  # 4 child images minus the trained one
    trained_case = trained.split("/")[1]
    assert all(not path.name.startswith(trained_case) for path in written)
    for path in written:
        ent = bids.parse_entities(path.name)
        source = nib.load(bids.child_t1w_path(child, ent["sub"], ent["ses"]))
        assert nib.load(path).shape == source.shape
        np.testing.assert_allclose(nib.load(path).affine, source.affine)


def test_validation_every_k_epochs_and_a_whole_volume_window(tmp_path, cases):
    cfg = _config(epochs=4, val_every=3, inference_patch_size=(32, 32, 32))
    result = train(cfg, cases[:1], cases[1:], tmp_path / "run")
    validated = result.history["val_dice"].notna().tolist()
    assert validated == [False, False, True, True]  # every third epoch, and the last
    assert result.best_epoch in (3, 4)
    assert load_checkpoint(result.checkpoint_best)["inference_patch_size"] == [32, 32, 32]
    with pytest.raises(ValueError, match="inference_patch_size"):
        train(_config(inference_patch_size=(30, 32, 32)), cases[:1], [], tmp_path / "bad")


def test_a_truncated_checkpoint_is_an_error_naming_the_file(tmp_path, cases):
    run = train(_config(epochs=1, iterations_per_epoch=1), cases[:1], [], tmp_path / "run")
    data = run.checkpoint_last.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"broken\.pt: cannot be read as a checkpoint"):
        load_checkpoint(broken)
    assert load_checkpoint(run.checkpoint_last)["model_name"] == "unet"


def test_on_device_lays_cpu_convolutions_out_channels_last_and_computes_the_same(tmp_path):
    """Channels-last changes the layout, not the function: same outputs, and its state loads anywhere."""
    from lesionlib.models import build_model
    from lesionlib.train import on_device

    torch.manual_seed(0)
    reference = build_model("resunet", encoder_widths=(8, 8, 16, 16, 16), decoder_channels=(8, 8, 8, 4)).eval()
    fast = build_model("resunet", encoder_widths=(8, 8, 16, 16, 16), decoder_channels=(8, 8, 8, 4))
    fast.load_state_dict(reference.state_dict())
    fast = on_device(fast, "cpu").eval()
    weight = next(m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()
    x = torch.randn(1, 1, 16, 24, 16)
    with torch.no_grad():
        assert torch.allclose(fast(x), reference(x), atol=1e-4)
    torch.save(fast.state_dict(), tmp_path / "state.pt")
    plain = build_model("resunet", encoder_widths=(8, 8, 16, 16, 16), decoder_channels=(8, 8, 8, 4)).eval()
    plain.load_state_dict(torch.load(tmp_path / "state.pt"))
    with torch.no_grad():
        assert torch.allclose(plain(x), reference(x), atol=1e-4)
