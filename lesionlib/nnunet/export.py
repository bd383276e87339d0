"""Export image records to nnU-Net v2's raw dataset format.

::

    <nnUNet_raw>/Dataset501_Adult/
        imagesTr/<case_id>_0000.nii.gz     T1w, channel 0, on the record's own grid and affine
        labelsTr/<case_id>.nii.gz          lesion mask, uint8 {0, 1}, same grid and affine
        imagesTs/<case_id>_0000.nii.gz     test images (optional; never used for training)
        dataset.json                       channel_names {0: T1}, labels {background: 0, lesion: 1}
        lesionlib_records.json             provenance: the ImageRecord behind every case

Images are written in their native orientation and spacing (RAS or not, anisotropic or not):
nnU-Net reads spacing and direction from the header itself and resamples to its planned
target spacing; predictions come back on the same grid. The case identifier is
``ImageRecord.case_id`` (``sub-<subject>_ses-<session>``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, atomic_path, load_nifti, save_nifti_atomic
from lesionlib.space import grid_mismatch

log = logging.getLogger(__name__)

__all__ = ["FILE_ENDING", "CHANNEL_NAMES", "LABELS", "export_dataset", "check_export_records", "image_file_name",
           "dataset_json"]

FILE_ENDING = ".nii.gz"
CHANNEL_NAMES = {"0": "T1"}
LABELS = {"background": 0, "lesion": 1}


def image_file_name(case_id: str, channel: int = 0) -> str:
    """nnU-Net's image file name: ``('sub-01_ses-1', 0)`` -> ``'sub-01_ses-1_0000.nii.gz'``."""
    return f"{case_id}_{channel:04d}{FILE_ENDING}"


def dataset_json(num_training: int, name: str, description: str = "") -> dict:
    """The ``dataset.json`` nnU-Net v2 needs for a single-channel T1w lesion dataset."""
    return {
        "name": name,
        "description": description,
        "channel_names": dict(CHANNEL_NAMES),
        "labels": dict(LABELS),
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
    }


