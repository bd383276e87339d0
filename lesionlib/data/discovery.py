"""Discovery: one :class:`~lesionlib.data.records.ImageRecord` per T1w image of a dataset.

Two layouts (file names from :mod:`lesionlib.bids`):

* ``atlas`` — ATLAS v2.0 ``Training/R*/sub-*/ses-*/anat/``; the site is the ``R*`` folder.
* ``child_bids`` — ``sub-*/ses-*/anat/sub-X_ses-Y_T1w.nii.gz`` with masks under
  ``derivatives/lesion_masks`` and ``participants.tsv`` (``age_months``, ``sex``, ``site``).

Every record's ``mask_path`` is the layout's mask path; if that file is absent the record still
names it (validation then reports the missing mask) and ``lesion_volume_ml`` is ``None``.
Lesion volumes (mL) are the number of non-zero mask voxels times the voxel volume
``|det(affine[:3, :3])|`` mm^3 / 1000. They are cached in
``<results_root>/cache/lesion_volumes.json`` keyed by (absolute path, size, mtime), so rediscovering
655 ATLAS cases reads no image. Discovery never modifies the dataset; records come sorted by
(subject, session) in natural order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lesionlib import bids, config
from lesionlib.data.manifest import Manifest, dataset_root, dataset_spec
from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, atomic_path, load_nifti

__all__ = [
    "discover",
    "discover_atlas",
    "discover_child_bids",
    "mask_volume_ml",
    "VolumeCache",
    "default_volume_cache_path",
    "records_table",
]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Lesion volumes and their cache
# --------------------------------------------------------------------------------------------

def mask_volume_ml(mask: os.PathLike | str | nib.spatialimages.SpatialImage) -> float:
    """Volume of a mask (file or loaded image) in mL: non-zero voxels x ``|det(affine[:3, :3])|`` mm^3 / 1000.

    Raises :class:`DataValidationError` for an unreadable mask file.
    """
    img = mask if isinstance(mask, nib.spatialimages.SpatialImage) else load_nifti(mask, ndim=None)
    n_voxels = int(np.count_nonzero(np.asanyarray(img.dataobj)))
    voxel_mm3 = abs(float(np.linalg.det(img.affine[:3, :3])))
    return n_voxels * voxel_mm3 / 1000.0


def default_volume_cache_path() -> Path:
    """``<results_root>/cache/lesion_volumes.json`` (see :func:`lesionlib.config.results_root`)."""
    return config.results_root() / "cache" / "lesion_volumes.json"


class VolumeCache:
    """Lesion volumes keyed by (absolute mask path, size in bytes, mtime in ns), stored as JSON.

    An entry whose file changed size or modification time is recomputed. A missing or unreadable
    cache file is treated as empty. :meth:`save` writes atomically and only if something changed.
    """

    def __init__(self, path: os.PathLike | str | None = None):
        self.path = Path(path) if path is not None else default_volume_cache_path()
        self.hits = 0
        self.misses = 0
        self._dirty = False
        self._entries: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            with open(self.path) as fh:
                raw = json.load(fh)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable volume cache %s (%s); it will be rebuilt", self.path, exc)
            return {}
        if not isinstance(raw, dict) or raw.get("version") != CACHE_VERSION or not isinstance(raw.get("entries"), dict):
            logger.info("volume cache %s has another format; rebuilding it", self.path)
            return {}
        return raw["entries"]

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        st = path.stat()
        return str(path.resolve()), st.st_size, st.st_mtime_ns

    def volume_ml(self, mask_path: os.PathLike | str) -> float:
        """The mask's lesion volume in mL, from the cache when the file is unchanged."""
        key, size, mtime_ns = self._key(Path(mask_path))
        entry = self._entries.get(key)
        if entry is not None and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            self.hits += 1
            return float(entry["volume_ml"])
        self.misses += 1
        volume = mask_volume_ml(mask_path)
        self._entries[key] = {"size": size, "mtime_ns": mtime_ns, "volume_ml": volume}
        self._dirty = True
        return volume

    def save(self) -> None:
        """Write the cache (atomically) if any entry was added or refreshed."""
        if not self._dirty:
            return
        try:
            with atomic_path(self.path) as tmp:
                with open(tmp, "w") as fh:
                    json.dump({"version": CACHE_VERSION, "entries": self._entries}, fh, indent=0, sort_keys=True)
        except OSError as exc:  # a read-only results root must not stop discovery
            logger.warning("could not write volume cache %s (%s)", self.path, exc)
            return
        self._dirty = False


def _fill_volumes(records: list[ImageRecord], cache: VolumeCache | None, progress: bool) -> list[ImageRecord]:
    """Records with ``lesion_volume_ml`` set where the mask exists and is readable."""
    own_cache = cache is None
    cache = cache if cache is not None else VolumeCache()
    out = []
    for rec in tqdm(records, desc="lesion volumes", unit="mask", disable=not progress, leave=False):
        volume = None
        if rec.mask_path is not None and rec.mask_path.is_file():
            try:
                volume = cache.volume_ml(rec.mask_path)
            except DataValidationError as exc:  # reported by validation, once per file
                logger.debug("no lesion volume for %s: %s", rec.case_id, exc)
        elif rec.mask_path is not None:
            logger.debug("%s: lesion mask missing (%s)", rec.case_id, rec.mask_path)
        out.append(dataclasses.replace(rec, lesion_volume_ml=volume))
    if own_cache:
        cache.save()
    return out


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------

