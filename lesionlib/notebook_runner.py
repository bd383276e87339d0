"""Execute a jupytext percent-format notebook with papermill, atomically per stage.

``notebooks/*.py`` are converted to ``.ipynb`` with jupytext's API (papermill reads only
``.ipynb``; the ``parameters`` cell tag survives the conversion), then executed by papermill
into a staging folder inside the run folder::

    <run_dir>/.partial-<stage>/         while running (the notebook is saved after every cell)
    <run_dir>/<stage>.ipynb             on success, with the stage's outputs moved beside it
    <run_dir>/FAILED-<stage>-<time>/<stage>.FAILED.ipynb   on failure: readable, clearly failed

So a failed run never leaves anything that looks finished: the executed notebook (the marker
Snakemake waits for) is moved into place last, and only after every cell succeeded. The run's
parameters accumulate in ``<run_dir>/params.yaml`` (one entry per stage under ``stages``).

With ``resources_file``, the stage's wall seconds, CPU seconds and peak RSS (this process, the kernel
and every process the kernel waited for: :class:`lesionlib.resources.ResourceMeter`) are written to
``<run_dir>/<resources_file>`` (or beside the failed notebook), with the host's name, CPU model and CPU count.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jupytext
import nbformat
import yaml

from lesionlib.io import atomic_path
from lesionlib.resources import ResourceMeter, write_resources

__all__ = ["StageFailed", "py_to_ipynb", "run_notebook", "FAILED_PREFIX", "STAGING_PREFIX"]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".partial-"
FAILED_PREFIX = "FAILED-"


class StageFailed(RuntimeError):
    """A notebook stage failed; ``failed_dir`` holds its partial notebook and ``error.txt``."""

    def __init__(self, notebook: Path, failed_dir: Path, cause: BaseException):
        self.notebook = notebook
        self.failed_dir = failed_dir
        super().__init__(f"{notebook}: execution failed ({type(cause).__name__}: {cause}); "
                         f"partial notebook kept in {failed_dir}")


def py_to_ipynb(source: Path, target: Path) -> Path:
    """Convert a jupytext notebook (percent ``.py``, or any format jupytext reads) to ``.ipynb``.

    Raises ``ValueError`` naming the file when it has no cell tagged ``parameters``.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: notebook does not exist")
    nb = jupytext.read(source)
    if not any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells):
        raise ValueError(f"{source}: no cell tagged 'parameters' (papermill needs one)")
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    with atomic_path(target) as tmp:
        nbformat.write(nb, str(tmp))
    return Path(target)


def _move_into(src_dir: Path, dst_dir: Path, skip: tuple[str, ...] = ()) -> None:
    """Move every entry of ``src_dir`` into ``dst_dir``, replacing same-named entries, except ``skip``."""
    for entry in sorted(src_dir.iterdir()):
        if entry.name in skip:
            continue
        target = dst_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def _merge_params(run_dir: Path, staged: Path, run_params: Mapping[str, Any], stage: str,
                  stage_params: Mapping[str, Any], notebook: Path, duration_s: float) -> None:
    """``<run_dir>/params.yaml`` = earlier stages' entries, updated with a ``params.yaml`` the notebook
    wrote itself (``staged``, if any), then with ``run_params``; plus this stage's record."""
    path = run_dir / "params.yaml"
    current: dict[str, Any] = {}
    for source in (path, staged):
        if source.is_file():
            current.update(yaml.safe_load(source.read_text()) or {})
    current.update({k: v for k, v in run_params.items()})
    stages = dict(current.get("stages") or {})
    stages[stage] = {
        "notebook": str(notebook),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration_s, 1),
        "parameters": {k: v for k, v in stage_params.items() if k not in run_params},
    }
    current["stages"] = stages
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(current, sort_keys=False))


def _keep_failed(staging: Path, run_dir: Path, stage: str, exc: BaseException) -> Path:
    """Move a failed stage's staging folder to ``FAILED-<stage>-<time>/`` with its partial notebook and
    ``error.txt``; returns that folder."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    failed = run_dir / f"{FAILED_PREFIX}{stage}-{stamp}"
    os.replace(staging, failed)
    if (failed / f"{stage}.ipynb").exists():
        os.replace(failed / f"{stage}.ipynb", failed / f"{stage}.FAILED.ipynb")
    (failed / "error.txt").write_text("".join(traceback.format_exception(exc)))
    log.error("%s/%s failed; partial notebook in %s", run_dir.name, stage, failed)
    return failed


def _write_usage(meter: ResourceMeter, folder: Path, resources_file: str | None, stage: str, status: str) -> None:
    """The stage's measured resources to ``folder/resources_file`` (nothing when ``resources_file`` is None)."""
    if not resources_file:
        return
    try:
        write_resources(folder / resources_file, {**meter.stop().record(), "stage": stage, "status": status})
    except OSError as exc:  # a full disk must not hide the stage's own outcome
        log.warning("%s: resources not recorded (%s)", folder / resources_file, exc)