def _write_json_atomic(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def image_for_nnunet(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A float32 copy of a 3D image with the same affine, qform and sform codes."""
    out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    _copy_orientation_codes(img, out)
    return out


def orientation_codes(img: nib.Nifti1Image) -> tuple[int, int]:
    """``(qform_code, sform_code)`` of an image, each at least 1 ('scanner')."""
    return int(img.header["qform_code"]) or 1, int(img.header["sform_code"]) or 1


def set_geometry(dst: nib.Nifti1Image, affine: np.ndarray, codes: tuple[int, int]) -> None:
    """Put ``affine`` in both qform and sform of ``dst`` (with ``codes``) and matching voxel sizes."""
    dst.set_qform(affine, code=codes[0])
    dst.set_sform(affine, code=codes[1])
    dst.header.set_zooms(tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))


def _copy_orientation_codes(src: nib.Nifti1Image, dst: nib.Nifti1Image) -> None:
    """Set dst's qform and sform to src's affine, keeping src's codes (at least 'scanner' = 1)."""
    set_geometry(dst, src.affine, orientation_codes(src))


def mask_for_nnunet(mask_path: Path, image: nib.Nifti1Image, image_path: Path) -> nib.Nifti1Image:
    """The record's lesion mask as uint8 {0, 1} on exactly the image's grid and affine.

    Raises :class:`DataValidationError` naming the mask file when it is unreadable, not exactly
    {0, 1} (:func:`lesionlib.data.validate.mask_value_problem`; never thresholded) or its grid
    differs from the image's (:func:`lesionlib.space.same_grid`).
    """
    from lesionlib.data.validate import mask_value_problem

    mask = load_nifti(mask_path, role="mask")
    mismatch = grid_mismatch(mask, image)
    if mismatch:
        raise DataValidationError(mask_path, f"mask is not on the grid of its image {Path(image_path).name} "
                                             f"({mismatch})")
    data = np.asarray(mask.dataobj)
    problem = mask_value_problem(data)
    if problem:
        raise DataValidationError(mask_path, problem)
    out = nib.Nifti1Image(data.astype(np.uint8), image.affine)
    _copy_orientation_codes(image, out)
    return out


def check_export_records(records_train: Sequence[ImageRecord], records_test: Iterable[ImageRecord] = (), *,
                         progress: bool = False) -> None:
    """Validate an export before anything is written (:func:`lesionlib.data.validate.require_valid`).

    Training records must be valid for training (mask present, binary, non-empty, on the image's
    grid), test records for prediction (image only).

    Raises
    ------
    DataValidationErrors
        Listing every failing file of both sets.
    """
    from lesionlib.data.validate import DataValidationErrors, require_valid

    errors: list[DataValidationError] = []
    for records, purpose in ((list(records_train), "train"), (list(records_test), "predict")):
        try:
            require_valid(records, purpose=purpose, progress=progress)
        except DataValidationErrors as exc:
            errors += exc.errors
    if errors:
        raise DataValidationErrors(errors)


def export_dataset(
    dataset_dir: Path,
    records_train: Sequence[ImageRecord],
    records_test: Iterable[ImageRecord] = (),
    *,
    description: str = "",
    progress: bool = True,
) -> Path:
    """Write ``records_train`` (with masks) and ``records_test`` as an nnU-Net v2 raw dataset.

    Parameters
    ----------
    dataset_dir
        ``<nnUNet_raw>/DatasetNNN_Name``; created if needed. Existing ``*.nii.gz`` files in its
        ``imagesTr``, ``labelsTr`` and ``imagesTs`` are removed first, so the folder holds
        exactly this export.
    records_train
        Training cases; each needs a ``mask_path``.
    records_test
        Test cases, written to ``imagesTs`` (masks not exported).

    Returns
    -------
    Path
        ``dataset_dir``.

    Raises
    ------
    DataValidationError
        Before anything is written: :func:`lesionlib.data.validate.require_valid` lists every
        training record that is not valid for training (no mask, unreadable file, non-binary or
        empty mask, mask off the image's grid...) and every test image that is not valid for
        prediction.
    ValueError
        No training records, or a case id used twice.
    """
    dataset_dir = Path(dataset_dir)
    records_train = list(records_train)
    records_test = list(records_test)
    if not records_train:
        raise ValueError(f"{dataset_dir}: no training records to export")
    seen: dict[str, ImageRecord] = {}
    for rec in records_train + records_test:
        if rec.case_id in seen:
            raise ValueError(
                f"{dataset_dir}: case id {rec.case_id!r} occurs twice ({seen[rec.case_id].image_path} and "
                f"{rec.image_path}); nnU-Net needs unique case ids")
        seen[rec.case_id] = rec
    check_export_records(records_train, records_test, progress=progress)

    folders = {name: dataset_dir / name for name in ("imagesTr", "labelsTr", "imagesTs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"*{FILE_ENDING}"):
            stale.unlink()

    todo = [(rec, True) for rec in records_train] + [(rec, False) for rec in records_test]
    for rec, is_train in tqdm(todo, desc=f"export {dataset_dir.name}", disable=not progress, unit="case"):
        image = load_nifti(rec.image_path)
        images_dir = folders["imagesTr" if is_train else "imagesTs"]
        save_nifti_atomic(image_for_nnunet(image), images_dir / image_file_name(rec.case_id))
        if is_train:
            mask = mask_for_nnunet(Path(rec.mask_path), image, Path(rec.image_path))  # type: ignore[arg-type]
            save_nifti_atomic(mask, folders["labelsTr"] / f"{rec.case_id}{FILE_ENDING}")

    _write_json_atomic(dataset_json(len(records_train), dataset_dir.name, description), dataset_dir / "dataset.json")
    _write_json_atomic(
        {"train": [r.to_dict() for r in records_train], "test": [r.to_dict() for r in records_test]},
        dataset_dir / "lesionlib_records.json",
    )
    log.info("exported %d training and %d test cases to %s", len(records_train), len(records_test), dataset_dir)
    return dataset_dir
