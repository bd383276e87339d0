"""NIfTI input/output: validated loading and atomic writing.

Conventions
-----------
* Arrays are indexed ``[i, j, k]`` in voxel space; the affine maps voxel indices to
  world coordinates in millimetres (scanner/MNI space, RAS+ as in NIfTI).
* :func:`load_nifti` is the one reader of input images. Whatever is wrong with a file (missing,
  unreadable, truncated, corrupt header, unsupported voxel type, non-finite values, implausible
  voxel size), it raises :class:`DataValidationError` naming the file and the problem, never a
  nibabel or numpy exception. Role-specific checks (binary masks, same grid, duplicates) live in
  :mod:`lesionlib.data.validate`.
* Raw data are never modified: every writer in lesionlib goes through
  :func:`save_nifti_atomic`, which writes a temporary file next to the target and renames
  it, so a crash never leaves a half-written image that looks finished.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

__all__ = [
    "DataValidationError",
    "SUPPORTED_DTYPES",
    "PLAUSIBLE_SPACING_MM",
    "GZIP_MAX_RATIO",
    "load_nifti",
    "save_nifti_atomic",
    "atomic_path",
    "as_closest_ras",
    "spacing_mm",
]

SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(np.dtype(t) for t in (
    np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64, np.float32, np.float64))
"""Voxel types (as stored on disk, any byte order) that :func:`load_nifti` accepts.

Integer and real floating types: what scanners, converters (dcm2niix) and segmentation tools write
for T1w images (int16, uint16, float32, float64, often with ``scl_slope``) and masks (uint8, int16,
float32). Complex, RGB/RGBA, and 128-bit float images are rejected: a T1w image or a lesion mask
stored that way is a conversion error, and numpy/torch would silently drop the imaginary part or
misread the colour channels.
"""

PLAUSIBLE_SPACING_MM: tuple[float, float] = (0.1, 10.0)
"""Smallest and largest voxel size (mm, each voxel axis, from the affine) that :func:`load_nifti` accepts.

Clinical and research T1w MRI lies between about 0.2 mm (ultra-high-field) and 7 mm (thick-slice
clinical scans). A voxel size outside this range means a header in the wrong unit (metres or
micrometres), a corrupt ``pixdim``/``srow`` or a broken affine.
"""

GZIP_MAX_RATIO = 1032
"""Largest possible deflate compression ratio: a ``.nii.gz`` of ``n`` bytes holds at most ``1032 n`` bytes.

A header declaring more voxel data than that is corrupt; :func:`load_nifti` rejects it before
reading instead of allocating the declared size.
"""


class DataValidationError(ValueError):
    """An input file is missing, unreadable or inconsistent.

    The message always starts with the offending file's path.
    """

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable across processes despite the two-argument constructor
        return (self.__class__, (self.path, self.problem))


_quiet_lock = threading.Lock()
_quiet_depth = 0


@contextlib.contextmanager
def _nibabel_quiet() -> Iterator[None]:
    """Silence nibabel's header-check logger ('nibabel.global') while any thread loads a file."""
    global _quiet_depth
    nib_logger = nib.imageglobals.logger
    with _quiet_lock:
        if _quiet_depth == 0:
            nib_logger.disabled = True
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                nib_logger.disabled = False


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """``'Type: message'`` on one line, the file's own path (already the line's prefix) left out."""
    text = str(exc)
    if path is not None:
        for form in (f'"{path}"', f"'{path}'", str(path)):
            text = text.replace(form, "the file")
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_error(path: Path, exc: BaseException) -> DataValidationError:
    """The :class:`DataValidationError` for an exception raised while nibabel read ``path``."""
    describe = _describe(exc, path)
    if isinstance(exc, PermissionError):
        return DataValidationError(path, "permission denied: the file cannot be read by this user "
                                         "(fix its permissions, e.g. chmod a+r)")
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return DataValidationError(path, f"truncated or corrupt compressed file ({describe})")
    if isinstance(exc, nib.filebasedimages.ImageFileError):
        return DataValidationError(path, f"not a readable NIfTI image ({describe})")
    if isinstance(exc, nib.spatialimages.HeaderDataError):
        return DataValidationError(path, f"corrupt NIfTI header ({describe})")
    if isinstance(exc, MemoryError):
        return DataValidationError(path, "too large to load into memory (corrupt header dimensions?)")
    if isinstance(exc, OSError) and "bytes" in str(exc):  # nibabel: "Expected N bytes, got M bytes"
        return DataValidationError(path, f"truncated file or corrupt header: the voxel data are shorter than "
                                         f"the header declares ({describe})")
    return DataValidationError(path, f"could not read image data ({describe})")


