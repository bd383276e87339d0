"""Predicted masks form one BIDS-derivatives dataset per source dataset, and the BIDS validator accepts each.

Layout under a run's ``predictions/`` (:func:`lesionlib.bids.prediction_root`): ``<dataset>/`` with
``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy``, ``SourceDatasets``,
``DatasetLinks``), ``README`` and ``sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz`` with
a JSON sidecar. The validator test needs the npm ``bids-validator`` 1.15.0 (``scripts/bids_validator.sh``
installs it into ``$LESIONLIB_NODE``, default ``~/.cache/lesionlib/node``) and is skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_cells import tiny_profile  # noqa: F401  (the same tiny profile and cohorts)
import torch
from torch import nn

import lesionlib
from lesionlib import bids
from lesionlib.data.discovery import discover_atlas, discover_child_bids
from lesionlib.io import save_nifti_atomic
from lesionlib.predict import predict_records

VALIDATOR_VERSION = "1.15.0"
MASK_NAME = re.compile(r"^sub-(?P<sub>[A-Za-z0-9]+)_ses-(?P<ses>[A-Za-z0-9]+)(_space-[A-Za-z0-9]+)?"
                       r"_desc-[A-Za-z0-9]+_mask\.(nii\.gz|json)$")
"""BIDS-Derivatives mask names as lesionlib writes them (spec: Derivatives > Imaging data types > Masks)."""

# bids-validator 1.x (the "legacy" JavaScript validator) validates every dataset against the rules of
# *raw* BIDS: it has no rules for BIDS-Derivatives file names (bids-standard/legacy-validator#637; the
# schema validator 2.x has them). Run unconfigured on a derivative dataset that holds only masks it reports
#   NOT_INCLUDED (code 1) on every mask and sidecar, and
#   NO_VALID_DATA_FOUND_FOR_SUBJECT (code 67) on every sub-* folder (it counts only raw files as data).
# (Marking the masks in a .bidsignore instead turns the second into SUBJECT_FOLDERS, code 45.) The BIDS
# specification defines these files for derivatives (common derivatives, "Masks":
# <source entities>[_space-<label>][_desc-<label>]_mask.nii.gz with a JSON sidecar, Type and Sources), so
# this configuration drops the issues of exactly those file names ("ignoredFiles" only drops issues
# attached to a matching path: a misnamed or stray file is still an error, see the negative control
# below) and the subject-level consequence (67). Everything else stays: dataset_description.json against
# the JSON schema (GeneratedBy required for DatasetType derivative), README, stray files, empty files.
# What the validator can no longer see on the masks (their names in full, sidecar content, NIfTI
# headers), this test checks itself (MASK_NAME, Sources, dtype and affine).
VALIDATOR_CONFIG = {
    "ignore": [67],
    "ignoredFiles": ["/sub-*/ses-*/anat/sub-*_ses-*_desc-*_mask.nii.gz",
                     "/sub-*/ses-*/anat/sub-*_ses-*_desc-*_mask.json"],
}


class AboveMeanNet(nn.Module):
    """Two-class logits marking z-scored voxels above 0.5 as lesion (a stand-in for a trained model)."""

    size_divisor = 1
    encoder_pretrained = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x - 0.5], dim=1)


@pytest.fixture
def cohorts(isolated_roots, make_atlas_tree, make_child_tree):
    """Two tiny source datasets named as the manifest's synthetic cohorts: 2 adults (ATLAS layout), 3 child images."""
    adult_root = make_atlas_tree(isolated_roots["data"] / "adult", lesion_voxels={"r001s001": 9, "r001s002": 12},
                                 shape=(16, 16, 16))
    child_root = make_child_tree(isolated_roots["data"] / "child",
                                 lesion_voxels={("01", "1"): 10, ("01", "2"): 11, ("02", "1"): 8}, shape=(14, 16, 12))
    adults = discover_atlas(adult_root, "synthetic_adult", volumes=False)
    children = discover_child_bids(child_root, "synthetic_child", volumes=False)
    return {"adult_root": adult_root, "child_root": child_root, "adults": adults, "children": children}


def _description(root: Path) -> dict:
    return json.loads((root / bids.DESCRIPTION_FILE).read_text())


def _resolve_source(root: Path, uri: str) -> Path:
    """A ``bids:<link>:<path>`` URI of a derivative dataset, resolved through its ``DatasetLinks``."""
    scheme, link, rel = uri.split(":", 2)
    assert scheme == "bids"
    return Path(unquote(urlparse(_description(root)["DatasetLinks"][link]).path)) / rel


