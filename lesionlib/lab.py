"""``make lab``: JupyterLab on this clone, in the project's environment, with the notebooks ready to run and edit.

    python -m lesionlib.lab [--port 8888] [-- <more jupyter lab options>]

What it does, in order:

1. **Kernel.** The environment's own ``python3`` kernel (ipykernel's, ``Python 3 (ipykernel)`` as the notebooks'
   headers say, so that saving a notebook leaves its ``.py`` header as it is) runs this interpreter: Jupyter is told
   to prefer the environment's kernels to a user's (``JUPYTER_PREFER_ENV_PATH=1``), so a ``python3`` kernel
   installed elsewhere (another Python, without lesionlib) is not the one that runs. Kernels inherit
   ``$LESIONLIB_CLONE`` and ``PYTHONPATH`` (set here, as the Makefile does): they import this clone's lesionlib.
2. **Notebooks.** ``notebooks/*.py`` are jupytext percent notebooks paired with ``.ipynb`` files
   (``notebooks/jupytext.toml``; git ignores ``*.ipynb``): ``jupytext --sync`` creates or updates each ``.ipynb``
   from its ``.py`` (inputs from the newer of the two, outputs kept). In JupyterLab, open ``notebooks/cell.ipynb``
   (or right-click ``cell.py`` > Open With > Notebook): jupytext's contents manager reads the inputs from the
   ``.py`` and saves both files, so the ``.py`` under version control changes only when a cell does.
3. **Server.** Starts ``jupyter lab`` on 127.0.0.1 (first free port from ``--port``), rooted at the clone, with a
   random token (or ``$JUPYTER_TOKEN``) passed through the environment, never on the command line, and prints
   the URL that opens ``notebooks/cell.ipynb``.

Notebooks run by hand write under ``results/<profile>/interactive/`` (:func:`lesionlib.experiments.interactive_dir`).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from lesionlib import clone, config

__all__ = ["free_port", "kernel_in_use", "lab_command", "lab_url", "main", "sync_notebooks"]

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
OPEN_FIRST = "notebooks/cell.ipynb"


def kernel_in_use() -> tuple[str, list[str]]:
    """The folder and command of the ``python3`` kernel a server started from here runs (environment first)."""
    from jupyter_client.kernelspec import KernelSpecManager

    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")
    spec = KernelSpecManager().get_kernel_spec("python3")
    return spec.resource_dir, list(spec.argv)


def sync_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """``jupytext --sync`` every ``*.py`` notebook of ``notebooks_dir``; returns the paired ``.ipynb`` files.

    Raises ``RuntimeError`` with jupytext's message (it names the file) when a notebook cannot be synced.
    """
    sources = sorted(Path(notebooks_dir).glob("*.py"))
    if not sources:
        return []
    proc = subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", *map(str, sources)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupytext --sync {notebooks_dir}/*.py failed (exit {proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr).strip()}")
    return [p.with_suffix(".ipynb") for p in sources]


def free_port(start: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first port from ``start`` on which ``host`` accepts a listening socket."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} in {start}-{start + tries - 1}")


def lab_url(port: int, token: str, path: str = OPEN_FIRST, host: str = "127.0.0.1") -> str:
    """The URL that opens ``path`` (relative to the clone) in JupyterLab."""
    return f"http://{host}:{port}/lab/tree/{path}?token={token}"


def lab_command(port: int, root: Path = config.PROJECT_ROOT, extra: list[str] | None = None,
                host: str = "127.0.0.1") -> list[str]:
    """The ``jupyter lab`` command line (no token: it travels in ``$JUPYTER_TOKEN``). As root (containers, CI),
    the server must be told it may run so; it listens on ``host`` (loopback) only."""
    as_root = ["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={host}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", *as_root, *(extra or [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lesionlib.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888, help="first port tried (default 8888)")
    parser.add_argument("--no-sync", action="store_true", help="do not pair notebooks/*.py with .ipynb first")
    parser.add_argument("--root", type=Path, default=config.PROJECT_ROOT,
                        help="folder the server shows, holding notebooks/ (default: this clone)")
    parser.add_argument("extra", nargs="*", help="more `jupyter lab` options, after --")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[lab] %(message)s")
    clone.export_to_children()  # kernels import this clone (the Makefile sets the same)
    os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"  # the environment's python3 kernel before a user's
    folder, argv = kernel_in_use()
    log.info("python3 kernel: %s (%s)", folder, " ".join(argv[:3]))
    root = args.root.resolve()
    if not (root / "notebooks").is_dir():
        parser.error(f"{root}: no notebooks/ folder")
    if not args.no_sync:
        sync_notebooks(root / "notebooks")
    port = free_port(args.port)
    os.environ["JUPYTER_TOKEN"] = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    cmd = lab_command(port, root, extra=args.extra)
    # the URL first, on its own line: the server's own log follows
    print(f"[lab] JupyterLab on {root}: {lab_url(port, os.environ['JUPYTER_TOKEN'])}", flush=True)
    log.info("notebooks run here write under results/<profile>/interactive/; Ctrl+C twice stops the server")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(cmd[0], cmd)  # the server replaces this process: Ctrl+C and signals reach it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