def _natural_key(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _sorted(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    return sorted(records, key=lambda r: (_natural_key(r.subject), _natural_key(r.session)))


def _label(folder: Path, prefix: str) -> str:
    return folder.name[len(prefix):]


def _atlas_base(root: Path) -> Path:
    """Accept the folder holding ``Training/`` or ``Training/`` itself."""
    if not (root / "Training").is_dir() and root.name == "Training":
        return root.parent
    return root


def discover_atlas(root: os.PathLike | str, dataset: str = "atlas_v2", *, domain: str = "adult",
                   volumes: bool = True, cache: VolumeCache | None = None,
                   progress: bool = False) -> list[ImageRecord]:
    """Records of an ATLAS v2.0 layout under ``root`` (the folder holding ``Training/``).

    Walks ``Training/R*/sub-*/ses-*/anat`` and expects the T1w and mask names of
    :func:`lesionlib.bids.atlas_t1w_path` / :func:`~lesionlib.bids.atlas_mask_path`; ``site`` is
    the ``R*`` folder. An ``anat`` folder whose T1w has another name is an error (it would
    otherwise be silently skipped).

    Raises
    ------
    DataValidationError
        ``root`` or ``Training/`` missing, no image found, a subject in the wrong site folder,
        or an unexpected T1w name.
    """
    root = _atlas_base(Path(root).expanduser())
    training = root / "Training"
    if not root.is_dir():
        raise DataValidationError(root, "dataset root does not exist")
    if not training.is_dir():
        raise DataValidationError(root, "no Training/ folder: not an ATLAS v2.0 layout (point the root at the folder holding Training/)")
    records = []
    for anat in sorted(training.glob("R*/sub-*/ses-*/anat")):
        session_dir = anat.parent
        subject_dir = session_dir.parent
        site_dir = subject_dir.parent
        subject, session = _label(subject_dir, "sub-"), _label(session_dir, "ses-")
        try:
            site = bids.atlas_site_of(subject)
        except ValueError as exc:
            raise DataValidationError(subject_dir, str(exc)) from exc
        if site != site_dir.name:
            raise DataValidationError(subject_dir, f"subject {subject} belongs in site folder {site}, found in {site_dir.name}")
        image = bids.atlas_t1w_path(root, subject, session)
        if not image.is_file():
            t1w = sorted(anat.glob("*_T1w.nii*"))
            if t1w:
                raise DataValidationError(t1w[0], f"unexpected T1w file name; expected {image.name}")
            logger.warning("%s: no T1w image, skipped", anat)
            continue
        records.append(ImageRecord(
            dataset=dataset, subject=subject, session=session,
            image_path=image.absolute(), mask_path=bids.atlas_mask_path(root, subject, session).absolute(),
            domain=domain, site=site,
        ))
    if not records:
        raise DataValidationError(training, "no T1w images found (expected Training/R*/sub-*/ses-*/anat/*_T1w.nii.gz)")
    records = _sorted(records)
    return _fill_volumes(records, cache, progress) if volumes else records


def _read_participants(root: Path) -> dict[str, dict[str, Any]]:
    """``participants.tsv`` as {subject label without 'sub-': {age_months, sex, site, lesion_hemisphere}}.

    ``age_months`` comes from an ``age_months`` column, else from BIDS ``age`` (years) x 12;
    ``lesion_hemisphere`` ('left' / 'right') from the optional column of that name.
    """
    path = root / "participants.tsv"
    if not path.is_file():
        logger.warning("%s not found: age, sex and site unknown", path)
        return {}
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a", "NA", ""], keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(path, f"unreadable participants table ({exc})") from exc
    if "participant_id" not in table.columns:
        raise DataValidationError(path, f"no participant_id column (columns: {list(table.columns)})")

    def number(value: Any, column: str, pid: str) -> float | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        try:
            return float(value)
        except ValueError as exc:
            raise DataValidationError(path, f"{column} of {pid} is not a number: {value!r}") from exc

    labels = table["participant_id"].astype(str).str.removeprefix("sub-")
    counts = labels.value_counts()
    repeated = sorted(f"sub-{label}" for label in counts[counts > 1].index)
    if repeated:
        raise DataValidationError(path, f"duplicate subject: participant_id {', '.join(repeated)} listed more than once "
                                        f"(age, sex and site would be ambiguous); keep one row per participant")
    out: dict[str, dict[str, Any]] = {}
    for row in table.to_dict("records"):
        pid = str(row["participant_id"])
        label = pid[4:] if pid.startswith("sub-") else pid
        if "age_months" in table.columns:
            age = number(row.get("age_months"), "age_months", pid)
        elif "age" in table.columns:
            years = number(row.get("age"), "age", pid)
            age = None if years is None else years * 12.0
        else:
            age = None
        sex, site, side = row.get("sex"), row.get("site"), row.get("lesion_hemisphere")
        side = side.strip().lower() if isinstance(side, str) else None
        if side not in (None, "left", "right"):
            raise DataValidationError(path, f"lesion_hemisphere of {pid} must be 'left' or 'right', got {side!r}")
        out[label] = {
            "age_months": age,
            "sex": None if not isinstance(sex, str) else sex,
            "site": None if not isinstance(site, str) else site,
            "lesion_hemisphere": side,
        }
    return out


def discover_child_bids(root: os.PathLike | str, dataset: str = "child_cohort", *, domain: str = "child",
                        volumes: bool = True, cache: VolumeCache | None = None,
                        progress: bool = False) -> list[ImageRecord]:
    """Records of a child BIDS dataset: ``sub-*/ses-*/anat/sub-X_ses-Y_T1w.nii.gz``.

    Masks at :func:`lesionlib.bids.child_mask_path`; ``age_months``, ``sex`` and ``site`` from
    ``participants.tsv`` (``None`` where absent). T1w files with extra entities (``acq-``,
    ``run-``...) are skipped with a warning: the mask naming has no place for them.

    Raises
    ------
    DataValidationError
        ``root`` missing, no image found, or an unreadable ``participants.tsv``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataValidationError(root, "dataset root does not exist")
    participants = _read_participants(root)
    records = []
    for image in sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii.gz")):
        anat = image.parent
        subject, session = _label(anat.parent.parent, "sub-"), _label(anat.parent, "ses-")
        expected = bids.child_t1w_path(root, subject, session)
        if image.name != expected.name:
            logger.warning("%s: not the canonical name %s, skipped", image, expected.name)
            continue
        info = participants.get(subject)
        if participants and info is None:
            logger.warning("sub-%s is not in participants.tsv: age, sex and site unknown", subject)
        info = info or {}
        records.append(ImageRecord(
            dataset=dataset, subject=subject, session=session,
            image_path=image.absolute(), mask_path=bids.child_mask_path(root, subject, session).absolute(),
            domain=domain, site=info.get("site"), age_months=info.get("age_months"), sex=info.get("sex"),
            extra={"lesion_hemisphere": info["lesion_hemisphere"]} if info.get("lesion_hemisphere") else {},
        ))
    if not records:
        raise DataValidationError(root, "no T1w images found (expected sub-*/ses-*/anat/sub-*_ses-*_T1w.nii.gz)")
    records = _sorted(records)
    return _fill_volumes(records, cache, progress) if volumes else records


_LAYOUTS = {"atlas": discover_atlas, "child_bids": discover_child_bids}


def discover(name: str, *, profile: str = config.DEFAULT_PROFILE, root: os.PathLike | str | None = None,
             manifest: Manifest | os.PathLike | str | None = None, volumes: bool = True,
             progress: bool = True, cache: VolumeCache | None = None) -> list[ImageRecord]:
    """Records of manifest dataset ``name`` (``synthetic_adult``, ``synthetic_child``, ``atlas_v2``, ``child_cohort``).

    The root is ``root`` if given, else the dataset's environment variable, else the manifest
    default for ``profile`` (:func:`lesionlib.data.manifest.dataset_root`). A record count other
    than the manifest's ``expected_cases`` is logged as a warning (a subset is legitimate).
    Lesion volumes come from ``cache`` when given (the caller saves it), else from the default
    cache, saved on the way out.

    Raises
    ------
    ManifestError
        Unknown dataset, or no root configured.
    DataValidationError
        The root does not exist (with a hint on how to get the data) or holds no images.
    """
    spec = dataset_spec(name, manifest)
    base = dataset_root(name, profile=profile, override=root, manifest=manifest)
    if not base.is_dir():
        if spec.kind == "synthetic":
            hint = f"generate it with `lesionlib synth --profile {profile}`"
        elif root is None:
            hint = f"check the environment variable {spec.env}"
        else:
            hint = "check --root"
        raise DataValidationError(base, f"root of dataset {name!r} does not exist: {hint}")
    records = _LAYOUTS[spec.layout](base, dataset=name, domain=spec.domain, volumes=volumes, cache=cache,
                                    progress=progress)
    if spec.expected_cases is not None and len(records) != spec.expected_cases:
        logger.warning("%s: %d images found under %s, the manifest expects %d",
                       name, len(records), base, spec.expected_cases)
    logger.info("%s: %d images under %s", name, len(records), base)
    return records


def records_table(records: Sequence[ImageRecord]) -> pd.DataFrame:
    """Records as a table (one row per image; ``extra`` JSON-encoded), columns as :meth:`ImageRecord.to_dict`."""
    rows = []
    for rec in records:
        row = rec.to_dict()
        row["extra"] = json.dumps(row.get("extra") or {}, sort_keys=True, default=str)
        rows.append(row)
    columns = ["case_id", "dataset", "subject", "session", "domain", "image_path", "mask_path",
               "lesion_volume_ml", "site", "age_months", "sex", "extra"]
    return pd.DataFrame(rows, columns=columns)
