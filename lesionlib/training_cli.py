"""``lesionlib train`` and ``lesionlib predict``: the MONAI models from the command line.

Examples::

    # adult training on the quick profile's synthetic cohort, ATLAS subset rule, 80/20 split
    lesionlib train --dataset synthetic_adult --model unet --subset --out results/runs/unet_subset
    # fine-tune on 5 child images (subject-level, stratified by lesion size), encoder frozen
    lesionlib train --dataset synthetic_child --stage finetune --few-shot 5 \\
        --init-from results/runs/unet_subset/checkpoint_best.pt --freeze-encoder --out results/runs/unet_ft
    # segment the children not used for fine-tuning
    lesionlib predict --checkpoint results/runs/unet_ft/checkpoint_best.pt --dataset synthetic_child \\
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


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``predict`` to the ``lesionlib`` command line."""
    p = subparsers.add_parser("train", help="train or fine-tune a U-Net / Res-U-Net",
                              description="Train (or resume, or fine-tune) a MONAI model; see lesionlib.train.")
    _add_data_args(p)
    p.add_argument("--model", default="unet", help="registry name: unet or resunet (default: %(default)s)")
    p.add_argument("--stage", default="adult", choices=["adult", "finetune", "child_only"],
                   help="which epoch count of the profile to use (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="run folder (an existing run there is resumed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--iterations", type=int, help="iterations per epoch (override)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--lr", type=float, help="Adam learning rate (default 0.01, the paper's)")
    p.add_argument("--device", help="cpu, cuda, auto (default: the profile's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    p.add_argument("--cache", default="memory", choices=["memory", "disk", "none"])
    p.add_argument("--subset", action="store_true", help="apply the ATLAS subset rules (>= 2.5 mL, no cerebellum)")
    p.add_argument("--cerebellum-mask", type=Path, help="MNI cerebellum atlas for --subset (default: MNI box)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="subject-level validation fraction")
    p.add_argument("--few-shot", type=int, metavar="N",
                   help="train on N images of N different subjects (stratified by lesion size), no validation")
    p.add_argument("--init-from", type=Path, help="checkpoint to fine-tune from")
    p.add_argument("--freeze-encoder", action="store_true")
    p.add_argument("--encoder-weights", type=Path, help="MedicalNet resnet_10.pth for resunet")
    p.add_argument("--no-augmentation", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("predict", help="segment a dataset with a trained checkpoint")
    _add_data_args(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="root of derivatives/lesionlib/")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default: %(default)s)")
    p.add_argument("--min-size", type=int, default=0, help="remove components smaller than this (voxels)")
    p.add_argument("--largest-component", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--exclude-split", type=Path, metavar="PARAMS_YAML",
                   help="skip the images a run trained on (its split.train and split.excluded)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_predict)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic_adult", help="manifest dataset name (default: %(default)s)")
    p.add_argument("--profile", default=project_config.DEFAULT_PROFILE)
    p.add_argument("--root", type=Path, help="dataset root (overrides the manifest)")


def _records(args: argparse.Namespace, purpose: str, warn: bool = True) -> list:
    """The dataset's records, every one valid for ``purpose`` (nothing written otherwise)."""
    from lesionlib.data.validate import discover_valid

    return discover_valid(args.dataset, purpose=purpose, warn=warn, profile=args.profile, root=args.root,
                          progress=not args.no_progress)


def run_train(args: argparse.Namespace) -> int:
    from lesionlib.data.validate import require_valid
    from lesionlib.samplers import atlas_subset, few_shot_split, train_val_split

    # every file readable, masks binary and on their image's grid before the subset and split rules
    # read masks (an empty mask is fine here); the chosen cases are then checked for training
    records = _records(args, "evaluate", warn=False)
    split_info: dict[str, Any] = {"dataset": args.dataset, "profile": args.profile}
    if args.subset:
        records, report = atlas_subset(records, cerebellum_mask=args.cerebellum_mask, progress=not args.no_progress)
        split_info["atlas_subset"] = {k: v for k, v in report.to_dict().items() if k != "removed"}
    if args.few_shot:
        selection = few_shot_split(records, n_images=args.few_shot, seed=args.seed)
        train_records, val_records = selection.train, []
        split_info["few_shot"] = selection.to_dict()
    else:
        train_records, val_records = train_val_split(records, val_fraction=args.val_fraction, seed=args.seed)
        split_info["val_fraction"] = args.val_fraction
    # everything train() would reject, rejected before anything else happens (or is written)
    require_valid([*train_records, *val_records], purpose="train")
    _check_encoder_weights(args.model, args.init_from, args.encoder_weights)

    from lesionlib.train import TrainConfig, train
    from lesionlib.transforms import AugmentationConfig

    overrides: dict[str, Any] = {"model": args.model, "seed": args.seed, "num_workers": args.workers,
                                 "cache": args.cache, "freeze_encoder": args.freeze_encoder,
                                 "progress": not args.no_progress}
    for key, value in (("epochs", args.epochs), ("iterations_per_epoch", args.iterations),
                       ("batch_size", args.batch_size), ("lr", args.lr), ("device", args.device),
                       ("init_from", args.init_from), ("encoder_weights", args.encoder_weights)):
        if value is not None:
            overrides[key] = str(value) if isinstance(value, Path) else value
    if args.patch_size:
        overrides["patch_size"] = tuple(args.patch_size)
    if args.no_augmentation:
        overrides["augmentation"] = AugmentationConfig(enabled=False)
    cfg = TrainConfig.from_profile(args.profile, stage=args.stage, **overrides)
    result = train(cfg, train_records, val_records, args.out, split_info=split_info)
    log.info("run %s: %d epochs, best epoch %s (val Dice %s), encoder_pretrained=%s", result.out_dir,
             result.epochs_completed, result.best_epoch, result.best_val_dice, result.encoder_pretrained)
    return 0


def _check_encoder_weights(model: str, init_from: Path | None, encoder_weights: Path | None) -> None:
    """Read the MedicalNet weights a new Res-U-Net run will load (``--encoder-weights`` or the manifest
    asset), so a configured but missing, unreadable or corrupt file is reported before the run
    folder exists, never turned into "no weights"."""
    from lesionlib.models import model_parameters
    from lesionlib.models.medicalnet import default_weights_path, read_medicalnet_state_dict

    try:
        pretrained_encoder = "encoder_weights" in model_parameters(model)
    except KeyError:  # an unknown model name is reported where the model is built
        return
    if not pretrained_encoder or init_from is not None:
        return

    weights = encoder_weights or default_weights_path()
    if weights is not None:
        read_medicalnet_state_dict(weights)


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
