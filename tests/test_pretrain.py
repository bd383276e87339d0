"""The Res-U-Net encoder's synthetic pretraining (lesionlib.pretrain) and how cells use and label it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionlib.models import build_model, load_medicalnet_weights
from lesionlib.pretrain import TISSUE_CLASSES, pretrain_encoder, pretraining_volumes, tissue_labels

TINY_NET = {"decoder_channels": [8, 8, 4, 4], "encoder_widths": [8, 8, 16, 16, 16]}


@pytest.fixture(scope="module")
def subject():
    from lesionlib.synth.adult import synthesize_adult_subject

    return synthesize_adult_subject(0, seed=11, resolution_mm=6.0)


def test_tissue_labels_follow_the_largest_tissue_fraction(subject):
    labels = tissue_labels(subject)
    t = subject.tissues
    assert labels.shape == subject.image.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(len(TISSUE_CLASSES)))
    assert (labels[subject.image == 0] == 0).all()  # air and the defaced face are background
    inside = (subject.image != 0) & (t.brain > 0.9)
    wm = t.wm if t.gliosis is None else t.wm + t.gliosis
    for value, fraction in ((2, t.csf), (3, t.gm), (4, wm)):
        winners = inside & (fraction > 0.6)
        assert winners.sum() > 0 and (labels[winners] == value).all(), TISSUE_CLASSES[value]
    # the lesion is never a class of its own: its voxels carry tissue labels
    assert set(np.unique(labels[subject.mask.astype(bool)])) <= {1, 2, 3, 4}


def test_pretraining_subjects_are_not_cohort_subjects():
    from lesionlib.synth.adult import synthesize_adult_subject

    volume = pretraining_volumes(1, resolution_mm=6.0, synth_seed=0)[0]
    cohort = synthesize_adult_subject(0, seed=0, resolution_mm=6.0).image
    nonzero = volume.image != 0
    assert abs(float(volume.image[nonzero].mean())) < 1e-4 and abs(float(volume.image[nonzero].std()) - 1) < 1e-3
    assert volume.image.shape != cohort.shape or not np.allclose(volume.image, cohort)


def test_pretraining_learns_and_saves_an_encoder_in_medicalnets_layout(tmp_path):
    out = tmp_path / "shared" / "encoder.pth"
    summary = pretrain_encoder(out, model_kwargs=TINY_NET, resolution_mm=6.0, n_subjects=2, steps=60,
                               patch_size=(16, 16, 16), lr=0.01, seed=0)
    assert summary["loss_last"] < 0.85 * summary["loss_first"]  # the tissue task is learned, not noise
    release = torch.load(out, weights_only=True)
    assert set(release) == {"state_dict"} and all(k.startswith("module.") for k in release["state_dict"])
    model = build_model("resunet", **TINY_NET)
    info = load_medicalnet_weights(model, out)
    assert model.encoder_pretrained and info["n_tensors"] == len(release["state_dict"])
    assert torch.equal(model.encoder.conv1.weight, release["state_dict"]["module.conv1.weight"])
    with pytest.raises(Exception, match="shape mismatch"):  # another width: refused, not half-loaded
        load_medicalnet_weights(build_model("resunet"), out)


SYNTHETIC = """profiles:
  tiny:
    device: cpu
    seeds: [0]
    data: {resolution_mm: 6.0, n_adult: 4, n_children: 2}
    grid: {methods: [resunet]}
    methods:
      resunet:
        encoder: synthetic
        pretraining: {n_subjects: 1, steps: 2}
        model: {decoder_channels: [8, 8, 4, 4], encoder_widths: [8, 8, 16, 16, 16]}
        patch_size: [16, 16, 16]
"""


def test_synthetic_encoder_is_a_preparation_and_labels_the_rows(tmp_path, monkeypatch):
    from lesionlib.profile import load_profile
    from lesionlib.reporting.tables import row_label
    from lesionlib.segmenters import build_segmenter, get_segmenter
    from lesionlib.segmenters.monai_nets import SYNTHETIC_ENCODER, MissingEncoderWeights

    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(SYNTHETIC)
    monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(experiments))
    profile = load_profile("tiny")
    cls = get_segmenter("resunet")
    assert cls.needs_preparation_for(profile.method("resunet"))
    assert not cls.needs_preparation_for(profile.method("resunet").model_copy(update={"encoder": "random"}))
    shared = tmp_path / "_shared" / "resunet"
    seg = build_segmenter("resunet", profile, seed=0, model_dir=tmp_path / "m", shared_dir=shared)
    with pytest.raises(MissingEncoderWeights, match="grid prepare --profile <profile> --method resunet"):
        seg.encoder_weights()
    cls.prepare(profile, shared)
    assert seg.encoder_weights() == str(shared / SYNTHETIC_ENCODER)
    assert (shared / "pretraining.yaml").is_file()
    note = seg.encoder_note(True)
    assert note == "narrow encoder pretrained on synthetic tissue segmentation"
    assert row_label("resunet", "adult_full", True, note) == f"Res-U-Net (ATLAS full; {note})"
    plan = seg.plan("adult", 4)
    assert plan["encoder_weights"].startswith("pretrained on synthetic tissue segmentation (2 steps, 1 heads)")
    assert plan["encoder_widths"] == [8, 8, 16, 16, 16]
    assert row_label("resunet", "adult_full", False) == "Res-U-Net (ATLAS full; encoder not pretrained)"
    scratch = profile.method("resunet").model_copy(update={"encoder": "random", "model": {}})
    assert cls(scratch, model_dir=tmp_path / "r").encoder_note(False) == "encoder not pretrained"
    assert cls(scratch, model_dir=tmp_path / "r").encoder_note(True) == ""  # MedicalNet's own: nothing to add
    # the ablation trains the same registered model, from random weights, and says so in its rows
    ablation = get_segmenter("resunet_scratch")(
        get_segmenter("resunet_scratch").Settings.model_validate({**profile.method("resunet").model_dump(),
                                                                   "encoder": "random"}),
        model_dir=tmp_path / "s", shared_dir=tmp_path / "_shared" / "resunet_scratch")
    cfg, ours = ablation.train_config("adult", 4), seg.train_config("adult", 4)
    assert cfg.model == ours.model == "resunet" and cfg.model_kwargs == ours.model_kwargs
    assert cfg.encoder_weights is None and ours.encoder_weights == str(shared / SYNTHETIC_ENCODER)
    assert ablation.encoder_note(False) == "narrow encoder not pretrained" and ablation.plan("adult", 4)[
        "encoder_weights"] == "random"
