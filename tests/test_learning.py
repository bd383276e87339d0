"""The quick profile's U-Net learns: a learning test on a tiny synthetic cohort, not a timing test.

Eight synthetic adults of the quick profile (3 mm, its generator seed): six train the quick profile's
U-Net (its network, patch, learning rate, schedule, sampling and augmentation) for 400 steps, a third of
its adult schedule; the other two are held out. A network that learned nothing, predicts nothing, or
predicts lesion everywhere scores near 0 on them; a broken loss, label handling or sampler would too.
"""

from __future__ import annotations

import pytest
import torch

from lesionlib.data.discovery import discover_atlas
from lesionlib.profile import load_profile
from lesionlib.segmenters import build_segmenter
from lesionlib.synth import generate_adult_cohort
from lesionlib.train import train

DICE_FLOOR = 0.3  # held-out mean Dice; the quick profile's whole schedule reaches about 0.6 on 8 adults


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_quick_profile_unet_learns_on_held_out_synthetic_adults(tmp_path, two_threads):
    profile = load_profile("quick")
    generate_adult_cohort(tmp_path / "adult", 8, resolution_mm=profile.data.resolution_mm,
                          seed=profile.data.synth_seed, progress=False)
    records = sorted(discover_atlas(tmp_path / "adult", dataset="synthetic_adult"), key=lambda r: r.case_id)
    train_records, held_out = records[:6], records[6:]
    segmenter = build_segmenter("unet", profile, seed=0, model_dir=tmp_path / "unet")
    config = segmenter.train_config("adult", len(train_records)).model_copy(
        update={"epochs": 8, "iterations_per_epoch": 50, "val_every": 8, "device": "cpu", "progress": False})
    result = train(config, train_records, held_out, tmp_path / "unet")
    assert result.best_val_dice >= DICE_FLOOR, f"held-out Dice {result.best_val_dice:.3f} after 400 steps"
