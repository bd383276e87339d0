"""Gather every run's ``metrics.csv`` and ``params.yaml`` into one tidy DataFrame.

Layout read (written by the Snakemake grid through :mod:`lesionlib.notebook_runner`)::

    <results_root>/<profile>/<run_id>/metrics.csv   one row per evaluated case
    <results_root>/<profile>/<run_id>/params.yaml   the run's parameters

Folders whose name starts with ``.`` (runs in progress) or ``_`` (reports, failed attempts)
are not runs and are skipped. Undefined distances (NaN Hausdorff when a mask is empty) are
kept as NaN: they are counted by the tables, never dropped here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from lesionlib.experiments import INTERACTIVE_DIR
from lesionlib.io import DataValidationError
from lesionlib.metrics import METRIC_COLUMNS
from lesionlib.segmenters import segmenter_names
from lesionlib.splits import EVAL_SETS, TRAIN_SETS

__all__ = [
    "CONTRACT_COLUMNS",
    "METRIC_COLUMNS",
    "RunStatus",
    "collect_runs",
    "read_metrics_csv",
    "read_run",
    "run_status",
    "validate_metrics_frame",
]

log = logging.getLogger(__name__)

CONTRACT_COLUMNS: tuple[str, ...] = (
    "case_id", "subject", "session", "eval_set", "method", "train_set", "fine_tuned", "seed",
    "profile", "data_source", "lesion_volume_ml", "encoder_pretrained",
)
"""Identifying columns every ``metrics.csv`` must have (the inter-module contract).

``encoder_pretrained`` is ``True``/``False`` for methods with a pretrained-able encoder (Res-U-Net)
and empty for the others. An optional ``encoder_note`` column holds what the row labels say about that
encoder (``'encoder pretrained on synthetic tissue segmentation'``...); absent or empty: nothing, or
``'encoder not pretrained'`` where ``encoder_pretrained`` is false."""

DATA_SOURCES = ("synthetic", "rehearsal", "real")

_STRING_COLUMNS = ("case_id", "subject", "session", "eval_set", "method", "train_set", "profile",
                   "data_source")


def _parse_bool(value: object, path: Path, column: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise DataValidationError(path, f"column {column!r}: {value!r} is not a boolean")


def validate_metrics_frame(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check a metrics table against the contract and normalise its dtypes.

    Parameters
    ----------
    df
        Rows as read from ``path`` (string columns read as ``str``).
    path
        The file, named in every error.

    Returns
    -------
    pandas.DataFrame
        Same rows; ``fine_tuned`` as bool, ``seed`` as int, metric columns as float,
        ``train_set`` '' where empty.

    Raises
    ------
    DataValidationError
        Missing columns, unknown ``method``/``eval_set``/``train_set``/``data_source`` values,
        non-numeric metrics, duplicate ``(case_id, eval_set)`` rows.
    """
    missing = [c for c in (*CONTRACT_COLUMNS, *METRIC_COLUMNS) if c not in df.columns]
    if missing:
        raise DataValidationError(path, f"missing columns {missing} (contract of metrics.csv)")
    df = df.copy()
    for col in _STRING_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    for col, allowed in (("method", tuple(segmenter_names())), ("eval_set", EVAL_SETS), ("train_set", TRAIN_SETS),
                         ("data_source", DATA_SOURCES)):
        bad = sorted(set(df[col]) - set(allowed))
        if bad:
            raise DataValidationError(path, f"column {col!r} has unknown values {bad}; allowed {list(allowed)}")
    df["fine_tuned"] = [_parse_bool(v, path, "fine_tuned") for v in df["fine_tuned"]]
    df["encoder_note"] = df["encoder_note"].fillna("").astype(str) if "encoder_note" in df.columns else ""
    df["encoder_pretrained"] = [None if (v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "")
                                else _parse_bool(v, path, "encoder_pretrained") for v in df["encoder_pretrained"]]
    try:
        df["seed"] = pd.to_numeric(df["seed"], errors="raise").astype(int)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(path, f"column 'seed' is not integer ({exc})") from exc
    for col in ("lesion_volume_ml", *METRIC_COLUMNS):
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError) as exc:
            raise DataValidationError(path, f"column {col!r} is not numeric ({exc})") from exc
    dup = df.duplicated(["case_id", "eval_set"], keep=False)
    if dup.any():
        cases = sorted(set(df.loc[dup, "case_id"]))[:5]
        raise DataValidationError(path, f"duplicate rows for (case_id, eval_set): {cases}")
    return df


