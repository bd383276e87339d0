"""``lesionlib propagate`` and ``lesionlib lesiongnb``: command lines for registration and the GNB baseline.

``lesionlib propagate --dataset synthetic_child --out DIR [--method linear|nearest] [--dof 6|12]``
    For every child with sessions 1 and 2, carries the session-1 lesion mask onto session 2
    (:func:`lesionlib.register.propagate_mask`), writes it to
    ``DIR/derivatives/lesionlib/sub-X/ses-2/anat/sub-X_ses-2_desc-propagated_mask.nii.gz``, a QC PNG
    to ``DIR/qc/sub-X_propagation.png``, and, where the true session-2 mask exists,
    ``DIR/propagation_metrics.csv`` (:func:`lesionlib.register.propagate_records`).

``lesionlib lesiongnb fit --dataset synthetic_adult --model FILE [--resolution-mm R]``
    Trains :class:`lesionlib.baselines.LesionGnb` on a dataset's labelled records.

``lesionlib lesiongnb predict --model FILE --dataset synthetic_child --out DIR``
    Writes one mask per image, on the image's own grid, into the BIDS-derivatives dataset of its
    source dataset (:func:`lesionlib.bids.save_prediction`):
    ``DIR/<dataset>/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz`` with a JSON
    sidecar, ``DIR/<dataset>/dataset_description.json`` written first.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from lesionlib import bids, config
from lesionlib.data.records import ImageRecord

log = logging.getLogger(__name__)

__all__ = ["register_cli", "run_propagate", "run_gnb_fit", "run_gnb_predict"]


def _add_data_args(parser: argparse.ArgumentParser, default_dataset: str) -> None:
    parser.add_argument("--dataset", default=default_dataset, metavar="NAME",
                        help="manifest dataset (default: %(default)s)")
    parser.add_argument("--profile", default=config.DEFAULT_PROFILE, help="profile (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=None, help="dataset root, overriding the manifest")
    parser.add_argument("--manifest", type=Path, default=None, help="data manifest file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``propagate`` and ``lesiongnb {fit,predict}`` to the ``lesionlib`` command line."""
    p = subparsers.add_parser("propagate", help="carry session-1 lesion masks onto session 2 by registration")
    _add_data_args(p, "synthetic_child")
    p.add_argument("--out", type=Path, required=True, help="output root (derivatives/, qc/, metrics CSV)")
    p.add_argument("--method", choices=("linear", "nearest"), default="linear",
                   help="mask interpolation: linear + 0.5 threshold, or nearest neighbour (default: %(default)s)")
    p.add_argument("--dof", type=int, choices=(6, 12), default=6, help="6 rigid, 12 affine (default: %(default)s)")
    p.set_defaults(func=run_propagate)

    p = subparsers.add_parser("lesiongnb", help="LesionGnb baseline (Griffis et al. 2016): fit or predict")
    sub = p.add_subparsers(dest="gnb_command", required=True)
    fit = sub.add_parser("fit", help="train on a dataset's labelled images")
    _add_data_args(fit, "synthetic_adult")
    fit.add_argument("--model", type=Path, required=True, help="model file to write (joblib)")
    fit.add_argument("--resolution-mm", type=float, default=None,
                     help="MNI working grid (default: the profile's resolution_mm, 1.5 mm if none)")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(func=run_gnb_fit)
    pred = sub.add_parser("predict", help="segment every image of a dataset")
    _add_data_args(pred, "synthetic_child")
    pred.add_argument("--model", type=Path, required=True, help="model file written by 'lesiongnb fit'")
    pred.add_argument("--out", type=Path, required=True,
                      help="folder of the predictions: one BIDS-derivatives dataset per source dataset, "
                           "OUT/<dataset>/sub-X/ses-Y/anat/..._desc-lesion_mask.nii.gz")
    pred.set_defaults(func=run_gnb_predict)


def _records(args: argparse.Namespace, purpose: str) -> list[ImageRecord]:
    """The dataset's records, every one valid for ``purpose`` (nothing written otherwise)."""
    from lesionlib.data.validate import discover_valid

    return discover_valid(args.dataset, purpose=purpose, profile=args.profile, root=args.root, manifest=args.manifest,
                          volumes=False, progress=not args.no_progress)


def run_propagate(args: argparse.Namespace) -> int:
    from lesionlib.register import propagate_records

    table = propagate_records(_records(args, "evaluate"), args.out, method=args.method, dof=args.dof,
                              progress=not args.no_progress)
    if not table.empty:
        log.info("propagated vs true session-2 masks: Dice min %.3f, median %.3f over %d subjects",
                 table["dice"].min(), table["dice"].median(), len(table))
    return 0


def run_gnb_fit(args: argparse.Namespace) -> int:
    from lesionlib.baselines.gnb import LesionGnb

    resolution = args.resolution_mm
    if resolution is None:  # the profile's LesionGnb working grid (the data's own when coarser)
        from lesionlib.profile import load_profile

        profile = load_profile(args.profile)
        resolution = max(profile.method("lesiongnb").working_resolution_mm, profile.data.resolution_mm)
    records = _records(args, "train")
    model = LesionGnb(resolution_mm=resolution, seed=args.seed).fit(records, progress=not args.no_progress)
    model.save(args.model)
    log.info("LesionGnb model written to %s", args.model)
    return 0


def run_gnb_predict(args: argparse.Namespace) -> int:
    from lesionlib.baselines.gnb import LesionGnb

    records = _records(args, "predict")
    model = LesionGnb.load(args.model)
    description = "lesion segmentation by LesionGnb (Gaussian naive Bayes on tissue-map features)"
    sidecar = {"model": "LesionGnb", "model_file": str(Path(args.model).resolve()),
               "working_resolution_mm": float(model.resolution_mm)}
    datasets = set()
    for record in tqdm(records, desc="LesionGnb", disable=args.no_progress):
        # the mask on the image's own grid (its affine), written atomically after the dataset description
        bids.save_prediction(model.predict(record), args.out, record, description=description, sidecar=sidecar)
        datasets.add(str(bids.prediction_root(args.out, record.dataset)))
    log.info("%d LesionGnb masks written in %s", len(records), ", ".join(sorted(datasets)) or args.out)
    return 0