def _check_derivative_dataset(root: Path, records, source_root: Path) -> None:
    """The description's required fields, and every record's mask + sidecar named and placed as BIDS wants."""
    desc = _description(root)
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] == bids.BIDS_VERSION
    assert root.name in desc["Name"]
    [generated] = desc["GeneratedBy"]
    assert generated["Name"] == "lesionlib" and generated["Version"] == lesionlib.__version__
    assert generated["Description"]
    [source] = desc["SourceDatasets"]
    assert source["URL"] == source_root.resolve().as_uri() == desc["DatasetLinks"][bids.SOURCE_LINK]
    assert (root / "README").read_text().startswith(f"# {desc['Name']}")
    masks = sorted(root.rglob("*_mask.nii.gz"))
    assert len(masks) == len(records)
    for rec in records:
        path = bids.prediction_mask_path(root.parent, rec)
        assert path in masks and MASK_NAME.match(path.name)
        assert path.parent == root / f"sub-{rec.subject}" / f"ses-{rec.session}" / "anat"
        img, source_img = nib.load(path), nib.load(rec.image_path)
        assert img.get_data_dtype() == np.uint8 and img.shape == source_img.shape
        np.testing.assert_allclose(img.affine, source_img.affine, atol=1e-5)
        sidecar = json.loads(bids.sidecar_path(path).read_text())
        assert sidecar["Type"] == "Lesion"
        assert [_resolve_source(root, s) for s in sidecar["Sources"]] == [Path(rec.image_path).resolve()]


