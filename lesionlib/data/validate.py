"""Validation before any training, and loading of a validated case reoriented to RAS.

Checks per record (each failure is a :class:`~lesionlib.io.DataValidationError` naming the file):

* image: exists, non-empty, completely readable (a truncated ``.nii.gz`` is caught), 3D (a
  trailing singleton 4th axis is accepted), finite voxels, a finite non-singular affine, and an
  orientation (sform or qform code set);
* mask: present, readable, 3D, finite, binary (values in {0, 1}), same shape as the image, and the
  same affine: the world positions (mm) of the 8 corner voxel centres differ by at most
  ``affine_tol_mm`` (default 1e-3 mm);
* records: no case id twice in one dataset.

Validation only reads: it writes nothing, anywhere. :func:`load_case` applies the same checks and
returns the image and mask reoriented to the closest RAS orientation (axis flips and permutations
only, no resampling: the voxel -> world mapping of every voxel is unchanged).
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, as_closest_ras, load_nifti, spacing_mm
from lesionlib.space import GRID_TOL_MM, voxel_displacement_mm

__all__ = [
    "DataValidationErrors",
    "CaseReport",
    "orientation_code",
    "check_record",
    "validation_reports",
    "raise_for_reports",
    "validate_records",
    "load_case",
]

logger = logging.getLogger(__name__)



class DataValidationErrors(DataValidationError):
    """Several files failed validation. ``errors`` lists every one, in record order.

    Its ``path`` and ``problem`` are those of the first failure, so the message still starts
    with a file's path; the rest of the message lists all failures, one per line.
    """

    def __init__(self, errors: Sequence[DataValidationError]):
        if not errors:
            raise ValueError("DataValidationErrors needs at least one error")
        self.errors = list(errors)
        n_files = len({e.path for e in self.errors})
        listing = "\n".join(f"  - {e}" for e in self.errors)
        summary = f"{self.errors[0].problem}\n{len(self.errors)} problem(s) in {n_files} file(s):\n{listing}"
        super().__init__(self.errors[0].path, summary)


@dataclass
class CaseReport:
    """What validation found for one record.

    ``shape`` and ``spacing_mm`` are the image's (voxel axes as stored), ``orientation`` its
    axis codes (e.g. ``'LPS'``: voxel axis 0 points Left...), ``mask_voxels`` the number of
    lesion voxels. Fields are ``None`` where the file could not be read.
    """

    record: ImageRecord
    errors: list[DataValidationError] = field(default_factory=list)
    orientation: str | None = None
    shape: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None
    mask_voxels: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def orientation_code(affine: np.ndarray) -> str:
    """Axis codes of an affine, e.g. ``'RAS'`` or ``'LPS'`` (where each voxel axis points)."""
    return "".join(nib.aff2axcodes(affine))


def _voxels(img: nib.Nifti1Image) -> np.ndarray:
    return np.asanyarray(img.dataobj)


def _check_header(img: nib.Nifti1Image, path: Path, role: str) -> list[DataValidationError]:
    errors = []
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        errors.append(DataValidationError(path, f"{role} affine has non-finite entries"))
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        errors.append(DataValidationError(path, f"{role} affine is singular (zero voxel size or collapsed axes)"))
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        errors.append(DataValidationError(path, f"{role} has no orientation: sform_code and qform_code are both 0"))
    return errors


def _check_finite(data: np.ndarray, path: Path, role: str) -> list[DataValidationError]:
    if not np.issubdtype(data.dtype, np.floating):
        return []
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        n_nan = int(np.count_nonzero(np.isnan(data)))
        return [DataValidationError(path, f"{role} has {bad} non-finite voxels ({n_nan} NaN, {bad - n_nan} inf) of {data.size}")]
    return []


def _load_and_check(record: ImageRecord, *, require_mask: bool, affine_tol_mm: float
                    ) -> tuple[CaseReport, nib.Nifti1Image | None, nib.Nifti1Image | None]:
    report = CaseReport(record=record)
    image_path = Path(record.image_path)
    image = None
    image_grid_ok = False  # the image's own affine is usable for comparing the mask's grid
    try:
        image = load_nifti(image_path, ndim=3)
    except DataValidationError as exc:
        report.errors.append(exc)
    if image is not None:
        report.shape = tuple(int(n) for n in image.shape)
        report.spacing_mm = spacing_mm(image)
        header_errors = _check_header(image, image_path, "image")
        report.errors += header_errors
        image_grid_ok = not header_errors
        if image_grid_ok:
            report.orientation = orientation_code(image.affine)
        report.errors += _check_finite(_voxels(image), image_path, "image")

    mask = None
    if record.mask_path is None:
        if require_mask:
            report.errors.append(DataValidationError(image_path, "no lesion mask recorded for this image"))
        return report, image, None
    mask_path = Path(record.mask_path)
    if not mask_path.exists():
        report.errors.append(DataValidationError(mask_path, f"lesion mask missing: file does not exist (mask of {image_path.name})"))
        return report, image, None
    try:
        mask = load_nifti(mask_path, ndim=3)
    except DataValidationError as exc:
        report.errors.append(exc)
        return report, image, None
    mask_header_errors = _check_header(mask, mask_path, "mask")
    report.errors += mask_header_errors
    data = _voxels(mask)
    finite_errors = _check_finite(data, mask_path, "mask")
    report.errors += finite_errors
    if not finite_errors:
        is_binary = (data == 0) | (data == 1)
        if not is_binary.all():
            others = np.unique(data[~is_binary])
            shown = ", ".join(f"{v:g}" for v in others[:5]) + (", ..." if others.size > 5 else "")
            report.errors.append(DataValidationError(
                mask_path, f"mask is not binary: {int((~is_binary).sum())} voxels have values other than 0 and 1 ({shown})"))
        else:
            report.mask_voxels = int(np.count_nonzero(data))
    if image is not None:
        if tuple(mask.shape) != tuple(image.shape):
            report.errors.append(DataValidationError(
                mask_path, f"mask shape {tuple(mask.shape)} differs from image shape {tuple(image.shape)} ({image_path.name})"))
        elif image_grid_ok and not mask_header_errors:
            mismatch = voxel_displacement_mm(mask.affine, image.affine, image.shape)
            if not np.isfinite(mismatch) or mismatch > affine_tol_mm:
                report.errors.append(DataValidationError(
                    mask_path, f"mask affine differs from the image's ({image_path.name}): voxels are placed up to "
                               f"{mismatch:.4g} mm apart (tolerance {affine_tol_mm:g} mm)"))
    return report, image, mask


def check_record(record: ImageRecord, *, require_mask: bool = True,
                 affine_tol_mm: float = GRID_TOL_MM) -> CaseReport:
    """Run every check on one record; the report lists all its problems (none means valid)."""
    report, _, _ = _load_and_check(record, require_mask=require_mask, affine_tol_mm=affine_tol_mm)
    return report


def validation_reports(records: Sequence[ImageRecord], *, progress: bool = True, n_jobs: int = 1,
                       require_masks: bool = True, affine_tol_mm: float = GRID_TOL_MM) -> list[CaseReport]:
    """One :class:`CaseReport` per record (same order), plus duplicate case-id errors.

    ``n_jobs`` > 1 checks records in threads (decompression and numpy release the GIL).
    """
    def one(rec: ImageRecord) -> CaseReport:
        return check_record(rec, require_mask=require_masks, affine_tol_mm=affine_tol_mm)

    records = list(records)
    bar = dict(total=len(records), desc="validating", unit="case", disable=not progress)
    if n_jobs > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            reports = list(tqdm(pool.map(one, records), **bar))
    else:
        reports = [one(rec) for rec in tqdm(records, **bar)]
    seen = Counter((rec.dataset, rec.case_id) for rec in records)
    for report in reports:
        rec = report.record
        if seen[(rec.dataset, rec.case_id)] > 1:
            report.errors.append(DataValidationError(
                rec.image_path, f"case {rec.case_id} appears {seen[(rec.dataset, rec.case_id)]} times in dataset {rec.dataset}"))
    return reports


def raise_for_reports(reports: Iterable[CaseReport]) -> None:
    """Raise one :class:`DataValidationErrors` listing every failing file, if any report has errors."""
    errors = [e for r in reports for e in r.errors]
    if errors:
        raise DataValidationErrors(errors)


def validate_records(records: Sequence[ImageRecord], *, progress: bool = True, n_jobs: int = 1,
                     require_masks: bool = True, affine_tol_mm: float = GRID_TOL_MM) -> None:
    """Validate every record; raise one :class:`DataValidationErrors` listing **every** failing file.

    All records are checked even after a failure, so one run shows everything to fix.
    ``DataValidationErrors`` is a :class:`~lesionlib.io.DataValidationError` whose own path and
    problem are the first failure's; ``.errors`` holds them all. Nothing is written.
    """
    reports = validation_reports(records, progress=progress, n_jobs=n_jobs,
                                 require_masks=require_masks, affine_tol_mm=affine_tol_mm)
    raise_for_reports(reports)
    logger.info("validated %d records: all valid", len(reports))


def load_case(record: ImageRecord, *, require_mask: bool = False, affine_tol_mm: float = GRID_TOL_MM
              ) -> tuple[nib.Nifti1Image, nib.Nifti1Image | None]:
    """Load a record's image and mask, validated, reoriented to the closest RAS orientation.

    Returns
    -------
    (image, mask)
        ``image``: 3D T1w, data as stored (dtype and scaling kept). ``mask``: 3D ``uint8`` in {0, 1}
        on the same RAS grid, or ``None`` when the record has no mask (``mask_path is None``; an
        error if ``require_mask``). Reorientation only flips/permutes axes: ``affine @ [i, j, k, 1]``
        of a voxel gives the same world point (mm) before and after.

    Raises
    ------
    DataValidationError
        The first problem found (the same checks as :func:`validate_records`).
    """
    report, image, mask = _load_and_check(record, require_mask=require_mask, affine_tol_mm=affine_tol_mm)
    if report.errors:
        raise report.errors[0]
    assert image is not None
    image_ras = as_closest_ras(image)
    if mask is None:
        return image_ras, None
    mask_ras = as_closest_ras(mask)
    mask_u8 = nib.Nifti1Image(np.asanyarray(mask_ras.dataobj).astype(np.uint8), mask_ras.affine, mask_ras.header)
    mask_u8.set_data_dtype(np.uint8)
    return image_ras, mask_u8