@contextlib.contextmanager
def _kernel_imports_this_lesionlib() -> Iterator[None]:
    """Put the folder holding the running ``lesionlib`` first on the kernel's ``PYTHONPATH``.

    The kernel starts in the stage's staging folder and would otherwise import whatever
    ``lesionlib`` the environment points at: with one venv shared by several clones, that is the
    clone installed last, whose data and results roots are not this run's.
    """
    package_parent = str(Path(__file__).resolve().parent.parent)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([package_parent, *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def run_notebook(notebook: Path, run_dir: Path, *, stage: str,
                 parameters: Mapping[str, Any] | Callable[[Path], Mapping[str, Any]],
                 run_params: Mapping[str, Any] | None = None, kernel_name: str = "python3",
                 timeout_s: float | None = None, resources_file: str | None = None) -> Path:
    """Execute ``notebook`` as stage ``stage`` of the run in ``run_dir``.

    Parameters
    ----------
    notebook
        A jupytext ``.py`` (percent format) or ``.ipynb`` notebook with a ``parameters`` cell.
    run_dir
        The run's folder (created if needed); earlier stages' outputs stay untouched.
    stage
        Stage name: names the executed notebook ``<stage>.ipynb`` and the staging folder.
    parameters
        Papermill parameters, or a function of the staging folder returning them (so that the
        notebook writes its outputs to ``out_dir`` = the staging folder).
    run_params
        The run's own parameters, merged into ``<run_dir>/params.yaml``.
    kernel_name
        Jupyter kernel (``python3`` runs the current interpreter).
    timeout_s
        Per-cell execution timeout in seconds (``None``: no limit).
    resources_file
        File (in ``run_dir``) for the stage's ``wall_s``, ``cpu_s``, ``peak_rss_mib`` and host
        (:meth:`lesionlib.resources.Usage.record`; the kernel and its descendants included); ``None``: none.

    Returns
    -------
    Path
        ``<run_dir>/<stage>.ipynb``, the executed notebook.

    Raises
    ------
    StageFailed
        A cell raised, or execution was interrupted; the partial notebook is at
        ``<run_dir>/FAILED-<stage>-<UTC time>/<stage>.FAILED.ipynb`` with ``error.txt``.
    """
    import papermill as pm

    notebook = Path(notebook)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = run_dir / f"{STAGING_PREFIX}{stage}"
    if staging.exists():
        log.warning("removing a stale staging folder from an interrupted run: %s", staging)
        shutil.rmtree(staging)
    staging.mkdir()
    params = dict(parameters(staging) if callable(parameters) else parameters)
    source = staging / f".{stage}.source.ipynb"
    executed = staging / f"{stage}.ipynb"
    started = time.monotonic()
    meter = ResourceMeter().start()
    try:
        if notebook.suffix == ".ipynb":
            shutil.copyfile(notebook, source)
        else:
            py_to_ipynb(notebook, source)
        log.info("executing %s as %s/%s", notebook.name, run_dir.name, stage)
        with _kernel_imports_this_lesionlib():
            pm.execute_notebook(str(source), str(executed), parameters=params, kernel_name=kernel_name,
                                cwd=str(staging), progress_bar=False, log_output=False,
                                request_save_on_cell_execute=True, execution_timeout=timeout_s)
    except BaseException as exc:
        failed = _keep_failed(staging, run_dir, stage, exc)
        _write_usage(meter, failed, resources_file, stage, "failed")
        if isinstance(exc, Exception):
            raise StageFailed(notebook, failed, exc) from exc
        raise
    source.unlink(missing_ok=True)
    # outputs first, then the parameters, and the executed notebook (the "finished" marker) last
    _move_into(staging, run_dir, skip=(executed.name, "params.yaml"))
    _merge_params(run_dir, staging / "params.yaml", dict(run_params or {}), stage, params, notebook,
                  time.monotonic() - started)
    (staging / "params.yaml").unlink(missing_ok=True)
    _write_usage(meter, run_dir, resources_file, stage, "complete")
    os.replace(executed, run_dir / executed.name)
    staging.rmdir()
    log.info("%s/%s finished in %.1f s", run_dir.name, stage, time.monotonic() - started)
    return run_dir / executed.name