def read_metrics_csv(path: Path) -> pd.DataFrame:
    """Read and validate one ``metrics.csv`` (see :func:`validate_metrics_frame`)."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "metrics file does not exist")
    try:
        df = pd.read_csv(path, dtype={c: str for c in _STRING_COLUMNS}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, f"not a readable CSV table ({exc})") from exc
    return validate_metrics_frame(df, path)


def _read_params(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path) as fh:
            params = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise DataValidationError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(params, dict):
        raise DataValidationError(path, "expected a mapping of parameters")
    return params


def _run_dirs(profile_dir: Path) -> list[Path]:
    """The grid's run folders of a profile: every sub-folder but hidden ones, ``_report``-like ones and the
    runs by hand (``interactive/``, :func:`lesionlib.experiments.interactive_dir`)."""
    if not profile_dir.is_dir():
        return []
    return sorted(p for p in profile_dir.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and p.name != INTERACTIVE_DIR)


def read_run(run_dir: Path, profile: str | None = None) -> pd.DataFrame:
    """One run folder's ``metrics.csv`` as :func:`collect_runs` returns it: validated, with ``run_id`` (the
    folder's name), ``run_dir``, ``*_path`` values resolved against the folder and ``param_<k>`` columns.

    Any folder holding a ``metrics.csv`` will do: a grid cell's or a run by hand's (``interactive/...``).
    ``profile``, when given, must be the profile of every row. Raises ``FileNotFoundError`` naming the file
    when there is no ``metrics.csv``, :class:`DataValidationError` naming it when it breaks the contract.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no metrics.csv (the run has not finished its evaluation)")
    df = read_metrics_csv(metrics)
    wrong_profile = sorted(set(df["profile"]) - {profile}) if profile is not None else []
    if wrong_profile:
        raise DataValidationError(metrics, f"rows of profile {wrong_profile} under results of {profile!r}")
    df["run_id"] = run_dir.name
    df["run_dir"] = str(run_dir.resolve())
    for col in [c for c in df.columns if c.endswith("_path")]:
        df[col] = [
            v if (not isinstance(v, str) or not v or Path(v).is_absolute()) else str((run_dir / v).resolve())
            for v in df[col]
        ]
    for key, value in _read_params(run_dir / "params.yaml").items():
        if isinstance(value, (str, int, float, bool)) and key not in df.columns:
            df[f"param_{key}"] = value
    return df


def paper_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the paper's methods: those of ablations (``Segmenter.ablation_of``, e.g. ``resunet_scratch``)
    removed, for the tables, figures and findings."""
    from lesionlib.segmenters import ablation_names

    return runs[~runs["method"].isin(ablation_names())] if len(runs) else runs


def collect_runs(results_root: Path, profile: str) -> pd.DataFrame:
    """All evaluated cases of all runs of a profile, tidy (one row per run x case x eval set).

    Parameters
    ----------
    results_root
        Folder holding ``<profile>/<run_id>/metrics.csv``.
    profile
        Profile name (``'quick'``, ``'gpu'``, ``'paper'``).

    Returns
    -------
    pandas.DataFrame
        The contract columns, the metric columns, any extra columns of the files (e.g.
        ``pred_path``), plus ``run_id`` (folder name), ``run_dir`` (absolute path) and, for each
        scalar entry ``k`` of ``params.yaml`` not already a column, ``param_<k>``. Empty (with the
        contract columns) when no run has finished. Relative ``*_path`` values are resolved
        against the run folder.

    Raises
    ------
    DataValidationError
        A ``metrics.csv`` or ``params.yaml`` that breaks the contract, naming the file.
    """
    profile_dir = Path(results_root) / profile
    frames = [read_run(run_dir, profile) for run_dir in _run_dirs(profile_dir)
              if (run_dir / "metrics.csv").is_file()]
    if not frames:
        log.info("no finished runs under %s", profile_dir)
        return pd.DataFrame(columns=[*CONTRACT_COLUMNS, *METRIC_COLUMNS, "run_id", "run_dir"])
    out = pd.concat(frames, ignore_index=True, sort=False)
    log.info("collected %d rows from %d runs under %s", len(out), len(frames), profile_dir)
    return out


@dataclass(frozen=True)
class RunStatus:
    """State of one expected run folder: ``finished`` (metrics.csv), ``failed`` (a ``FAILED-*``
    attempt and no metrics), ``running`` (a staging folder), ``partial`` (some stages finished,
    e.g. trained but not evaluated yet), ``missing`` (nothing)."""

    run_id: str
    status: str
    run_dir: Path
    notebooks: tuple[Path, ...]
    failed_notebooks: tuple[Path, ...]


def run_status(results_root: Path, profile: str, expected_run_ids: Iterable[str] = ()) -> list[RunStatus]:
    """Status of every run folder of a profile, plus every expected run id that has no folder.

    Executed notebooks are the ``*.ipynb`` files directly in the run folder; failed attempts
    are ``FAILED-*/**.FAILED.ipynb`` (see :mod:`lesionlib.notebook_runner`).
    """
    profile_dir = Path(results_root) / profile
    seen: dict[str, RunStatus] = {}
    for run_dir in _run_dirs(profile_dir):
        notebooks = tuple(sorted(p for p in run_dir.glob("*.ipynb") if not p.name.startswith(".")))
        failed = tuple(sorted(run_dir.glob("FAILED-*/*.FAILED.ipynb")))
        if (run_dir / "metrics.csv").is_file():
            status = "finished"
        elif failed:
            status = "failed"
        elif any(p.name.startswith(".partial-") for p in run_dir.iterdir()):
            status = "running"
        elif notebooks:
            status = "partial"
        else:
            status = "missing"
        seen[run_dir.name] = RunStatus(run_dir.name, status, run_dir, notebooks, failed)
    for run_id in expected_run_ids:
        if run_id not in seen:
            seen[run_id] = RunStatus(run_id, "missing", profile_dir / run_id, (), ())
    return [seen[k] for k in sorted(seen)]
