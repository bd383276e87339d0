"""Validation before any use of the data, and loading of a validated case reoriented to RAS.

The one validator: ``lesionlib validate``, training (:func:`lesionlib.transforms.check_record_files`),
nnU-Net export, prediction and the LesionGnb baseline all call :func:`require_valid` before they
write anything, so a file that validation rejects is rejected on every path.

Checks per record (each failure is a :class:`~lesionlib.io.DataValidationError` naming the file):

* image: everything :func:`lesionlib.io.load_nifti` checks (exists, readable, complete, header
  sane, voxel type in :data:`~lesionlib.io.SUPPORTED_DTYPES`, 3D (a trailing singleton 4th axis is
  accepted), finite voxels, a finite non-singular affine with voxel sizes in
  :data:`~lesionlib.io.PLAUSIBLE_SPACING_MM`), an orientation (sform or qform code set), and not
  constant (an all-zero or constant image is a failed conversion);
* mask: present, the same file checks, binary (values exactly {0, 1}; {0, 255} or label maps are
  rejected with the values found and how to fix them), not every voxel lesion, and on the image's
  grid (:func:`lesionlib.space.grid_mismatch`: same shape, voxels placed within ``affine_tol_mm``);
* empty masks depend on the purpose (:data:`Purpose`): an error for a training set (nothing to
  learn from; sampling a lesion patch is impossible), a warning for an evaluation set (Dice is 1 or
  0 and surface distances are undefined for such a case), not checked for prediction;
* records: no case id twice in one dataset, and no subject label that differs from another only
  in letter case (the same child twice: the two collide on case-insensitive file systems and
  would straddle a subject-level split).

Validation only reads: it writes nothing, anywhere. Records that passed are remembered in memory,
keyed by the files' size, modification and change times and inode, so validating the same
unchanged files again (the CLI, then ``train()``) does not read them twice; a file changed in the
last two seconds is always read again (a rewrite within one clock tick can keep its mtime). :func:`load_case` applies the same
file checks and returns the image and mask reoriented to the closest RAS orientation (axis flips
and permutations only, no resampling: the voxel -> world mapping of every voxel is unchanged).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence, get_args

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, as_closest_ras, load_nifti, spacing_mm
from lesionlib.space import GRID_TOL_MM, grid_mismatch

__all__ = [
    "Purpose",
    "DataValidationErrors",
    "CaseReport",
    "orientation_code",
    "mask_value_problem",
    "check_record",
    "validation_reports",
    "raise_for_reports",
    "log_warnings",
    "validate_records",
    "require_valid",
    "discover_valid",
    "load_case",
]

logger = logging.getLogger(__name__)

Purpose = Literal["train", "evaluate", "predict"]
"""What the records are for: ``train`` (masks required and non-empty), ``evaluate`` (masks required;
an empty one is a warning), ``predict`` (images only; masks are not read)."""

_PASSED_MAX = 20_000
_RACY_NS = 2_000_000_000  # files changed this recently are read again, never taken from the cache
_passed: OrderedDict[tuple, tuple] = OrderedDict()
_passed_lock = threading.Lock()


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

    def __reduce__(self):
        return (self.__class__, (self.errors,))

    def by_file(self) -> dict[Path, list[str]]:
        """Every failing file (first-failure order) with its problems (duplicates dropped)."""
        out: dict[Path, list[str]] = defaultdict(list)
        for e in self.errors:
            if e.problem not in out[e.path]:
                out[e.path].append(e.problem)
        return dict(out)


@dataclass
class CaseReport:
    """What validation found for one record.

    ``shape`` and ``spacing_mm`` are the image's (voxel axes as stored), ``orientation`` its
    axis codes (e.g. ``'LPS'``: voxel axis 0 points Left...), ``mask_voxels`` the number of
    lesion voxels. Fields are ``None`` where the file could not be read. ``warnings`` are
    problems that do not make the record unusable for its purpose (an empty mask in an
    evaluation set).
    """

    record: ImageRecord
    errors: list[DataValidationError] = field(default_factory=list)
    warnings: list[DataValidationError] = field(default_factory=list)
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


def _check_purpose(purpose: str) -> None:
    if purpose not in get_args(Purpose):
        raise ValueError(f"purpose must be one of {list(get_args(Purpose))}, got {purpose!r}")


def _values(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f", ... ({values.size} distinct)" if values.size > limit else "")


def mask_value_problem(data: np.ndarray) -> str | None:
    """``None`` when ``data`` holds only 0 and 1, else a message saying what was found and how to fix it.

    ``{0, 255}`` (an 8-bit image export) and ``{0, 1, 2, ...}`` (a label map) are the usual causes;
    silently thresholding them at 0 would train on whatever the other labels mean.
    """
    is_binary = (data == 0) | (data == 1)
    if is_binary.all():
        return None
    others = np.unique(data[~is_binary])
    found = np.unique(data)
    return (f"mask is not binary: {int((~is_binary).sum())} voxels have values other than 0 and 1 "
            f"({_values(others)}); values found: {_values(found)}. A lesion mask must hold only 0 (background) "
            f"and 1 (lesion): check which values mean lesion, then binarise it (e.g. fslmaths MASK -bin MASK)")


def _orientation_problem(img: nib.Nifti1Image, role: str) -> str | None:
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        return f"{role} has no orientation: sform_code and qform_code are both 0"
    return None


def _load_and_check(record: ImageRecord, *, require_mask: bool, affine_tol_mm: float
                    ) -> tuple[CaseReport, nib.Nifti1Image | None, nib.Nifti1Image | None]:
    """File-level checks of one record (no purpose rules, no duplicates); the loaded image and mask."""
    report = CaseReport(record=record)
    image_path = Path(record.image_path)
    image = None
    image_grid_ok = False  # the image's own affine is usable for comparing the mask's grid
    try:
        image = load_nifti(image_path, ndim=3, role="image")
    except DataValidationError as exc:
        report.errors.append(exc)
    if image is not None:
        report.shape = tuple(int(n) for n in image.shape)
        report.spacing_mm = spacing_mm(image)
        problem = _orientation_problem(image, "image")
        if problem:
            report.errors.append(DataValidationError(image_path, problem))
        else:
            image_grid_ok = True
            report.orientation = orientation_code(image.affine)
        data = np.asanyarray(image.dataobj)
        low, high = data.min(), data.max()
        if low == high:
            report.errors.append(DataValidationError(
                image_path, f"image is constant (every voxel is {low:g}): an empty or failed conversion"))

    if record.mask_path is None:
        if require_mask:
            report.errors.append(DataValidationError(image_path, "no lesion mask recorded for this image"))
        return report, image, None
    mask_path = Path(record.mask_path)
    if not mask_path.exists():
        report.errors.append(DataValidationError(
            mask_path, f"lesion mask missing: file does not exist (mask of {image_path.name})"))
        return report, image, None
    try:
        mask = load_nifti(mask_path, ndim=3, role="mask")
    except DataValidationError as exc:
        report.errors.append(exc)
        return report, image, None
    problems = []
    orientation = _orientation_problem(mask, "mask")
    if orientation:
        problems.append(orientation)
    data = np.asanyarray(mask.dataobj)
    values = mask_value_problem(data)
    if values:
        problems.append(values)
    else:
        report.mask_voxels = int(np.count_nonzero(data))
        if report.mask_voxels == data.size:
            problems.append(f"every voxel of the mask is lesion ({data.size} voxels): an inverted or blank mask")
    if image is not None and image_grid_ok and not orientation:
        mismatch = grid_mismatch(mask, image, tol_mm=affine_tol_mm)
        if mismatch:
            problems.append(f"mask is not on the grid of its image {image_path.name} ({mismatch})")
    report.errors += [DataValidationError(mask_path, p) for p in problems]
    return report, image, mask


def _file_key(path: Path | None) -> tuple | None:
    """What identifies an unchanged file, or ``None`` when it must not be cached: unreadable, or
    changed within the last :data:`_RACY_NS` (a rewrite within one clock tick keeps the mtime)."""
    if path is None:
        return ()
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _RACY_NS:
        return None
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _empty_mask_rule(report: CaseReport, purpose: Purpose) -> None:
    if report.mask_voxels != 0 or report.record.mask_path is None:
        return
    mask_path = Path(report.record.mask_path)
    if purpose == "train":
        report.errors.append(DataValidationError(
            mask_path, "lesion mask is empty (no voxel is 1): a training case needs a lesion to learn from; "
                       "fix the mask or leave the case out of the training set"))
    elif purpose == "evaluate":
        report.warnings.append(DataValidationError(
            mask_path, "lesion mask is empty (no voxel is 1): kept for evaluation, but this case scores Dice 1 "
                       "for an empty prediction and 0 otherwise, and its surface distances are undefined; "
                       "check that it is the right mask"))


def check_record(record: ImageRecord, *, purpose: Purpose = "train", require_mask: bool = True,
                 affine_tol_mm: float = GRID_TOL_MM) -> CaseReport:
    """Run every check on one record for ``purpose``; the report lists all its problems (none means valid).

    ``require_mask=False`` accepts a record without ``mask_path`` (a mask that is named is still
    checked). For ``purpose='predict'`` masks are not read at all.
    """
    _check_purpose(purpose)
    checked = dataclasses.replace(record, mask_path=None) if purpose == "predict" else record
    require = require_mask and purpose != "predict"
    keys = (_file_key(Path(checked.image_path)),
            _file_key(None if checked.mask_path is None else Path(checked.mask_path)))
    key = None if None in keys else (*keys, require, float(affine_tol_mm))
    with _passed_lock:
        cached = _passed.get(key) if key is not None else None
        if cached is not None:
            _passed.move_to_end(key)
    if cached is not None:
        report = CaseReport(record, [], [], *cached)
    else:
        report, _, _ = _load_and_check(checked, require_mask=require, affine_tol_mm=affine_tol_mm)
        report.record = record
        if report.ok and key is not None:
            with _passed_lock:
                _passed[key] = (report.orientation, report.shape, report.spacing_mm, report.mask_voxels)
                while len(_passed) > _PASSED_MAX:
                    _passed.popitem(last=False)
    if purpose == "predict":
        report.mask_voxels = None
    _empty_mask_rule(report, purpose)
    return report


def _duplicate_errors(reports: Sequence[CaseReport]) -> None:
    """Add an error to every record whose case id, or whose subject label up to letter case, repeats."""
    records = [r.record for r in reports]
    seen = Counter((rec.dataset, rec.case_id) for rec in records)
    labels: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in records:
        labels[(rec.dataset, rec.subject.casefold())].add(rec.subject)
    for report in reports:
        rec = report.record
        n = seen[(rec.dataset, rec.case_id)]
        if n > 1:
            report.errors.append(DataValidationError(
                rec.image_path, f"case {rec.case_id} appears {n} times in dataset {rec.dataset}"))
        variants = sorted(labels[(rec.dataset, rec.subject.casefold())] - {rec.subject})
        if variants:
            others = ", ".join(f"sub-{v}" for v in variants)
            report.errors.append(DataValidationError(
                rec.image_path, f"duplicate subject: sub-{rec.subject} and {others} differ only in letter case "
                                f"(one child entered twice? they collide on case-insensitive file systems and "
                                f"would straddle a subject-level split); rename or remove one"))


def validation_reports(records: Sequence[ImageRecord], *, purpose: Purpose = "train", progress: bool = True,
                       n_jobs: int = 1, require_masks: bool = True,
                       affine_tol_mm: float = GRID_TOL_MM) -> list[CaseReport]:
    """One :class:`CaseReport` per record (same order), plus duplicate-subject errors.

    ``n_jobs`` > 1 checks records in threads (decompression and numpy release the GIL).
    """
    _check_purpose(purpose)

    def one(rec: ImageRecord) -> CaseReport:
        return check_record(rec, purpose=purpose, require_mask=require_masks, affine_tol_mm=affine_tol_mm)

    records = list(records)
    bar = dict(total=len(records), desc="validating", unit="case", disable=not progress)
    if n_jobs > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            reports = list(tqdm(pool.map(one, records), **bar))
    else:
        reports = [one(rec) for rec in tqdm(records, **bar)]
    _duplicate_errors(reports)
    return reports


def raise_for_reports(reports: Iterable[CaseReport]) -> None:
    """Raise one :class:`DataValidationErrors` listing every failing file, if any report has errors."""
    errors = [e for r in reports for e in r.errors]
    if errors:
        raise DataValidationErrors(errors)


def log_warnings(reports: Iterable[CaseReport]) -> int:
    """Log each report's warnings (one line per file: ``<path>: <problem>``); returns how many."""
    n = 0
    for report in reports:
        for warning in report.warnings:
            logger.warning("%s", warning)
            n += 1
    return n


