"""One grid cell: training and prediction through lesionlib.cells, the notebooks' only entry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lesionlib import cells
from lesionlib.data.records import ImageRecord


def _case(tmp_path: Path, write_nifti, make_affine, subject: str, orientation: str = "RAS",
          spacing_mm=(3.0, 3.0, 3.0)) -> ImageRecord:
    rng = np.random.default_rng(int(subject))
    shape = (32, 32, 32)
    image = (rng.random(shape, dtype=np.float32) * 0.1 + 1.0)
    mask = np.zeros(shape, np.uint8)
    mask[10:19, 11:20, 10:18] = 1
    image[mask == 1] = 0.2  # dark, CSF-like lesion
    affine = make_affine(spacing_mm, orientation)
    ip = write_nifti(tmp_path / f"sub-{subject}_T1w.nii.gz", image, affine)
    mp = write_nifti(tmp_path / f"sub-{subject}_mask.nii.gz", mask, affine, dtype=np.uint8)
    return ImageRecord(dataset="toy", subject=subject, session="1", image_path=ip, mask_path=mp)


def test_nnunet_dataset_of_each_kind_of_cell():
    assert cells.nnunet_dataset("adult_full", False) == cells.NNUNET_DATASETS["adult"]
    assert cells.nnunet_dataset("adult_subset", False) == cells.NNUNET_DATASETS["adult"]
    assert cells.nnunet_dataset("adult_subset", True) == cells.NNUNET_DATASETS["finetune"]
    assert cells.nnunet_dataset("child5", False) == cells.NNUNET_DATASETS["child5"]
    assert len(set(cells.NNUNET_DATASETS.values())) == len(cells.NNUNET_DATASETS)


def test_unknown_method_and_fine_tuning_without_parent_are_errors(tmp_path):
    kw = dict(train_set="adult_full", epochs=1, iterations_per_epoch=1, batch_size=1, patch_size=(16,) * 3,
              resolution_mm=3.0, seed=0, device="cpu")
    with pytest.raises(ValueError, match="not 'segformer'"):
        cells.train_cell("segformer", [], [], tmp_path, fine_tuned=False, init_from=None, **kw)
    with pytest.raises(ValueError, match="init_from"):
        cells.train_cell("unet", [], [], tmp_path, fine_tuned=True, init_from=None, **kw)
    with pytest.raises(ValueError, match="not 'segformer'"):
        cells.predict_cell("segformer", tmp_path, [], tmp_path, train_set="adult_full", fine_tuned=False,
                           device="cpu")


def test_unet_cell_trains_fine_tunes_and_predicts_on_each_input_grid(tmp_path, write_nifti, make_affine):
    train = [_case(tmp_path, write_nifti, make_affine, s) for s in ("01", "02")]
    child = _case(tmp_path, write_nifti, make_affine, "03", orientation="LPS", spacing_mm=(3.0, 3.0, 3.6))
    kw = dict(epochs=1, iterations_per_epoch=1, batch_size=1, patch_size=(32, 32, 32), resolution_mm=3.0,
              seed=0, device="cpu")
    adult_run = tmp_path / "adult_run"
    summary = cells.train_cell("unet", train, train[:1], adult_run, train_set="adult_full", fine_tuned=False,
                               init_from=None, **kw)
    assert (adult_run / "model" / "checkpoint_best.pt").is_file()
    assert summary["encoder_pretrained"] is False
    ft_run = tmp_path / "ft_run"
    cells.train_cell("unet", [child], [child], ft_run, train_set="adult_full", fine_tuned=True,
                     init_from=adult_run, **kw)
    params = {"method": "unet", "train_set": "adult_full", "fine_tuned": True, "seed": 0, "profile": "test",
              "data_source": "synthetic"}
    metrics = cells.evaluate_cell("unet", ft_run, {"child_test": [child]}, ft_run, params=params,
                                  train_set="adult_full", fine_tuned=True, device="cpu", overlap=0.25)
    on_disk = pd.read_csv(ft_run / "metrics.csv")
    assert list(on_disk["case_id"]) == [child.case_id] and list(on_disk["eval_set"]) == ["child_test"]
    assert 0.0 <= float(metrics["dice"].iloc[0]) <= 1.0
    written = [ft_run / p for p in on_disk["pred_path"]]
    pred, src = nib.load(written[0]), nib.load(child.image_path)
    assert pred.shape == src.shape
    np.testing.assert_allclose(pred.affine, src.affine, atol=1e-5)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
