"""Fault injection (#15): broken files as a user's real data has them, through the command line.

A child BIDS tree gets one subject per kind of damage (corrupt headers made by editing header
bytes, a truncated gzip, unsupported voxel types, NaN/inf, a 1e6 mm voxel, a constant image,
masks that are non-binary, empty, missing or off the image's grid, a subject entered twice, an
unreadable file) plus two valid subjects. For each data-reading subcommand the properties are the
same: exit code 1, every bad file named exactly once (``<path>: <problem>``), no valid file named,
no "Traceback", and nothing written under the dataset, the results root or the output folder.
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from lesionlib import bids
from lesionlib.cli import main

SHAPE = (10, 12, 8)
AFFINE = np.array([[-3.0, 0, 0, 15], [0, -3.0, 0, 18], [0, 0, 3.6, -14], [0, 0, 0, 1]])  # LPS, as make_child_tree
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# NIfTI-1 header fields: (byte offset, struct format)
DIM = (40, "<8h")
DATATYPE = (70, "<h")
VOX_OFFSET = (108, "<f")
SROW_X = (280, "<4f")
MAGIC = (344, "4s")


@pytest.fixture(autouse=True)
def isolate(monkeypatch: pytest.MonkeyPatch, isolated_roots: dict[str, Path]) -> dict[str, Path]:
    for var in ("ATLAS_V2_ROOT", "CHILD_BIDS_ROOT", "LESIONLIB_MANIFEST", "MEDICALNET_RESNET10"):
        monkeypatch.delenv(var, raising=False)
    return isolated_roots


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``roots`` (files and folders, with size, mtime and mode): equal means nothing written."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                st = p.lstat()
                out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns, st.st_mode)
    return out


def patch_header(path: Path, field: tuple[int, str], *values) -> None:
    """Overwrite one header field of a ``.nii.gz`` in place (decompress, pack, recompress)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    offset, fmt = field
    struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(gzip.compress(bytes(raw)))


def dims(path: Path) -> list[int]:
    return list(struct.unpack_from(DIM[1], gzip.decompress(path.read_bytes()), DIM[0]))


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32) + 0.5


# Each fault damages subject ``label`` of the tree at ``root`` and returns the files that must be named.
Fault = Callable[[Path, str], list[Path]]


def _image(root: Path, label: str) -> Path:
    return bids.child_t1w_path(root, label, "1")


def _mask(root: Path, label: str) -> Path:
    return bids.child_mask_path(root, label, "1")


def f_datatype(root, label):  # unknown datatype code
    patch_header(_image(root, label), DATATYPE, 999)
    return [_image(root, label)]


def f_vox_offset(root, label):  # voxel data "start" far beyond the end of the file
    patch_header(_image(root, label), VOX_OFFSET, 1e9)
    return [_image(root, label)]


def f_negative_dim(root, label):
    d = dims(_image(root, label))
    d[2] = -5
    patch_header(_image(root, label), DIM, *d)
    return [_image(root, label)]


def f_dim_count(root, label):  # dim[0] out of 1..7 (nibabel then guesses the wrong byte order)
    d = dims(_image(root, label))
    d[0] = 9
    patch_header(_image(root, label), DIM, *d)
    return [_image(root, label)]


def f_magic(root, label):
    patch_header(_image(root, label), MAGIC, b"xx\0\0")
    return [_image(root, label)]


def f_nan_affine(root, label):
    patch_header(_image(root, label), SROW_X, float("nan"), 0.0, 0.0, 15.0)
    return [_image(root, label)]


