"""``lesionlib validate`` and ``lesionlib discover``.

``lesionlib validate [--profile quick] [--dataset NAME ...] [--root PATH] [--purpose train|evaluate]``
discovers and validates datasets (default: the two datasets the profile reads, ``data.adult_dataset``
and ``data.child_dataset``: synthetic cohorts, or ATLAS v2.0 and the child cohort from
``ATLAS_V2_ROOT`` / ``CHILD_BIDS_ROOT`` for a real-data profile), logs a summary per
dataset (records, lesion volume range in mL, orientations, voxel sizes) and, when a file fails,
exits 1 with one line per failing file on stderr (printed by :func:`lesionlib.cli.main`). It writes
nothing when a file fails (not even the lesion-volume cache).

``lesionlib discover --dataset NAME [--out records.csv]`` writes the records as CSV (stdout by default).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from lesionlib import config
from lesionlib.data.discovery import VolumeCache, discover, records_table
from lesionlib.data.validate import CaseReport, log_warnings, raise_for_reports, validation_reports
from lesionlib.io import atomic_path

logger = logging.getLogger(__name__)


def profile_datasets(profile: str) -> list[str]:
    """The datasets profile ``profile`` reads: ``[data.adult_dataset, data.child_dataset]``."""
    from lesionlib.profile import load_profile

    data = load_profile(profile).data
    return [data.adult_dataset, data.child_dataset]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=config.DEFAULT_PROFILE,
                        help="profile whose datasets are meant (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset root, overriding the environment variable and the manifest default")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="data manifest (default: $LESIONLIB_MANIFEST or data_manifest.yaml)")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate`` and ``discover`` to the ``lesionlib`` command line."""
    p = subparsers.add_parser("validate", help="discover and validate datasets before training",
                              description="Check every image and mask (readable, 3D, finite, binary mask, same grid).")
    _add_common(p)
    p.add_argument("--dataset", action="append", dest="datasets", metavar="NAME",
                   help="manifest dataset, repeatable (default: the two datasets the profile reads)")
    p.add_argument("--purpose", choices=("train", "evaluate"), default="train",
                   help="train: an empty lesion mask is an error; evaluate: a warning (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="threads reading files (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_validate)

    p = subparsers.add_parser("discover", help="list a dataset's image records as CSV")
    _add_common(p)
    p.add_argument("--dataset", required=True, metavar="NAME", help="manifest dataset")
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: standard output)")
    p.set_defaults(func=run_discover)


def _summary(name: str, reports: list[CaseReport]) -> str:
    volumes = np.array([r.record.lesion_volume_ml for r in reports if r.record.lesion_volume_ml is not None], float)
    n_bad = sum(not r.ok for r in reports)
    parts = [f"{name}: {len(reports)} records, {len(reports) - n_bad} valid"]
    if volumes.size:
        parts.append(f"lesion volume {volumes.min():.3g}-{volumes.max():.3g} mL (median {np.median(volumes):.3g})")
    orientations = Counter(r.orientation for r in reports if r.orientation)
    if orientations:
        parts.append("orientation " + ", ".join(f"{k} x{v}" for k, v in sorted(orientations.items())))
    spacings = Counter(tuple(round(s, 3) for s in r.spacing_mm) for r in reports if r.spacing_mm)
    if spacings:
        parts.append("voxels " + ", ".join("x".join(f"{s:g}" for s in k) + f" mm x{v}" for k, v in sorted(spacings.items())))
    return "; ".join(parts)


def run_validate(args: argparse.Namespace) -> int:
    names = args.datasets or profile_datasets(args.profile)
    if not args.datasets:
        logger.info("profile %s reads %s: checking both", args.profile, " and ".join(names))
    second_sessions_propagated = _propagated_child(args.profile) if not args.datasets else None
    if args.root is not None and len(names) != 1:
        logger.error("--root needs exactly one --dataset (got %s)", ", ".join(names))
        return 2
    progress = not args.no_progress
    cache = VolumeCache()  # saved only if everything is valid: a failed validation writes nothing
    all_reports: list[CaseReport] = []
    for name in names:
        records = discover(name, profile=args.profile, root=args.root, manifest=args.manifest, progress=progress,
                           cache=cache)
        if name == second_sessions_propagated:
            from lesionlib.splits import split_first_sessions

            first, later = split_first_sessions(records)
            reports = validation_reports(first, purpose=args.purpose, progress=progress, n_jobs=args.jobs)
            reports += validation_reports(later, purpose=args.purpose, progress=progress, n_jobs=args.jobs,
                                          require_masks=False)
            logger.info("%s: %d later-session images checked without their masks (data.child_session2_masks: "
                        "propagated)", name, len(later))
        else:
            reports = validation_reports(records, purpose=args.purpose, progress=progress, n_jobs=args.jobs)
        logger.info("%s", _summary(name, reports))
        all_reports += reports
    log_warnings(all_reports)
    raise_for_reports(all_reports)
    cache.save()
    logger.info("all %d records of %s are valid", len(all_reports), ", ".join(names))
    return 0


def _propagated_child(profile: str) -> str | None:
    """The profile's child dataset when its later-session masks come from registration, else ``None``."""
    from lesionlib.profile import load_profile

    data = load_profile(profile).data
    return data.child_dataset if data.child_session2_masks == "propagated" else None


def run_discover(args: argparse.Namespace) -> int:
    records = discover(args.dataset, profile=args.profile, root=args.root, manifest=args.manifest)
    table = records_table(records)
    if args.out is None:
        table.to_csv(sys.stdout, index=False)
    else:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        logger.info("%d records of %s written to %s", len(table), args.dataset, args.out)
    return 0
