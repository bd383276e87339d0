"""Fuzzing the loader (#15): header bytes of a valid NIfTI, mutated by hypothesis.

Whatever the bytes, :func:`lesionlib.io.load_nifti` and
:func:`lesionlib.data.validate.check_record` either accept the file (and then it is a 3D image
with finite voxels of a supported type on a plausible grid) or report a
:class:`~lesionlib.io.DataValidationError` naming it: never another exception.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesionlib.data.records import ImageRecord
from lesionlib.data.validate import check_record
from lesionlib.io import PLAUSIBLE_SPACING_MM, SUPPORTED_DTYPES, DataValidationError, load_nifti, spacing_mm

SHAPE = (6, 7, 5)
AFFINE = np.array([[-2.0, 0, 0, 6], [0, 2.0, 0, -7], [0, 0, 2.5, 3], [0, 0, 0, 1]])
HEADER_BYTES = 352  # NIfTI-1 header (348) + the 4-byte extension flag

# (offset, format) of the fields a corrupt header most often gets wrong
FIELDS = {
    "sizeof_hdr": (0, "<i"), "dim0": (40, "<h"), "dim1": (42, "<h"), "dim2": (44, "<h"), "dim3": (46, "<h"),
    "dim4": (48, "<h"), "datatype": (70, "<h"), "bitpix": (72, "<h"), "pixdim0": (76, "<f"),
    "pixdim1": (80, "<f"), "pixdim3": (88, "<f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"), "xyzt_units": (123, "<B"), "qform_code": (252, "<h"), "sform_code": (254, "<h"),
    "quatern_b": (256, "<f"), "quatern_d": (264, "<f"), "qoffset_x": (268, "<f"), "srow_x0": (280, "<f"),
    "srow_y1": (300, "<f"), "srow_z3": (324, "<f"), "magic": (344, "<i"), "extension": (348, "<i"),
}
SPECIAL_FLOATS = [0.0, -1.0, 1e-9, 1e6, 1e38, float("nan"), float("inf"), float("-inf")]


def _valid_files() -> tuple[bytes, bytes]:
    """A valid float32 T1w (uncompressed bytes) and its uint8 mask (gzip bytes), written by nibabel."""
    data = np.random.default_rng(0).random(SHAPE, dtype=np.float32) + 0.5
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 2:4, 2] = 1
    with tempfile.TemporaryDirectory() as tmp:
        nib.save(nib.Nifti1Image(data, AFFINE), Path(tmp) / "t1w.nii")
        nib.save(nib.Nifti1Image(mask, AFFINE), Path(tmp) / "mask.nii.gz")
        return (Path(tmp) / "t1w.nii").read_bytes(), (Path(tmp) / "mask.nii.gz").read_bytes()


VALID, MASK_GZ = _valid_files()


def _field_value(fmt: str) -> st.SearchStrategy:
    if fmt == "<f":
        return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(width=32))
    if fmt == "<B":
        return st.integers(0, 255)
    bits = {"<h": 16, "<i": 32}[fmt]
    return st.one_of(st.sampled_from([0, 1, -1, 2, 3, 7, 8, 16, 32, 64, 128, 999, 2 ** (bits - 1) - 1]),
                     st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))


field_edits = st.lists(st.sampled_from(sorted(FIELDS)).flatmap(
    lambda name: st.tuples(st.just(name), _field_value(FIELDS[name][1]))), max_size=4)
byte_edits = st.dictionaries(st.integers(0, HEADER_BYTES - 1), st.integers(0, 255), max_size=6)


def mutate(fields: list[tuple[str, float | int]], flips: dict[int, int]) -> bytes:
    raw = bytearray(VALID)
    for name, value in fields:
        offset, fmt = FIELDS[name]
        struct.pack_into(fmt, raw, offset, value)
    for offset, value in flips.items():
        raw[offset] = value
    return bytes(raw)


def check_loaded(img: nib.Nifti1Image) -> None:
    """What an accepted image guarantees."""
    data = np.asanyarray(img.dataobj)
    assert data.ndim == 3 and data.size > 0
    assert not np.issubdtype(data.dtype, np.floating) or np.isfinite(data).all()
    assert np.isfinite(img.affine).all()
    low, high = PLAUSIBLE_SPACING_MM
    assert all(low <= s <= high for s in spacing_mm(img))
    on_disk = np.dtype(img.header.get_data_dtype())
    assert on_disk.newbyteorder("=") in SUPPORTED_DTYPES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=field_edits, flips=byte_edits, compressed=st.booleans())
def test_mutated_header_is_a_valid_record_or_a_validation_error(fields, flips, compressed):
    blob = mutate(fields, flips)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / ("t1w.nii.gz" if compressed else "t1w.nii")
        image.write_bytes(gzip.compress(blob, compresslevel=1) if compressed else blob)
        mask = Path(tmp) / "mask.nii.gz"
        mask.write_bytes(MASK_GZ)
        try:
            img = load_nifti(image)
        except DataValidationError as exc:
            assert exc.path == image and exc.problem and "\n" not in exc.problem
        else:
            check_loaded(img)
        report = check_record(ImageRecord("fuzz", "01", "1", image, mask))  # never raises
        for error in report.errors:
            assert isinstance(error, DataValidationError) and error.path in (image, mask)
        if report.ok:
            check_loaded(load_nifti(image))


@pytest.mark.parametrize("compressed", [False, True])
def test_unmutated_file_is_valid(compressed, tmp_path):
    image = tmp_path / ("t1w.nii.gz" if compressed else "t1w.nii")
    image.write_bytes(gzip.compress(VALID) if compressed else VALID)
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(MASK_GZ)
    report = check_record(ImageRecord("fuzz", "01", "1", image, mask))
    assert report.ok, report.errors
    assert report.shape == SHAPE and report.mask_voxels == 4
