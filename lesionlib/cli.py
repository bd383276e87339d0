"""The ``lesionlib`` command line.

Each subcommand lives beside the code it drives: a module in ``SUBCOMMAND_MODULES`` defines
``register_cli(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
``argparse.Namespace``; its return value is the exit code). To add a command, write
``register_cli`` in your module and list the module here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMAND_MODULES = [
    "lesionlib.synth.cli",      # lesionlib synth
    "lesionlib.data.cli",       # lesionlib validate, lesionlib discover
    "lesionlib.training_cli",   # lesionlib train, lesionlib predict (U-Net, Res-U-Net)
    "lesionlib.nnunet.cli",     # lesionlib nnunet {export,plan,train,finetune,predict,evaluate}
    "lesionlib.baselines.cli",  # lesionlib lesiongnb {fit,predict}, lesionlib propagate
    "lesionlib.experiments",    # lesionlib grid {list,run,report}
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lesionlib", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the project is not there (yet)
                continue
            raise
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