# --------------------------------------------------------------------------- (a) layout and descriptions
def test_adult_and_child_predictions_form_separate_derivative_datasets(cohorts, tmp_path):
    out = tmp_path / "predictions"
    records = cohorts["children"][:1] + cohorts["adults"] + cohorts["children"][1:]  # mixed on purpose
    paths = predict_records(AboveMeanNet(), records, out, spacing_mm=(3.0, 3.0, 3.0), patch_size=(16, 16, 16),
                            device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_adult", "synthetic_child"]
    assert [p.relative_to(out).parts[0] for p in paths] == [r.dataset for r in records]
    assert paths[1].name == "sub-r001s001_ses-1_space-MNI152NLin2009aSym_desc-lesion_mask.nii.gz"
    assert paths[0].name == "sub-01_ses-1_desc-lesion_mask.nii.gz"  # native space: no space entity
    _check_derivative_dataset(out / "synthetic_adult", cohorts["adults"], cohorts["adult_root"])
    _check_derivative_dataset(out / "synthetic_child", cohorts["children"], cohorts["child_root"])
    child = _description(out / "synthetic_child")
    assert "DOI" not in child["SourceDatasets"][0]  # synthetic data: no citation DOI
    assert "AboveMeanNet" in child["GeneratedBy"][0]["Description"]
    sidecar = json.loads(bids.sidecar_path(paths[1]).read_text())
    assert sidecar["Sources"] == [
        "bids:source:Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"]


def test_dataset_description_is_written_once_and_identical_when_rewritten(cohorts, tmp_path):
    rec = cohorts["children"][0]
    root = bids.write_prediction_dataset(tmp_path, rec, description="grid cell x")
    files = {name: (root / name) for name in (bids.DESCRIPTION_FILE, "README")}
    before = {name: (p.read_bytes(), p.stat().st_ino) for name, p in files.items()}
    bids.write_prediction_dataset(tmp_path, rec, description="grid cell x", overwrite=True)
    assert {name: (p.read_bytes(), p.stat().st_ino) for name, p in files.items()} == before  # not even rewritten
    bids.write_prediction_dataset(tmp_path, rec, description="another writer")  # the first writer describes it
    assert _description(root)["GeneratedBy"][0]["Description"] == "grid cell x"
    bids.write_prediction_dataset(tmp_path, rec, description="grid cell y", overwrite=True)
    assert _description(root)["GeneratedBy"][0]["Description"] == "grid cell y"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    with pytest.raises(ValueError, match="cannot name a folder"):
        bids.prediction_root(tmp_path, "../elsewhere")


def test_source_datasets_carry_the_citation_doi_of_real_data_only(tmp_path):
    atlas = bids.prediction_dataset_description("atlas_v2", tmp_path / "atlas", description="d")
    assert atlas["SourceDatasets"] == [{"URL": (tmp_path / "atlas").as_uri(),
                                        "DOI": "doi:10.1038/s41597-022-01401-7"}]
    assert atlas["Name"].endswith("atlas_v2, real data")
    for dataset in ("child_cohort", "synthetic_adult"):  # no DOI in the citation; synthetic
        assert "DOI" not in bids.prediction_dataset_description(dataset, tmp_path, description="d")["SourceDatasets"][0]
    # a stand-in laid out as the real data but declaring itself synthetic is not cited as ATLAS
    (tmp_path / "standin").mkdir()
    (tmp_path / "standin" / bids.DESCRIPTION_FILE).write_text(json.dumps({"Name": "x", "Synthetic": True}))
    assert "DOI" not in bids.prediction_dataset_description("atlas_v2", tmp_path / "standin",
                                                            description="d")["SourceDatasets"][0]
    unknown = bids.prediction_dataset_description("toy", tmp_path, description="d")  # not in the manifest
    assert unknown["SourceDatasets"] == [{"URL": tmp_path.as_uri()}] and unknown["Name"].endswith("on toy")


def _empty_mask(rec) -> nib.Nifti1Image:
    source = nib.load(rec.image_path)
    return nib.Nifti1Image(np.zeros(source.shape, np.uint8), source.affine)


def test_lesiongnb_and_nnunet_segmenters_write_into_the_derivative_datasets(cohorts, tmp_path, monkeypatch):
    """Both segmenters' prediction paths (their models stubbed: only where the masks go is under test)."""
    from lesionlib.baselines import gnb
    from lesionlib.segmenters.lesiongnb import LesionGnbSegmenter, LesionGnbSettings
    from lesionlib.segmenters.nnunet import MODEL_RECORD, STAGING_DIR, NnUNetSegmenter, NnUNetSettings

    records = cohorts["adults"] + cohorts["children"]

    class StubGnb:
        def predict(self, rec):
            return _empty_mask(rec)

    monkeypatch.setattr(gnb.LesionGnb, "load", classmethod(lambda cls, path: StubGnb()))
    out = tmp_path / "gnb"
    paths = LesionGnbSegmenter(LesionGnbSettings(), model_dir=tmp_path / "gnb_model").predict(records, out)
    assert paths == [bids.prediction_mask_path(out, r) for r in records]
    _check_derivative_dataset(out / "synthetic_adult", cohorts["adults"], cohorts["adult_root"])
    _check_derivative_dataset(out / "synthetic_child", cohorts["children"], cohorts["child_root"])
    assert "LesionGnb" in _description(out / "synthetic_adult")["GeneratedBy"][0]["Description"]

    class StubRun:
        """Writes masks where NnUNetRun.predict does (the generic tree under its out_dir)."""

        def predict(self, recs, out_dir, **kwargs):
            return [save_nifti_atomic(_empty_mask(r), bids.prediction_path(out_dir, r.subject, r.session))
                    for r in recs]

    model_dir = tmp_path / "nnunet_model"
    model_dir.mkdir()
    (model_dir / MODEL_RECORD).write_text(json.dumps({"model_dir": "m", "folds": ["all"]}))
    segmenter = NnUNetSegmenter(NnUNetSettings(), model_dir=model_dir, shared_dir=tmp_path / "shared")
    monkeypatch.setattr(segmenter, "_run", lambda dataset: StubRun())
    out = tmp_path / "nnunet"
    paths = segmenter.predict(records, out)
    assert paths == [bids.prediction_mask_path(out, r) for r in records]
    assert not (out / STAGING_DIR).exists()
    _check_derivative_dataset(out / "synthetic_adult", cohorts["adults"], cohorts["adult_root"])
    _check_derivative_dataset(out / "synthetic_child", cohorts["children"], cohorts["child_root"])
    assert "nnU-Net" in _description(out / "synthetic_child")["GeneratedBy"][0]["Description"]


# --------------------------------------------------------------------------- (b) the BIDS validator
def bids_validator() -> Path | None:
    """The bids-validator executable of ``scripts/bids_validator.sh`` (or on PATH), ``None`` if absent."""
    prefix = Path(os.environ.get("LESIONLIB_NODE") or Path.home() / ".cache" / "lesionlib" / "node")
    for candidate in (prefix / "node_modules" / ".bin" / "bids-validator", shutil.which("bids-validator")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def run_validator(exe: Path, root: Path, config: Path) -> dict:
    """The validator's ``--json`` report on the dataset at ``root``."""
    proc = subprocess.run([str(exe), "--json", "--config", str(config), str(root)], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip(), f"no report from {exe} on {root}: rc {proc.returncode}, {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def _codes(report: dict, severity: str) -> list[str]:
    return sorted(issue["key"] for issue in report["issues"][severity])




@pytest.fixture
def tiny_cell(tiny_profile):
    """A tiny U-Net cell (test_cells' tiny profile) trained and evaluated by :mod:`lesionlib.cells` (seconds)."""
    from lesionlib.cells import evaluate_cell, open_cell, train_cell

    isolated_roots = tiny_profile
    base = isolated_roots["data"] / "synthetic" / "tiny"
    run_id = "unet_adult-full_seed0"
    run_dir = isolated_roots["results"] / "tiny" / run_id
    cell = open_cell("tiny", run_id, run_dir, results_root=isolated_roots["results"])
    metrics = evaluate_cell(cell, train_cell(cell))
    return {"cell": cell, "run_id": run_id, "run_dir": run_dir, "predictions": run_dir / "predictions",
            "metrics": metrics, "sources": {"synthetic_adult": base / "adult", "synthetic_child": base / "child"}}


def test_cell_writes_one_described_derivative_dataset_per_source_dataset(tiny_cell):
    run_dir, predictions, cell = tiny_cell["run_dir"], tiny_cell["predictions"], tiny_cell["cell"]
    assert sorted(p.name for p in predictions.iterdir()) == ["synthetic_adult", "synthetic_child"]
    on_disk = pd.read_csv(run_dir / "metrics.csv")
    assert len(on_disk) == len(tiny_cell["metrics"])
    for rel, subject in zip(on_disk["pred_path"], on_disk["subject"].astype(str)):
        dataset = "synthetic_adult" if subject.startswith("r") else "synthetic_child"
        assert Path(rel).parts[:2] == ("predictions", dataset) and (run_dir / rel).is_file()
    for dataset, source in tiny_cell["sources"].items():
        records = [r for r in cell.splits.adult + cell.splits.child if r.dataset == dataset
                   and bids.prediction_mask_path(predictions, r).is_file()]
        assert records
        _check_derivative_dataset(predictions / dataset, records, source)
        described = _description(predictions / dataset)["GeneratedBy"][0]["Description"]
        assert described == f"grid cell {tiny_cell['run_id']} of profile tiny: U-Net trained on adult_full, seed 0"


def test_bids_validator_accepts_each_derivative_dataset_of_a_cell(tiny_cell, tmp_path):
    """bids-validator 1.15.0 on each derivative root of a cell: zero errors (configuration: see VALIDATOR_CONFIG)."""
    exe = bids_validator()
    if exe is None:
        pytest.skip("bids-validator not installed: run scripts/bids_validator.sh (npm bids-validator@1.15.0 into "
                    "$LESIONLIB_NODE, default ~/.cache/lesionlib/node)")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if version != VALIDATOR_VERSION:
        pytest.skip(f"{exe} is bids-validator {version or '?'}; this test is written for {VALIDATOR_VERSION}")
    predictions = tiny_cell["predictions"]
    config = tmp_path / "bids-validator-config.json"
    config.write_text(json.dumps(VALIDATOR_CONFIG))
    for dataset in ("synthetic_adult", "synthetic_child"):
        report = run_validator(exe, predictions / dataset, config)
        assert report["issues"]["errors"] == [], json.dumps(report["issues"]["errors"], indent=1)[:3000]
        assert set(_codes(report, "warnings")) <= {"NO_AUTHORS"}, _codes(report, "warnings")

    # negative controls: the configuration does not hide what the validator can see
    broken = tmp_path / "broken"
    shutil.copytree(predictions / "synthetic_child", broken)
    (broken / bids.DESCRIPTION_FILE).unlink()
    assert "DATASET_DESCRIPTION_JSON_MISSING" in _codes(run_validator(exe, broken, config), "errors")
    shutil.copytree(predictions / "synthetic_child", broken, dirs_exist_ok=True)
    mask = next(broken.rglob("*_desc-lesion_mask.nii.gz"))
    shutil.copy(mask, mask.with_name(mask.name.replace("_desc-", "_dsc-")))  # a typo in an entity
    assert "NOT_INCLUDED" in _codes(run_validator(exe, broken, config), "errors")
