"""``lesionlib train`` and ``lesionlib predict``: one method on one training set of a profile, from the command line.

``lesionlib train`` draws its training and validation images with :func:`lesionlib.splits.make_splits`
(the same splits as the grid) and trains through the method's :class:`lesionlib.segmenters.Segmenter`,
with the profile's settings for that method and any overrides given here. Examples::

    # U-Net on the quick profile's ATLAS subset (validation: the subset's side of the fixed 80/20 split)
    lesionlib train --profile quick --model unet --train-set adult_subset --out results/runs/unet_subset
    # fine-tune that model on the few-shot child images of seed 0, encoder frozen
    lesionlib train --profile quick --model unet --train-set adult_subset --fine-tune-from results/runs/unet_subset \
        --freeze-encoder --out results/runs/unet_ft
    # segment the children not used for fine-tuning
    lesionlib predict --checkpoint results/runs/unet_ft/checkpoint_best.pt --dataset synthetic_child \
        --exclude-split results/runs/unet_ft/params.yaml --out results/runs/unet_ft/predictions
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from lesionlib import config as project_config

log = logging.getLogger(__name__)

_OVERRIDES = (("iterations", "iterations_per_epoch"), ("batch_size", "batch_size"), ("lr", "lr"),
              ("workers", "num_workers"), ("cache", "cache"))


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``predict`` to the ``lesionlib`` command line."""
    p = subparsers.add_parser("train", help="train (or fine-tune) one method on one training set of a profile",
                              description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=project_config.DEFAULT_PROFILE)
    p.add_argument("--model", default="unet", help="registered method, e.g. unet, resunet (default: %(default)s)")
    p.add_argument("--train-set", default="adult_full", choices=["adult_full", "adult_subset", "child5"],
                   help="training set of make_splits (default: %(default)s)")
    p.add_argument("--fine-tune-from", type=Path, metavar="MODEL_DIR",
                   help="fine-tune the model in this folder (an earlier --out) on the few-shot child images")
    p.add_argument("--out", type=Path, required=True, help="model folder (an existing run there is resumed)")
    p.add_argument("--seed", type=int, default=0, help="training seed and few-shot selection (default: 0)")
    p.add_argument("--epochs", type=int, help="override the profile's epochs for this stage")
    p.add_argument("--iterations", type=int, help="iterations per epoch (override)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--lr", type=float, help="Adam learning rate (the paper's: 0.01)")
    p.add_argument("--workers", type=int, help="DataLoader workers")
    p.add_argument("--cache", choices=["auto", "memory", "disk", "none"],
                   help="where preprocessed volumes are kept (auto: memory when they fit in half the available RAM)")
    p.add_argument("--freeze-encoder", action="store_true", help="keep the encoder fixed while fine-tuning")
    p.add_argument("--no-augmentation", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("predict", help="segment a dataset with a trained checkpoint")
    p.add_argument("--dataset", default="synthetic_adult", help="manifest dataset name (default: %(default)s)")
    p.add_argument("--profile", default=project_config.DEFAULT_PROFILE)
    p.add_argument("--root", type=Path, help="dataset root (overrides the manifest)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True,
                   help="folder of the predictions: one BIDS-derivatives dataset per source dataset, "
                        "OUT/<dataset>/sub-X/ses-Y/anat/..._desc-lesion_mask.nii.gz")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default: %(default)s)")
    p.add_argument("--min-size", type=int, default=0, help="remove components smaller than this (voxels)")
    p.add_argument("--largest-component", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--exclude-split", type=Path, metavar="PARAMS_YAML",
                   help="skip the images a run trained on (its split.train and split.excluded)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_predict)


def _records(args: argparse.Namespace, purpose: str, warn: bool = True) -> list:
    """The dataset's records, every one valid for ``purpose`` (nothing written otherwise)."""
    from lesionlib.data.validate import discover_valid

    return discover_valid(args.dataset, purpose=purpose, warn=warn, profile=args.profile, root=args.root,
                          progress=not args.no_progress)


def _settings_overrides(args: argparse.Namespace, stage: str) -> dict[str, Any]:
    """The command line's changes to the method's profile settings (only those given)."""
    out: dict[str, Any] = {key: getattr(args, arg) for arg, key in _OVERRIDES if getattr(args, arg) is not None}
    if args.epochs is not None:
        out[f"epochs_{stage}"] = args.epochs
    if args.patch_size:
        out["patch_size"] = tuple(args.patch_size)
    if args.no_augmentation:
        out["augmentation"] = {"enabled": False}
    if args.freeze_encoder:
        out["freeze_encoder_when_fine_tuning"] = True
    return out


def run_train(args: argparse.Namespace) -> int:
    from lesionlib.data.validate import require_valid
    from lesionlib.experiments import shared_dir
    from lesionlib.profile import load_profile
    from lesionlib.segmenters import build_segmenter, get_segmenter
    from lesionlib.splits import make_splits

    fine_tuned = args.fine_tune_from is not None
    stage = "finetune" if fine_tuned else ("child_only" if args.train_set == "child5" else "adult")
    profile = load_profile(args.profile)
    overrides = _settings_overrides(args, stage)
    if overrides:
        settings = get_segmenter(args.model).Settings.model_validate(
            {**profile.method(args.model).model_dump(), **overrides})
        profile = profile.model_copy(update={"methods": {**profile.methods, args.model: settings}})
    splits = make_splits(profile, args.seed, progress=not args.no_progress)
    train_records, val_records = splits.training(args.train_set, fine_tuned)
    # everything training would reject, rejected before anything is written
    require_valid([*train_records, *val_records], purpose="train")
    segmenter = build_segmenter(args.model, profile, seed=args.seed, model_dir=args.out,
                                shared_dir=shared_dir(profile.name, args.model), progress=not args.no_progress)
    if fine_tuned:
        fit = segmenter.fine_tune(args.fine_tune_from, train_records)
    else:
        fit = segmenter.fit(train_records, val_records, stage=stage)
    log.info("%s trained on %s (%d images) into %s: %s; encoder_pretrained=%s", segmenter.label, args.train_set,
             len(train_records), args.out, fit.details, fit.encoder_pretrained)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from lesionlib.predict import predict_records

    records = _records(args, "predict")
    if args.exclude_split:
        split = (yaml.safe_load(args.exclude_split.read_text()) or {}).get("split", {})
        few = split.get("few_shot", {})
        used = set(split.get("train", [])) | set(few.get("train", [])) | set(few.get("excluded", []))
        before = len(records)
        records = [r for r in records if f"{r.dataset}/{r.case_id}" not in used]
        log.info("excluding %d images used by the run in %s", before - len(records), args.exclude_split)
    paths = predict_records(args.checkpoint, records, args.out, overlap=args.overlap, min_size_voxels=args.min_size,
                            largest_component=args.largest_component, device=args.device,
                            progress=not args.no_progress)
    log.info("wrote %d predictions under %s", len(paths), args.out)
    return 0
