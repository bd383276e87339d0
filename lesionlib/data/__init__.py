"""Datasets: the manifest, discovery of image records, and validation before training.

* :mod:`lesionlib.data.manifest` — ``data_manifest.yaml``: dataset roots and asset files
  (override > environment variable > manifest default).
* :mod:`lesionlib.data.discovery` — one :class:`ImageRecord` per T1w image (ATLAS v2.0 and child BIDS layouts).
* :mod:`lesionlib.data.validate` — checks before any use (:func:`require_valid`, the gate of every
  reader); :func:`load_case` loads a case in RAS.
"""

from lesionlib.data.discovery import (
    VolumeCache,
    discover,
    discover_atlas,
    discover_child_bids,
    mask_volume_ml,
    records_table,
)
from lesionlib.data.manifest import (
    ManifestError,
    asset_path,
    data_source,
    dataset_root,
    dataset_spec,
    load_manifest,
    manifest_sha256,
)
from lesionlib.data.records import ImageRecord
from lesionlib.data.validate import DataValidationErrors, check_record, load_case, require_valid, validate_records
from lesionlib.io import DataValidationError

__all__ = [
    "ImageRecord",
    "DataValidationError",
    "DataValidationErrors",
    "ManifestError",
    "load_manifest",
    "dataset_spec",
    "dataset_root",
    "asset_path",
    "data_source",
    "manifest_sha256",
    "discover",
    "discover_atlas",
    "discover_child_bids",
    "mask_volume_ml",
    "VolumeCache",
    "records_table",
    "check_record",
    "validate_records",
    "require_valid",
    "load_case",
]
