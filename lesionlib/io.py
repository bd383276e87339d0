"""NIfTI input/output: validated loading and atomic writing.

Conventions
-----------
* Arrays are indexed ``[i, j, k]`` in voxel space; the affine maps voxel indices to
  world coordinates in millimetres (scanner/MNI space, RAS+ as in NIfTI).
* Raw data are never modified: every writer in lesionlib goes through
  :func:`save_nifti_atomic`, which writes a temporary file next to the target and renames
  it, so a crash never leaves a half-written image that looks finished.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

__all__ = [
    "DataValidationError",
    "load_nifti",
    "save_nifti_atomic",
    "atomic_path",
    "as_closest_ras",
    "spacing_mm",
]


class DataValidationError(ValueError):
    """An input file is missing, unreadable or inconsistent.

    The message always starts with the offending file's path.
    """

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def load_nifti(path: os.PathLike | str, *, ndim: int | None = 3) -> nib.Nifti1Image:
    """Load a NIfTI image, checking that it can be read completely.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    ndim
        Required number of dimensions (a 4D image with a trailing singleton axis is
        squeezed to 3D). ``None`` accepts any.

    Returns
    -------
    nibabel.Nifti1Image
        The image with its data already read (``get_fdata`` is cached), affine untouched.

    Raises
    ------
    DataValidationError
        Missing, empty, truncated or corrupt file; wrong number of dimensions.
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(path, "file does not exist")
    if not path.is_file():
        raise DataValidationError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DataValidationError(path, "file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # forces a full read: catches truncation
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataValidationError(path, f"truncated or corrupt compressed file ({exc})") from exc
    except nib.filebasedimages.ImageFileError as exc:
        raise DataValidationError(path, f"not a readable NIfTI image ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise DataValidationError(path, f"could not read image data ({exc})") from exc
    if ndim is not None:
        if data.ndim == ndim + 1 and data.shape[-1] == 1:
            data = data[..., 0]
            img = nib.Nifti1Image(data, img.affine, img.header)
        if data.ndim != ndim:
            raise DataValidationError(
                path, f"expected a {ndim}D image, found {data.ndim}D with shape {tuple(data.shape)}"
            )
    if not isinstance(img, nib.Nifti1Image):
        img = nib.Nifti1Image(data, img.affine, img.header)
    return img


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
