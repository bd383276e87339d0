"""One clone, one code: a process imports the ``lesionlib`` of the clone it was started from, or stops.

Several clones of the project on one machine share one virtual environment (``$LESIONLIB_VENV``), whose
editable install points at the clone that last ran ``make``. A process started in another clone (a
Snakemake run by hand, a notebook kernel, the ``lesionlib`` script) would import that other clone's code
and ``experiments.yaml``. So, when ``lesionlib`` is imported, :func:`check` compares the folder it was
imported from with

* ``$LESIONLIB_CLONE``, when set (the Makefile exports it, with ``PYTHONPATH`` starting with the clone;
  the Snakefile sets both for its jobs, and every subprocess inherits them: papermill and book kernels);
* the clone holding the current folder, if any: the nearest folder at or above it holding a
  ``pyproject.toml`` of project ``lesionlib`` and ``lesionlib/__init__.py``;

and raises :class:`WrongCloneError` (an ``ImportError``) naming both clones and the fix when they differ.
Paths are compared after resolving symlinks. An installed (non-editable) copy used outside any clone,
or any copy with the current folder outside every clone and no ``$LESIONLIB_CLONE``, passes.
``LESIONLIB_CLONE_CHECK=0`` turns the check off. It imports nothing but ``os`` and costs a few ``stat`` calls
and the reading of a ``pyproject.toml`` or two.
"""

from __future__ import annotations

import os

__all__ = ["CHECK_ENV", "CLONE_ENV", "WrongCloneError", "check", "child_environ", "clone_of", "export_to_children",
           "imported_root", "is_clone"]

CLONE_ENV = "LESIONLIB_CLONE"
CHECK_ENV = "LESIONLIB_CLONE_CHECK"
_OFF = {"0", "off", "no", "false"}


class WrongCloneError(ImportError):
    """``lesionlib`` was imported from another clone (or copy) than the one this process was started from."""

    def __init__(self, imported: str, expected: str, reasons: list[str]):
        self.imported = imported
        self.expected = expected
        where = f"the clone {imported}" if is_clone(imported) else f"the installed copy {imported}"
        super().__init__(
            f"lesionlib was imported from {where}, but {'; and '.join(reasons)}. Clones that share a virtual "
            f"environment import the clone its editable install points at (the one that ran `make` last) "
            f"unless told otherwise. To run the code of {expected}: run `make` from {expected} (its Makefile "
            f"exports {CLONE_ENV} and PYTHONPATH), or start the command with "
            f"`{CLONE_ENV}={expected} PYTHONPATH={expected}`. ({CHECK_ENV}=0 turns this check off.)")


def is_clone(folder: str) -> bool:
    """Whether ``folder`` is a lesionlib clone: ``lesionlib/__init__.py`` and a ``pyproject.toml`` of
    project ``lesionlib``."""
    pyproject = os.path.join(folder, "pyproject.toml")
    if not (os.path.isfile(pyproject) and os.path.isfile(os.path.join(folder, "lesionlib", "__init__.py"))):
        return False
    try:
        with open(pyproject, encoding="utf-8") as fh:
            return _project_name(fh.read()) == "lesionlib"
    except (OSError, UnicodeDecodeError):
        return False


def _project_name(pyproject_text: str) -> str | None:
    """``[project] name`` of a ``pyproject.toml``, read line by line (``tomllib`` would cost more than the check)."""
    section = None
    for raw in pyproject_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] ")
        elif section == "project" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key == "name":
                return value.strip("\"'")
    return None


def clone_of(path: str) -> str | None:
    """The nearest lesionlib clone at or above ``path`` (symlinks resolved), or ``None``."""
    folder = os.path.realpath(path)
    while True:
        if is_clone(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def imported_root(package_file: str | None = None) -> str:
    """The folder holding the imported ``lesionlib`` package (a clone, or site-packages), symlinks resolved."""
    return os.path.dirname(os.path.dirname(os.path.realpath(package_file or __file__)))


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the current folder was deleted
        return None


def check(package_file: str | None = None) -> None:
    """Raise :class:`WrongCloneError` when ``lesionlib`` (``package_file``: its ``__init__.py``) was imported
    from another folder than ``$LESIONLIB_CLONE`` or than the clone holding the current folder."""
    if os.environ.get(CHECK_ENV, "").strip().lower() in _OFF:
        return
    imported = imported_root(package_file)
    declared = os.environ.get(CLONE_ENV, "").strip()
    if declared:
        expected = os.path.realpath(os.path.expanduser(declared))
        if expected != imported:
            raise WrongCloneError(imported, expected, [f"${CLONE_ENV} names {expected}"])
    cwd = _cwd()
    started_in = clone_of(cwd) if cwd else None
    if started_in is not None and started_in != imported:
        reasons = [f"this process was started in the clone {started_in} (current folder {cwd})"]
        if declared:
            reasons.append(f"${CLONE_ENV} names {imported}")
        raise WrongCloneError(imported, started_in, reasons)


def child_environ(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with ``$LESIONLIB_CLONE`` and the first entry of ``PYTHONPATH`` set to the
    imported clone, so that a subprocess imports this clone whatever its current folder. Unchanged when
    ``lesionlib`` is an installed copy rather than a clone."""
    env = dict(os.environ if env is None else env)
    root = imported_root()
    if not is_clone(root):
        return env
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *rest])
    env[CLONE_ENV] = root
    return env


def export_to_children() -> None:
    """Set ``$LESIONLIB_CLONE`` and ``PYTHONPATH`` in ``os.environ`` (see :func:`child_environ`): every process
    started from here on (Snakemake jobs, notebook kernels) imports this clone."""
    os.environ.update(child_environ())
