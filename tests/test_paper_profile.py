"""The paper profile does what the paper did (issue #13), read from `lesionlib grid list --profile paper --json`."""

from __future__ import annotations

import json

import pytest

from lesionlib.cli import main


@pytest.fixture(scope="module")
def paper_cells():
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["grid", "list", "--profile", "paper", "--json"]) == 0
    grid = json.loads(out.getvalue())
    return {c["run_id"]: c for c in grid["cells"]}, grid["profile"]


def test_fine_tuned_nnunet_trains_100_epochs_and_adult_nnunet_its_default(paper_cells):
    cells, _ = paper_cells
    ft = [c for c in cells.values() if c["method"] == "nnunet" and c["fine_tuned"]]
    assert ft and all(c["settings"]["epochs"] == 100 for c in ft)  # point 1
    adult = [c for c in cells.values() if c["method"] == "nnunet" and c["stage"] == "adult"]
    assert all(c["settings"]["epochs"] == 1000 and c["settings"]["iterations_per_epoch"] == 250 for c in adult)


def test_monai_networks_use_adam_at_a_constant_lr_of_001(paper_cells):
    cells, _ = paper_cells
    nets = [c for c in cells.values() if c["method"] in ("unet", "resunet")]
    assert nets and all(c["settings"]["lr"] == 0.01 and c["settings"]["lr_schedule"] == "constant"
                        and c["settings"]["optimiser"] == "Adam" for c in nets)  # point 2
    assert all(c["settings"]["epochs"] == (100 if c["fine_tuned"] else 200) for c in nets
               if c["stage"] != "child_only")


def test_an_epoch_is_one_pass_over_the_training_images(paper_cells):
    cells, profile = paper_cells
    ft = cells["unet_adult-full_ft-child5_seed0"]["settings"]
    assert ft["epoch_definition"] == "one pass over the training images"  # point 7
    assert ft["iterations_per_epoch"] == 3  # 5 child images, batch 2
    adult = cells["unet_adult-full_seed0"]
    assert adult["settings"]["iterations_per_epoch"] == -(-adult["n_train_images"] // 2)


def test_nnunet_cross_validates_with_5_folds_and_ensembles(paper_cells):
    cells, _ = paper_cells
    nn = [c for c in cells.values() if c["method"] == "nnunet"]
    assert all(c["settings"]["models"] == 5 for c in nn)  # point 10
    assert "5-fold cross-validation" in cells["nnunet_adult-full_seed0"]["settings"]["folds"]


def test_only_the_papers_four_augmentations(paper_cells):
    cells, _ = paper_cells
    aug = cells["unet_adult-full_seed0"]["settings"]["augmentation"]
    assert aug.startswith("elastic") and "flips" not in aug and "affine" not in aug  # point 11
    assert all(word in aug for word in ("elastic", "noise", "bias field", "motion"))


def test_res_unet_needs_medicalnet_weights_and_says_how_to_get_them(paper_cells, monkeypatch, tmp_path):
    from lesionlib.profile import load_profile
    from lesionlib.segmenters import build_segmenter
    from lesionlib.segmenters.monai_nets import MissingEncoderWeights

    cells, _ = paper_cells
    assert cells["resunet_adult-full_seed0"]["settings"]["encoder_weights"] == "MedicalNet ResNet-10 (required)"
    monkeypatch.delenv("MEDICALNET_RESNET10", raising=False)
    seg = build_segmenter("resunet", load_profile("paper"), seed=0, model_dir=tmp_path)
    with pytest.raises(MissingEncoderWeights, match="MEDICALNET_RESNET10") as err:
        seg.encoder_weights()
    assert "github.com/Tencent/MedicalNet" in str(err.value)


def test_every_method_and_seed_is_scored_on_the_same_child_test_set(paper_cells):
    cells, profile = paper_cells
    gnb = [c for c in cells.values() if c["method"] == "lesiongnb"]
    assert [c["seed"] for c in gnb] == profile["seeds"]  # point 8: the baseline runs for every seed
    assert profile["data"]["child_session2_masks"] == "propagated"  # point 4: the paper's protocol