def _header_problems(img: nib.spatialimages.SpatialImage, path: Path) -> list[str]:
    """Problems visible in the header alone: voxel type, dimensions, declared data size, affine."""
    problems: list[str] = []
    header = img.header
    dtype = np.dtype(header.get_data_dtype())
    native = dtype.newbyteorder("=") if dtype.fields is None else dtype
    if native not in SUPPORTED_DTYPES:
        code = int(header.get("datatype", -1))
        problems.append(
            f"unsupported voxel data type {dtype.name if dtype.fields is None else 'RGB/structured ' + str(dtype)}"
            + (f" (NIfTI datatype code {code})" if code >= 0 else "")
            + "; expected an integer or real floating type (int8-int64, uint8-uint64, float32, float64): "
              "convert the image, e.g. to float32")
    shape = tuple(int(s) for s in img.shape)
    if not shape or any(s < 1 for s in shape):
        problems.append(f"corrupt NIfTI header: image shape {shape} has no voxels (dimensions must be >= 1)")
        return problems
    n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    offset = float(getattr(img.dataobj, "offset", header.get("vox_offset", 0.0)))  # nibabel moves it to the proxy
    file_bytes = path.stat().st_size
    if not np.isfinite(offset) or offset < 0:
        problems.append(f"corrupt NIfTI header: vox_offset {offset:g} is not a valid byte offset")
    elif path.name.endswith(".gz"):
        if offset + n_bytes > GZIP_MAX_RATIO * file_bytes:
            problems.append(f"corrupt NIfTI header: {n_bytes} bytes of voxel data (shape {shape} of {dtype.name}) "
                            f"at offset {offset:g} end beyond what a {file_bytes}-byte gzip file can hold")
    elif offset + n_bytes > file_bytes:
        problems.append(f"truncated file or corrupt header: shape {shape} of {dtype.name} at offset {offset:g} "
                        f"needs {int(offset) + n_bytes} bytes, the file has {file_bytes}")
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        problems.append("affine has non-finite entries (corrupt srow/quatern/pixdim fields)")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append("affine is singular (zero voxel size or collapsed axes)")
    else:
        low, high = PLAUSIBLE_SPACING_MM
        spacing = spacing_mm(img)
        if not all(low <= s <= high for s in spacing):
            shown = " x ".join(f"{s:.4g}" for s in spacing)
            problems.append(f"implausible voxel size {shown} mm (expected {low:g}-{high:g} mm per axis): "
                            "wrong unit or corrupt header")
    return problems


def _finite_problem(data: np.ndarray) -> str | None:
    if not np.issubdtype(data.dtype, np.floating):
        return None
    finite = np.isfinite(data)
    bad = int(data.size - np.count_nonzero(finite))
    if not bad:
        return None
    n_nan = int(np.count_nonzero(np.isnan(data)))
    return f"{bad} non-finite voxels ({n_nan} NaN, {bad - n_nan} inf) of {data.size}"


def load_nifti(path: os.PathLike | str, *, ndim: int | None = 3, role: str = "image") -> nib.Nifti1Image:
    """Load a NIfTI image completely, checking everything a file alone can get wrong.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    ndim
        Required number of dimensions (a 4D image with a trailing singleton axis is
        squeezed to 3D). ``None`` accepts any.
    role
        What the file is (``'image'``, ``'mask'``), used in messages.

    Returns
    -------
    nibabel.Nifti1Image
        An in-memory image: its ``dataobj`` is the array as read (``scl_slope``/``scl_inter``
        applied), its affine and header (orientation codes included) those of the file.

    Raises
    ------
    DataValidationError
        Missing, empty, unreadable (permissions), truncated or corrupt file; corrupt header
        (unknown datatype code, bad ``vox_offset``, non-positive dimensions, declared size larger
        than the file); voxel type outside :data:`SUPPORTED_DTYPES`; wrong number of dimensions;
        a non-finite or singular affine; voxel size outside :data:`PLAUSIBLE_SPACING_MM`;
        NaN or infinite voxels. Never another exception for a bad file.
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(path, "file does not exist")
    if not path.is_file():
        raise DataValidationError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DataValidationError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise _read_error(path, PermissionError(path))
    with _nibabel_quiet():  # nibabel logs its header checks itself: the error below says it once
        try:
            return _load_checked(path, ndim, role)
        except DataValidationError:
            raise
        except Exception as exc:  # nibabel and numpy raise many types for bad files: all become one
            raise _read_error(path, exc) from exc


def _load_checked(path: Path, ndim: int | None, role: str) -> nib.Nifti1Image:
    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataValidationError(path, f"not a NIfTI image (read as {type(img).__name__})")
    try:
        problems = _header_problems(img, path)
    except Exception as exc:  # a header too broken to even describe
        raise DataValidationError(path, f"corrupt NIfTI header ({_describe(exc, path)})") from exc
    if problems:
        raise DataValidationError(path, "; ".join(problems))
    shape = tuple(img.shape)
    squeeze = ndim is not None and len(shape) == ndim + 1 and shape[-1] == 1
    if ndim is not None and len(shape) - squeeze != ndim:
        raise DataValidationError(path, f"expected a {ndim}D {role}, found {len(shape)}D with shape {shape}")
    data = np.asanyarray(img.dataobj)  # a full read: catches truncation
    if squeeze:
        data = data[..., 0]
    finite = _finite_problem(data)
    if finite:
        raise DataValidationError(path, f"{role} has {finite}")
    return nib.Nifti1Image(data, img.affine, img.header)


def spacing_mm(img: nib.spatialimages.SpatialImage) -> tuple[float, ...]:
    """Voxel size in mm along each voxel axis, from the affine (not the header pixdim)."""
    return tuple(float(v) for v in np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)))


def as_closest_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient (axis flips/permutations only, no resampling) so voxel axes point R, A, S."""
    return nib.as_closest_canonical(img)


@contextlib.contextmanager
def atomic_path(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz`` stays gzip-compressed).
    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files: give the result the permissions of a normal new file.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_nifti_atomic(img: nib.Nifti1Image, path: os.PathLike | str) -> Path:
    """Write ``img`` to ``path`` atomically (temporary file + rename); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