def f_truncated_gzip(root, label):
    data = _image(root, label).read_bytes()
    _image(root, label).write_bytes(data[: len(data) // 2])
    return [_image(root, label)]


def f_complex(root, label):
    save(_image(root, label), noise().astype(np.complex64))
    return [_image(root, label)]


def f_rgb(root, label):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = 9
    save(_image(root, label), rgb)
    return [_image(root, label)]


def f_nan(root, label):
    data = noise()
    data[1, 2, 3] = np.nan
    save(_image(root, label), data)
    return [_image(root, label)]


def f_inf_mask(root, label):
    data = np.asarray(nib.load(_mask(root, label)).dataobj).astype(np.float32)
    data[0, 0, 0] = np.inf
    save(_mask(root, label), data)
    return [_mask(root, label)]


def f_huge_voxels(root, label):
    save(_image(root, label), noise(), np.diag([1e6, 1e6, 1e6, 1.0]))
    return [_image(root, label)]


def f_constant(root, label):
    save(_image(root, label), np.zeros(SHAPE, np.int16))
    return [_image(root, label)]


def f_grid_shift(root, label):
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    save(_mask(root, label), np.asarray(nib.load(_mask(root, label)).dataobj), shifted)
    return [_mask(root, label)]


def f_grid_shape(root, label):
    data = np.zeros((10, 12, 9), np.uint8)
    data[4:6, 4:6, 4] = 1
    save(_mask(root, label), data)
    return [_mask(root, label)]


def f_mask_255(root, label):
    save(_mask(root, label), (np.asarray(nib.load(_mask(root, label)).dataobj) * 255).astype(np.uint8))
    return [_mask(root, label)]


def f_mask_labels(root, label):
    data = np.asarray(nib.load(_mask(root, label)).dataobj).astype(np.int16)
    data[0, 0, 0] = 2
    save(_mask(root, label), data)
    return [_mask(root, label)]


def f_mask_empty(root, label):
    save(_mask(root, label), np.zeros(SHAPE, np.uint8))
    return [_mask(root, label)]


def f_mask_missing(root, label):
    _mask(root, label).unlink()
    return [_mask(root, label)]


def f_duplicate(root, label):  # the same child entered twice, the labels differing only in case
    twin = label.upper()
    for src, dst in ((_image(root, label), _image(root, twin)), (_mask(root, label), _mask(root, twin))):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return [_image(root, label), _image(root, twin)]


def f_unreadable(root, label):
    _image(root, label).chmod(0)
    return [_image(root, label)]


FAULTS: dict[str, tuple[Fault, str]] = {  # label -> (fault, pattern of its problem)
    "hdrdatatype": (f_datatype, r"corrupt NIfTI header \(HeaderDataError: data code 999 not recognized\)"),
    "hdrvoxoffset": (f_vox_offset, r"corrupt NIfTI header: 3840 bytes of voxel data \(shape \(10, 12, 8\) of float32\) "
                                   r"at offset 1e\+09 end beyond what a \d+-byte gzip file can hold"),
    "hdrnegdim": (f_negative_dim, r"corrupt NIfTI header: image shape \(10, -5, 8\) has no voxels"),
    "hdrdimcount": (f_dim_count, r"corrupt NIfTI header"),
    "hdrmagic": (f_magic, r"not a readable NIfTI image"),
    "hdrnanaffine": (f_nan_affine, r"affine has non-finite entries"),
    "truncgz": (f_truncated_gzip, r"truncated or corrupt compressed file"),
    "complex": (f_complex, r"unsupported voxel data type complex64"),
    "rgb": (f_rgb, r"unsupported voxel data type RGB"),
    "nan": (f_nan, r"image has 1 non-finite voxels \(1 NaN, 0 inf\)"),
    "maskinf": (f_inf_mask, r"mask has 1 non-finite voxels \(0 NaN, 1 inf\)"),
    "hugevoxels": (f_huge_voxels, r"implausible voxel size 1e\+06 x 1e\+06 x 1e\+06 mm"),
    "constant": (f_constant, r"image is constant \(every voxel is 0\)"),
    "gridshift": (f_grid_shift, r"mask is not on the grid of its image .*place voxels up to 5 mm apart"),
    "gridshape": (f_grid_shape, r"mask is not on the grid of its image .*shape \(10, 12, 9\) vs \(10, 12, 8\)"),
    "mask255": (f_mask_255, r"mask is not binary: .*values found: 0, 255\. .*fslmaths MASK -bin MASK"),
    "masklabels": (f_mask_labels, r"mask is not binary: .*values found: 0, 1, 2\."),
    "maskempty": (f_mask_empty, r"lesion mask is empty"),
    "maskmissing": (f_mask_missing, r"lesion mask missing: file does not exist"),
    "dup": (f_duplicate, r"duplicate subject: sub-(dup and sub-DUP|DUP and sub-dup) differ only in letter case"),
}
if not IS_ROOT:  # root reads any file whatever its mode: simulated in test_unreadable_file_is_one_line
    FAULTS["unreadable"] = (f_unreadable, r"permission denied")

IMAGE_FAULTS = {"hdrdatatype", "hdrvoxoffset", "hdrnegdim", "hdrdimcount", "hdrmagic", "hdrnanaffine", "truncgz",
                "complex", "rgb", "nan", "hugevoxels", "constant", "dup", "unreadable"}


@pytest.fixture
def faulty_tree(make_child_tree, tmp_path) -> tuple[Path, dict[str, list[Path]], list[Path]]:
    """(root, {fault label: files it must name}, files that are valid and must never be named)."""
    labels = ["good1", "good2", *FAULTS]
    root = make_child_tree(root=tmp_path / "child", lesion_voxels={(label, "1"): 6 for label in labels})
    bad = {label: fault(root, label) for label, (fault, _) in FAULTS.items()}
    good = [p for label in ("good1", "good2") for p in (_image(root, label), _mask(root, label))]
    return root, bad, good


def assert_named_once(output: str, bad: dict[str, list[Path]], good: list[Path], labels: set[str]) -> None:
    """Each file of the faults in ``labels`` on exactly one line of ``output`` (with its problem), no other file."""
    import re

    lines = output.splitlines()
    assert "Traceback" not in output
    for label in sorted(labels):
        pattern = FAULTS[label][1]
        for path in bad[label]:
            hits = [line for line in lines if str(path) in line]
            assert output.count(str(path)) == 1 and len(hits) == 1, (label, path, hits)
            assert re.search(pattern, hits[0]), (label, hits[0])
    for label in set(bad) - labels:
        for path in bad[label]:
            assert str(path) not in output, (label, path)
    for path in good:
        assert str(path) not in output, path


def run_main(argv: list[str], capsys, caplog) -> tuple[int, str]:
    """``lesionlib.cli.main(argv)``: exit code, and stderr plus everything logged (what a terminal shows)."""
    caplog.clear()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err + captured.out + "\n" + "\n".join(r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ validate
def test_validate_names_every_bad_file_once_without_traceback(faulty_tree, isolate, tmp_path):
    """The acceptance run of #15, as a user types it: a real process, its real stderr."""
    root, bad, good = faulty_tree
    before = snapshot(root, isolate["results"], isolate["data"])
    env = {**os.environ, "LESIONLIB_RESULTS": str(isolate["results"]), "LESIONLIB_DATA": str(isolate["data"])}
    proc = subprocess.run([sys.executable, "-m", "lesionlib", "validate", "--dataset", "child_cohort",
                           "--root", str(root)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert_named_once(proc.stderr + proc.stdout, bad, good, set(FAULTS))
    n_files = sum(len(v) for v in bad.values())
    assert f"{n_files} file(s) failed validation" in proc.stderr
    assert snapshot(root, isolate["results"], isolate["data"]) == before


def test_evaluate_purpose_warns_about_the_empty_mask_once(faulty_tree, capsys, caplog):
    root, bad, good = faulty_tree
    code, out = run_main(["validate", "--dataset", "child_cohort", "--root", str(root), "--no-progress",
                          "--purpose", "evaluate"], capsys, caplog)
    assert code == 1
    assert_named_once(out, bad, good, set(FAULTS))
    [warning] = [r for r in caplog.records if str(bad["maskempty"][0]) in r.getMessage()]
    assert warning.levelname == "WARNING" and "kept for evaluation" in warning.getMessage()


def test_unreadable_file_is_one_line(make_child_tree, capsys, caplog, monkeypatch):
    root = make_child_tree(lesion_voxels={("01", "1"): 5, ("02", "1"): 5})
    locked = _image(root, "02")
    locked.chmod(0)
    if IS_ROOT:  # permissions do not stop root: make the check see what any other user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    try:
        code, out = run_main(["validate", "--dataset", "child_cohort", "--root", str(root), "--no-progress"],
                             capsys, caplog)
    finally:
        locked.chmod(0o644)
    assert code == 1 and "Traceback" not in out
    assert [line for line in out.splitlines() if str(locked) in line] == [
        f"{locked}: permission denied: the file cannot be read by this user (fix its permissions, e.g. chmod a+r)"]


def test_duplicate_participant_rows_are_one_line(make_child_tree, capsys, caplog, isolate):
    root = make_child_tree(lesion_voxels={("01", "1"): 5, ("02", "1"): 5},
                           participants=[("01", 12, "F", "a"), ("02", 20, "M", "a"), ("01", 30, "M", "b")])
    before = snapshot(root, isolate["results"])
    code, out = run_main(["validate", "--dataset", "child_cohort", "--root", str(root), "--no-progress"],
                         capsys, caplog)
    tsv = root / "participants.tsv"
    assert code == 1 and "Traceback" not in out
    assert [line for line in out.splitlines() if str(tsv) in line] == [
        f"{tsv}: duplicate subject: participant_id sub-01 listed more than once (age, sex and site would be "
        "ambiguous); keep one row per participant"]
    assert snapshot(root, isolate["results"]) == before


# ------------------------------------------------------------------------------------ every other path
def _profile_on(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A profile 'faulty' whose cohorts are the BIDS tree ``root``; returns the CLI arguments naming it."""
    path = tmp_path / "experiments.yaml"
    path.write_text("profiles:\n  faulty:\n    device: cpu\n"
                    "    data: {adult_dataset: child_cohort, child_dataset: child_cohort, n_adult: 2, n_children: 2}\n"
                    "    splits: {few_shot_n: 1}\n")
    monkeypatch.setenv("LESIONLIB_EXPERIMENTS", str(path))
    monkeypatch.setenv("CHILD_BIDS_ROOT", str(root))
    return ["--profile", "faulty"]


def test_train_stops_before_training_naming_every_bad_file(faulty_tree, capsys, caplog, isolate, tmp_path,
                                                           monkeypatch):
    import lesionlib.train

    monkeypatch.setattr(lesionlib.train, "train", lambda *a, **k: pytest.fail("train() reached with bad data"))
    root, bad, good = faulty_tree
    out_dir = isolate["results"] / "runs" / "unet"
    before = snapshot(root, isolate["results"])
    code, out = run_main(["train", *_profile_on(root, tmp_path, monkeypatch), "--out", str(out_dir),
                          "--no-progress"], capsys, caplog)
    assert code == 1
    # the whole dataset is checked first; an empty mask only matters once it is chosen for training
    assert_named_once(out, bad, good, set(FAULTS) - {"maskempty"})
    assert snapshot(root, isolate["results"]) == before and not out_dir.exists()


def test_train_on_a_0_255_mask_stops_naming_it(make_child_tree, capsys, caplog, isolate, monkeypatch, tmp_path):
    """Acceptance of #15: `lesionlib train` on a dataset with a {0, 255} mask stops before training."""
    import lesionlib.train

    monkeypatch.setattr(lesionlib.train, "train", lambda *a, **k: pytest.fail("train() reached with a {0, 255} mask"))
    root = make_child_tree(lesion_voxels={("01", "1"): 6, ("01", "2"): 7, ("02", "1"): 5, ("02", "2"): 8})
    scaled = _mask(root, "02")
    f_mask_255(root, "02")
    out_dir = isolate["results"] / "runs" / "unet"
    code, out = run_main(["train", *_profile_on(root, tmp_path, monkeypatch), "--out", str(out_dir), "--no-progress"],
                         capsys, caplog)
    assert code == 1 and "Traceback" not in out and not out_dir.exists()
    [line] = [line for line in out.splitlines() if str(scaled) in line]
    assert line.startswith(f"{scaled}: mask is not binary") and "values found: 0, 255" in line


def test_train_rejects_an_empty_mask_in_the_training_set(make_child_tree, capsys, caplog, isolate, monkeypatch,
                                                         tmp_path):
    import lesionlib.train

    monkeypatch.setattr(lesionlib.train, "train", lambda *a, **k: pytest.fail("train() reached with an empty mask"))
    root = make_child_tree(lesion_voxels={("01", "1"): 6, ("02", "1"): 0, ("03", "1"): 5})
    out_dir = isolate["results"] / "runs" / "unet"
    code, out = run_main(["train", *_profile_on(root, tmp_path, monkeypatch), "--out", str(out_dir), "--no-progress"],
                         capsys, caplog)
    empty = _mask(root, "02")
    assert code == 1 and "Traceback" not in out and not out_dir.exists()
    assert out.count(str(empty)) == 1 and f"{empty}: lesion mask is empty" in out


def test_predict_names_every_bad_image_and_writes_nothing(faulty_tree, capsys, caplog, isolate, tmp_path):
    root, bad, good = faulty_tree
    out_dir = tmp_path / "predictions"
    before = snapshot(root, isolate["results"])
    code, out = run_main(["predict", "--dataset", "child_cohort", "--root", str(root), "--out", str(out_dir),
                          "--checkpoint", str(tmp_path / "never_read.pt"), "--no-progress", "--device", "cpu"],
                         capsys, caplog)
    assert code == 1
    assert_named_once(out, bad, good, IMAGE_FAULTS & set(FAULTS))  # masks are not read for prediction
    assert snapshot(root, isolate["results"]) == before and not out_dir.exists()


def test_nnunet_export_names_every_bad_file_and_writes_nothing(faulty_tree, capsys, caplog, isolate, tmp_path):
    root, bad, good = faulty_tree
    run_dir = tmp_path / "nnunet"
    before = snapshot(root, isolate["results"])
    code, out = run_main(["nnunet", "export", "--run-dir", str(run_dir), "--dataset-id", "501", "--dataset-name",
                          "Child", "--records", "child_cohort", "--root", str(root), "--device", "cpu"],
                         capsys, caplog)
    assert code == 1
    assert_named_once(out, bad, good, set(FAULTS))
    assert snapshot(root, isolate["results"]) == before and not run_dir.exists()


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_lesiongnb_rejects_bad_files_before_fitting_or_writing(command, faulty_tree, capsys, caplog, isolate,
                                                               tmp_path, monkeypatch):
    from lesionlib.baselines import gnb

    def reached(*args, **kwargs):
        raise AssertionError("LesionGnb reached with invalid records")

    monkeypatch.setattr(gnb.LesionGnb, "fit", reached)
    monkeypatch.setattr(gnb.LesionGnb, "load", classmethod(lambda cls, path: cls()))
    monkeypatch.setattr(gnb.LesionGnb, "predict", reached)
    root, bad, good = faulty_tree
    out_dir = tmp_path / "gnb"
    extra = ["--model", str(out_dir / "gnb.joblib")] + (["--out", str(out_dir)] if command == "predict" else [])
    before = snapshot(root, isolate["results"])
    code, out = run_main(["lesiongnb", command, "--dataset", "child_cohort", "--root", str(root), "--no-progress",
                          *extra], capsys, caplog)
    assert code == 1
    assert_named_once(out, bad, good, set(FAULTS) if command == "fit" else IMAGE_FAULTS & set(FAULTS))
    assert snapshot(root, isolate["results"]) == before and not out_dir.exists()


def test_pipeline_loader_never_thresholds_a_mask(make_child_tree):
    """Even past validation, the training loader refuses a {0, 255} mask instead of reading it as > 0."""
    from lesionlib.io import DataValidationError
    from lesionlib.transforms import LoadRecordd

    root = make_child_tree(lesion_voxels={("01", "1"): 6})
    [mask] = f_mask_255(root, "01")
    with pytest.raises(DataValidationError, match="values found: 0, 255") as err:
        LoadRecordd()({"image": str(_image(root, "01")), "label": str(mask)})
    assert err.value.path == mask


def test_predict_records_validates_every_image_before_writing(make_child_tree, tmp_path):
    import torch

    from lesionlib.data.discovery import discover_child_bids
    from lesionlib.data.validate import DataValidationErrors
    from lesionlib.predict import predict_records

    root = make_child_tree(lesion_voxels={("01", "1"): 6, ("02", "1"): 5, ("03", "1"): 4})
    bad = f_nan(root, "02") + f_constant(root, "03")
    f_mask_missing(root, "01")  # prediction does not need masks
    out = tmp_path / "out"
    with pytest.raises(DataValidationErrors) as err:
        predict_records(torch.nn.Conv3d(1, 2, 1), discover_child_bids(root), out, spacing_mm=(3.0, 3.0, 3.0),
                        patch_size=(8, 8, 8), device="cpu", progress=False)
    assert [e.path for e in err.value.errors] == bad
    assert not out.exists()


# ------------------------------------------------------------------------------------ loud failures
def test_a_subcommand_module_that_fails_to_import_is_an_error(monkeypatch, capsys):
    import lesionlib.cli

    monkeypatch.setattr(lesionlib.cli, "SUBCOMMAND_MODULES", [*lesionlib.cli.SUBCOMMAND_MODULES,
                                                             "lesionlib.no_such_module"])
    assert main(["validate", "--help"]) == 1
    err = capsys.readouterr().err
    assert "cannot load the subcommands of lesionlib.no_such_module (ModuleNotFoundError" in err
    assert "Traceback" not in err


def test_broken_medicalnet_asset_is_an_error_not_no_weights(tmp_path, monkeypatch, make_child_tree, capsys, caplog,
                                                            isolate):
    from lesionlib.data.manifest import ManifestError
    from lesionlib.models.medicalnet import MedicalNetWeightsError, default_weights_path

    assert default_weights_path() is None  # nothing configured: "no weights" is legitimate
    missing = tmp_path / "resnet_10.pth"
    monkeypatch.setenv("MEDICALNET_RESNET10", str(missing))
    with pytest.raises(ValueError, match=r"resnet_10\.pth: asset 'medicalnet_resnet10' file does not exist .*"
                                         r"point MEDICALNET_RESNET10 at the file"):
        default_weights_path()
    missing.write_bytes(b"not a checkpoint")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == missing else real_access(p, mode, **kw))
    with pytest.raises(MedicalNetWeightsError, match="not readable by this user"):
        default_weights_path()
    monkeypatch.setattr(os, "access", real_access)
    broken = tmp_path / "manifest.yaml"
    broken.write_text("datasets: [this is: not a mapping\n")
    monkeypatch.setenv("LESIONLIB_MANIFEST", str(broken))
    with pytest.raises(ManifestError, match="not valid YAML"):
        default_weights_path()
    monkeypatch.delenv("LESIONLIB_MANIFEST")
    # on the command line: one line naming the file, before the run folder exists
    root = make_child_tree(lesion_voxels={("01", "1"): 6, ("02", "1"): 5, ("03", "1"): 7})
    out_dir = isolate["results"] / "runs" / "resunet"
    code, out = run_main(["train", *_profile_on(root, tmp_path, monkeypatch), "--out", str(out_dir),
                          "--model", "resunet", "--no-progress"], capsys, caplog)
    assert code == 1 and "Traceback" not in out and not out_dir.exists()
    [line] = [line for line in out.splitlines() if str(missing) in line]
    assert line.startswith(f"{missing}: cannot be read as a torch checkpoint")


# ------------------------------------------------------------------------------------ a killed grid run
KILLED_STAGE = '''# %% tags=["parameters"]
out_dir = "."
runner_pid = 0

# %%
import os, signal
from pathlib import Path
Path(out_dir, "metrics.csv").write_text("case_id\\nsub-01_ses-1\\n")
os.kill(runner_pid, signal.SIGKILL)  # the runner dies as under an OOM kill or a cluster time limit
os._exit(1)
'''


def test_killed_grid_stage_leaves_no_cell_that_looks_finished(tmp_path, isolate):
    from lesionlib.reporting.collect import run_status

    notebook = tmp_path / "stage.py"
    notebook.write_text(KILLED_STAGE)
    run_dir = isolate["results"] / "quick" / "unet_adult-full_seed0"
    script = textwrap.dedent(f"""
        import os
        from lesionlib.notebook_runner import run_notebook
        run_notebook({str(notebook)!r}, {str(run_dir)!r}, stage="evaluate",
                     parameters=lambda d: {{"out_dir": str(d), "runner_pid": os.getpid()}}, timeout_s=120)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list((run_dir / ".partial-evaluate").glob("metrics.csv"))  # the cell did run before the kill
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "params.yaml").exists()
    assert not [p for p in run_dir.glob("*.ipynb")]
    [status] = run_status(isolate["results"], "quick")
    assert status.status == "running" and not status.notebooks
