"""``lesionlib synth``: generate the synthetic adult and/or child cohorts of a profile.

Examples::

    lesionlib synth --profile quick                 # both cohorts, 3 mm, into data/synthetic/quick/
    lesionlib synth --cohort adult --n 5 --resolution-mm 1 --out /tmp/synth --seed 7
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lesionlib import config

log = logging.getLogger(__name__)

__all__ = ["register_cli", "run"]


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to the ``lesionlib`` command line."""
    p = subparsers.add_parser(
        "synth", help="generate the synthetic ATLAS-like adult and CAP-like child cohorts",
        description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=config.DEFAULT_PROFILE,
                   help="experiment profile giving resolution_mm, n_adult, n_children, synth_seed and the "
                        "default output folders (default: %(default)s)")
    p.add_argument("--cohort", choices=("adult", "child", "both"), default="both")
    p.add_argument("--resolution-mm", type=float, default=None, help="voxel size (mm); overrides the profile")
    p.add_argument("--n", type=int, default=None, help="number of adult subjects; overrides the profile")
    p.add_argument("--n-children", type=int, default=None, help="number of children; overrides the profile")
    p.add_argument("--seed", type=int, default=None, help="generator seed; overrides the profile")
    p.add_argument("--out", type=Path, default=None,
                   help="base folder; cohorts go to OUT/adult and OUT/child (default: the profile's "
                        "lesionlib.config.synthetic_roots)")
    p.add_argument("--force", action="store_true", help="regenerate even if an identical cohort exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Generate the requested cohorts; returns the exit code (0)."""
    from lesionlib.data.manifest import data_source
    from lesionlib.profile import load_profile
    from lesionlib.synth import generate_adult_cohort, generate_child_cohort

    data = load_profile(args.profile).data
    wanted = {"adult": data.adult_dataset, "child": data.child_dataset}
    if args.out is None and all(data_source(name) != "synthetic" for name in wanted.values()):
        log.info("profile %s uses real data (%s): nothing to generate", args.profile, ", ".join(wanted.values()))
        return 0
    resolution = float(args.resolution_mm if args.resolution_mm is not None else data.resolution_mm)
    seed = int(args.seed if args.seed is not None else data.synth_seed)
    if args.out is not None:
        roots = {"adult": Path(args.out) / "adult", "child": Path(args.out) / "child"}
    else:
        roots = config.synthetic_roots(args.profile)
    progress = not args.no_progress
    if args.cohort in ("adult", "both"):
        n = int(args.n if args.n is not None else data.n_adult)
        start = time.perf_counter()
        paths = generate_adult_cohort(roots["adult"], n, resolution_mm=resolution, seed=seed, progress=progress,
                                      force=args.force)
        log.info("adult cohort: %d images in %s (%.1f s)", len(paths), roots["adult"], time.perf_counter() - start)
    if args.cohort in ("child", "both"):
        n = int(args.n_children if args.n_children is not None else data.n_children)
        start = time.perf_counter()
        paths = generate_child_cohort(roots["child"], n, resolution_mm=resolution, seed=seed, progress=progress,
                                      force=args.force)
        log.info("child cohort: %d images in %s (%.1f s)", len(paths), roots["child"], time.perf_counter() - start)
    return 0
