"""``lesionlib nnunet ...``: the nnU-Net v2 bridge on the command line.

Every subcommand names the workspace and dataset (``--run-dir D --dataset-id 501 --dataset-name
Adult``) and, where cases are needed, a manifest dataset (``--records synthetic_child``,
optionally narrowed with repeated ``--case sub-01_ses-1``)::

    lesionlib nnunet export   --run-dir D --dataset-id 501 --dataset-name Adult --records synthetic_adult
    lesionlib nnunet plan     --run-dir D --dataset-id 501 --dataset-name Adult
    lesionlib nnunet train    --run-dir D --dataset-id 501 --dataset-name Adult --epochs 2 --iterations 5
    lesionlib nnunet finetune --run-dir D --dataset-id 502 --dataset-name Child --source-id 501 --source-name Adult
    lesionlib nnunet predict  --run-dir D --dataset-id 501 --dataset-name Adult --records synthetic_child --out P
    lesionlib nnunet evaluate --run-dir D --dataset-id 501 --dataset-name Adult --records synthetic_child --out P \\
                              --out-csv P/metrics.csv

``predict`` writes one BIDS-derivatives dataset per source dataset under ``--out``
(:meth:`lesionlib.nnunet.NnUNetRun.predict`, :func:`lesionlib.bids.save_prediction`), e.g.
``P/synthetic_child/dataset_description.json`` and
``P/synthetic_child/sub-01/ses-1/anat/sub-01_ses-1_desc-lesion_mask.nii.gz`` with its JSON sidecar;
``evaluate`` reads the masks back from there.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lesionlib import config

log = logging.getLogger(__name__)


def _records(args: argparse.Namespace, name: str | None, cases: list[str] | None, purpose: str):
    """The selected cases of dataset ``name``, every one valid for ``purpose`` (nothing written otherwise)."""
    from lesionlib.data.validate import discover_valid

    if name is None:
        raise SystemExit("this command needs --records NAME (a manifest dataset)")
    records = discover_valid(name, purpose=purpose, cases=cases or None, profile=args.profile, root=args.root)
    missing = set(cases or ()) - {r.case_id for r in records}
    if missing:
        raise SystemExit(f"{name}: no such cases {sorted(missing)}")
    return records


def _run(args: argparse.Namespace, dataset_id: int | None = None, dataset_name: str | None = None):
    from lesionlib.nnunet.pipeline import NnUNetRun

    return NnUNetRun(args.run_dir, dataset_id or args.dataset_id, dataset_name or args.dataset_name,
                     device=args.device, num_processes=args.processes)


def _cmd_export(args: argparse.Namespace) -> int:
    from lesionlib.data.validate import DataValidationErrors

    sets, errors = [], []  # both sets checked before one error names every bad file
    for name, cases, purpose in ((args.records, args.case, "train"), (args.test_records, args.test_case, "predict")):
        try:
            sets.append(_records(args, name, cases, purpose) if name or purpose == "train" else [])
        except DataValidationErrors as exc:
            errors += exc.errors
    if errors:
        raise DataValidationErrors(errors)
    train, test = sets
    log.info("exported to %s", _run(args).export(train, test))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    log.info("plans: %s", _run(args).plan_and_preprocess(verify=not args.no_verify))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    run = _run(args)
    fold = args.fold if args.fold == "all" else int(args.fold)
    log.info("trained: %s", run.train(fold, epochs=args.epochs, iterations=args.iterations, val_iterations=args.val_iterations,
                    final_validation=not args.no_final_validation, trainer=args.trainer, plans=args.plans,
                    pretrained_weights=args.pretrained_weights, continue_training=args.resume))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    run = _run(args)
    source_dir = args.source_run_dir or args.run_dir
    from lesionlib.nnunet.pipeline import NnUNetRun

    source = NnUNetRun(source_dir, args.source_id, args.source_name, device=args.device,
                       num_processes=args.processes)
    fold = args.fold if args.fold == "all" else int(args.fold)
    log.info("fine-tuned: %s", run.finetune(source, pretrained_weights=args.pretrained_weights, fold=fold, epochs=args.epochs,
                       iterations=args.iterations, val_iterations=args.val_iterations,
                       final_validation=not args.no_final_validation, verify=not args.no_verify))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    run = _run(args)
    fold = args.fold if args.fold == "all" else int(args.fold)
    from lesionlib import bids

    records = _records(args, args.records, args.case, "predict")
    paths = run.predict(records, args.out, tta=not args.no_tta, model_dir=args.model_dir, folds=[fold])
    datasets = sorted({str(bids.prediction_root(args.out, r.dataset)) for r in records})
    log.info("%d predictions in %s", len(paths), ", ".join(datasets) or args.out)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    table = _run(args).evaluate(_records(args, args.records, args.case, "evaluate"), args.out, out_csv=args.out_csv)
    log.info("metrics:\n%s", table[["case_id", "dice", "hausdorff95_mm"]].to_string(index=False))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lesionlib nnunet {export,plan,train,finetune,predict,evaluate}``."""
    from lesionlib.nnunet.pipeline import FINETUNE_EPOCHS
    from lesionlib.nnunet.trainers import DEFAULT_EPOCHS, DEFAULT_ITERATIONS

    top = subparsers.add_parser("nnunet", help="nnU-Net v2: export, plan, train, fine-tune, predict, evaluate",
                                description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="nnunet_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run-dir", type=Path, required=True, help="workspace holding nnU-Net's folders")
        p.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id, 1..999")
        p.add_argument("--dataset-name", required=True, help="nnU-Net dataset name (letters, digits)")
        p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                       help="default: cuda when available, else cpu")
        p.add_argument("--processes", type=int, default=2, help="nnU-Net worker processes (default: %(default)s)")
        p.add_argument("--profile", default=config.DEFAULT_PROFILE, help="profile of the synthetic cohorts")
        p.add_argument("--root", type=Path, default=None, help="dataset root overriding the manifest")

    def records(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--records", required=required, metavar="NAME", help="manifest dataset of the cases")
        p.add_argument("--case", action="append", metavar="CASE_ID", help="only this case (repeatable)")

    def schedule(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--fold", default="all", help="'all' or a fold of splits_final.json (default: all)")
        p.add_argument("--epochs", type=int, default=epochs, help="default: %(default)s")
        p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="per epoch (default: %(default)s)")
        p.add_argument("--val-iterations", type=int, default=None, help="per epoch (default: iterations / 5)")
        p.add_argument("--no-final-validation", action="store_true", help="skip nnU-Net's final validation")
        p.add_argument("--pretrained-weights", type=Path, default=None, help="nnU-Net checkpoint to start from")

    p = sub.add_parser("export", help="write cases in nnU-Net's raw format")
    common(p)
    records(p)
    p.add_argument("--test-records", metavar="NAME", default=None, help="manifest dataset written to imagesTs")
    p.add_argument("--test-case", action="append", metavar="CASE_ID", help="only this test case (repeatable)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("plan", help="nnUNetv2_plan_and_preprocess (3d_fullres)")
    common(p)
    p.add_argument("--no-verify", action="store_true", help="skip --verify_dataset_integrity")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("train", help="nnUNetv2_train (default: nnU-Net's 1000 x 250 schedule)")
    common(p)
    schedule(p, DEFAULT_EPOCHS)
    p.add_argument("--trainer", default=None, help="explicit trainer class instead of the schedule")
    p.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoint_latest (nnU-Net's --c)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="transfer a source dataset's plans, preprocess, train from its weights")
    common(p)
    schedule(p, FINETUNE_EPOCHS)
    p.add_argument("--source-id", type=int, required=True, help="dataset id of the pretrained model")
    p.add_argument("--source-name", required=True, help="dataset name of the pretrained model")
    p.add_argument("--source-run-dir", type=Path, default=None, help="its workspace (default: --run-dir)")
    p.add_argument("--no-verify", action="store_true", help="skip --verify_dataset_integrity")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("predict", help="nnUNetPredictor on the cases; masks on each input's grid")
    common(p)
    records(p)
    p.add_argument("--out", type=Path, required=True,
                   help="folder of the predictions: one BIDS-derivatives dataset per source dataset, "
                        "OUT/<dataset>/sub-X/ses-Y/anat/..._desc-lesion_mask.nii.gz")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    p.add_argument("--model-dir", type=Path, default=None, help="trainer__plans__configuration folder")
    p.add_argument("--fold", default="all", help="default: all")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of the predictions against the cases' masks")
    common(p)
    records(p)
    p.add_argument("--out", type=Path, required=True,
                   help="--out given to predict (its derivative datasets hold the masks)")
    p.add_argument("--out-csv", type=Path, default=None, help="CSV to write")
    p.set_defaults(func=_cmd_evaluate)