def validate_records(records: Sequence[ImageRecord], *, purpose: Purpose = "train", progress: bool = True,
                     n_jobs: int = 1, require_masks: bool = True, affine_tol_mm: float = GRID_TOL_MM) -> None:
    """Validate every record; raise one :class:`DataValidationErrors` listing **every** failing file.

    All records are checked even after a failure, so one run shows everything to fix.
    ``DataValidationErrors`` is a :class:`~lesionlib.io.DataValidationError` whose own path and
    problem are the first failure's; ``.errors`` holds them all. Warnings are logged. Nothing is written.
    """
    reports = validation_reports(records, purpose=purpose, progress=progress, n_jobs=n_jobs,
                                 require_masks=require_masks, affine_tol_mm=affine_tol_mm)
    log_warnings(reports)
    raise_for_reports(reports)
    logger.info("validated %d records for %s: all valid", len(reports), purpose)


def require_valid(records: Sequence[ImageRecord], *, purpose: Purpose, progress: bool = False,
                  n_jobs: int = 1) -> list[CaseReport]:
    """The gate every reader of data passes before it writes anything: all records valid for ``purpose``.

    Parameters
    ----------
    records
        The records about to be used. A record passed twice (equal in every field: the same case
        in both the training and the validation set) is checked once; two *different* records
        with one case id are a duplicate-subject error.
    purpose
        ``'train'``: masks required and non-empty. ``'evaluate'``: masks required; an empty mask is
        logged as a warning. ``'predict'``: images only.
    progress, n_jobs
        Progress bar; threads reading files.

    Returns
    -------
    list of CaseReport
        One per distinct record (first-seen order), all valid.

    Raises
    ------
    DataValidationErrors
        Listing **every** failing file (all records are checked first).
    """
    distinct = list(dict.fromkeys(records))
    reports = validation_reports(distinct, purpose=purpose, progress=progress, n_jobs=n_jobs)
    log_warnings(reports)
    raise_for_reports(reports)
    logger.debug("%d records valid for %s", len(reports), purpose)
    return reports


