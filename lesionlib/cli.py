"""The ``lesionlib`` command line.

Each subcommand lives beside the code it drives: a module in ``SUBCOMMAND_MODULES`` defines
``register_cli(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
``argparse.Namespace``; its return value is the exit code). To add a command, write
``register_cli`` in your module and list the module here. A listed module that fails to import
is an error (exit 1, the import error named), never a silently missing command.

Bad input is handled here, once, for every subcommand: a
:class:`~lesionlib.io.DataValidationError` (one file, or
:class:`~lesionlib.data.validate.DataValidationErrors` listing many) becomes one line per failing
file on stderr, ``<path>: <problem>``, and exit code 1, with no traceback. A
:class:`~lesionlib.data.manifest.ManifestError` or :class:`~lesionlib.profile.ProfileError` (configuration) is
one line and exit code 1.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

SUBCOMMAND_MODULES = [
    "lesionlib.synth.cli",      # lesionlib synth
    "lesionlib.data.cli",       # lesionlib validate, lesionlib discover
    "lesionlib.training_cli",   # lesionlib train, lesionlib predict (U-Net, Res-U-Net)
    "lesionlib.nnunet.cli",     # lesionlib nnunet {export,plan,train,finetune,predict,evaluate}
    "lesionlib.baselines.cli",  # lesionlib lesiongnb {fit,predict}, lesionlib propagate
    "lesionlib.experiments",    # lesionlib grid {list,run,report}
    "lesionlib.rehearsal",      # lesionlib rehearsal (synthetic stand-ins for the real datasets)
]

EXIT_ERROR = 1


class SubcommandImportError(RuntimeError):
    """A module of ``SUBCOMMAND_MODULES`` could not be imported."""

    def __init__(self, module: str, cause: BaseException):
        self.module = module
        super().__init__(f"cannot load the subcommands of {module} ({type(cause).__name__}: {cause}); "
                         "fix the import error or reinstall lesionlib (pip install -e .)")


def build_parser() -> argparse.ArgumentParser:
    """The full parser; raises :class:`SubcommandImportError` if a subcommand module fails to import."""
    parser = argparse.ArgumentParser(prog="lesionlib", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--profiles", type=Path, action="append", default=None, metavar="FILE",
                        help="a file of your own profiles (may `extends:` a built-in one); repeatable; "
                             "added to $LESIONLIB_PROFILES for this command and every process it starts")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # ImportError, or anything the module raises at import time
            raise SubcommandImportError(name, exc) from exc
        module.register_cli(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def data_error_lines(exc: BaseException) -> list[str]:
    """One ``<path>: <problem>`` line per failing file of a (multi-file) data validation error.

    A file with several problems gets one line with the problems joined by ``; ``.
    """
    errors = getattr(exc, "errors", None) or [exc]
    problems: dict[Path, list[str]] = {}
    for error in errors:
        found = problems.setdefault(Path(error.path), [])
        problem = _one_line(error.problem)
        if problem not in found:
            found.append(problem)
    return [f"{path}: {'; '.join(items)}" for path, items in problems.items()]


def main(argv: list[str] | None = None) -> int:
    """Run ``lesionlib`` with ``argv``; returns the exit code (see the module docstring)."""
    from lesionlib.data.manifest import ManifestError
    from lesionlib.io import DataValidationError
    from lesionlib.profile import ProfileError

    try:
        parser = build_parser()
    except SubcommandImportError as exc:
        print(f"lesionlib: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    args = parser.parse_args(argv)
    if args.profiles:
        import os

        from lesionlib.config import PROFILES_ENV

        own = [str(p.expanduser().resolve()) for p in args.profiles]
        os.environ[PROFILES_ENV] = os.pathsep.join([*own, *filter(None, [os.environ.get(PROFILES_ENV)])])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DataValidationError as exc:
        lines = data_error_lines(exc)
        for line in lines:
            print(line, file=sys.stderr)
        print(f"lesionlib {args.command}: {len(lines)} file(s) failed validation; fix them and run again",
              file=sys.stderr)
        return EXIT_ERROR
    except (ManifestError, ProfileError) as exc:
        print(f"lesionlib {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