def discover_valid(name: str, *, purpose: Purpose, cases: Iterable[str] | None = None, warn: bool = True,
                   progress: bool = True, **discover_kwargs) -> list[ImageRecord]:
    """Discover manifest dataset ``name`` and :func:`require_valid` its records, writing nothing unless all pass.

    The command-line entry of every subcommand that reads a dataset. Lesion volumes go to a cache
    that is saved only once every record is valid, so a run stopped by bad input writes nothing.

    Parameters
    ----------
    name
        Manifest dataset (see :func:`lesionlib.data.discovery.discover`, which gets ``discover_kwargs``:
        ``profile``, ``root``, ``manifest``, ``volumes``).
    purpose
        As in :func:`require_valid`.
    cases
        Only these case ids (``sub-X_ses-Y``); ``None``: all.
    warn
        Log warnings (an empty mask in an evaluation set); ``False`` when the caller checks the
        chosen records again with a stricter purpose, so no file is named twice.

    Raises
    ------
    DataValidationErrors
        Listing every failing file of the (selected) records.
    """
    from lesionlib.data.discovery import VolumeCache, discover

    cache = VolumeCache() if discover_kwargs.get("volumes", True) else None
    records = discover(name, progress=progress, cache=cache, **discover_kwargs)
    if cases is not None:
        wanted = set(cases)
        records = [r for r in records if r.case_id in wanted]
    reports = validation_reports(records, purpose=purpose, progress=progress)
    if warn:
        log_warnings(reports)
    raise_for_reports(reports)
    if cache is not None:
        cache.save()
    return records


def load_case(record: ImageRecord, *, require_mask: bool = False, affine_tol_mm: float = GRID_TOL_MM
              ) -> tuple[nib.Nifti1Image, nib.Nifti1Image | None]:
    """Load a record's image and mask, validated, reoriented to the closest RAS orientation.

    Returns
    -------
    (image, mask)
        ``image``: 3D T1w, data as stored (scaling applied). ``mask``: 3D ``uint8`` in {0, 1}
        on the same RAS grid, or ``None`` when the record has no mask (``mask_path is None``; an
        error if ``require_mask``). Reorientation only flips/permutes axes: ``affine @ [i, j, k, 1]``
        of a voxel gives the same world point (mm) before and after.

    Raises
    ------
    DataValidationError
        The first problem found (the file checks of :func:`check_record`; an empty mask is allowed).
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
