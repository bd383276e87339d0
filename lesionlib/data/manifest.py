"""The data manifest (``data_manifest.yaml``): which datasets and assets exist and where they are.

A dataset's root, or an asset's file, is resolved with one precedence everywhere:

1. an explicit override (``--root`` on the command line, ``override=`` here);
2. the environment variable the manifest names (``ATLAS_V2_ROOT``, ``CHILD_BIDS_ROOT``,
   ``MEDICALNET_RESNET10``...); an empty value counts as unset;
3. the manifest's default, a template over ``{data_root}``, ``{results_root}``, ``{project_root}``
   and ``{profile}`` (see :mod:`lesionlib.config`).

The manifest file itself is ``$LESIONLIB_MANIFEST`` or ``<project>/data_manifest.yaml``; its sha256
(:func:`manifest_sha256`) goes into run provenance.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from lesionlib import config
from lesionlib.io import DataValidationError

__all__ = [
    "ManifestError",
    "DatasetSpec",
    "AssetSpec",
    "Manifest",
    "manifest_file",
    "load_manifest",
    "dataset_spec",
    "asset_spec",
    "dataset_root",
    "asset_path",
    "data_source",
    "file_sha256",
    "manifest_sha256",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("atlas", "child_bids")
DOMAINS = ("adult", "child")
KINDS = ("synthetic", "real")
TEMPLATE_FIELDS = ("data_root", "results_root", "project_root", "profile")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest is malformed, a name is unknown, or a root/path cannot be resolved."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the manifest.

    ``default_root`` is the unexpanded template (``None`` when the root must come from ``env``
    or an override); ``expected_cases`` is the image count of a complete copy, if fixed.
    """

    name: str
    kind: str
    domain: str
    layout: str
    env: str | None
    default_root: str | None
    expected_cases: int | None
    description: str = ""
    source: str = ""
    licence: str = ""
    citation: str = ""


@dataclass(frozen=True)
class AssetSpec:
    """One asset (a single file such as pretrained weights) of the manifest."""

    name: str
    env: str | None
    default_path: str | None
    sha256: str | None
    required: bool = False
    description: str = ""
    source: str = ""
    licence: str = ""
    citation: str = ""


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest: datasets and assets by name, and the file they came from."""

    path: Path
    datasets: dict[str, DatasetSpec]
    assets: dict[str, AssetSpec]


def manifest_file() -> Path:
    """``$LESIONLIB_MANIFEST`` or ``data_manifest.yaml`` at the project root."""
    return Path(os.environ.get("LESIONLIB_MANIFEST") or config.PROJECT_ROOT / "data_manifest.yaml")


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key) or ""
    return " ".join(str(value).split())


def _check_template(path: Path, where: str, template: str | None) -> None:
    if template is None:
        return
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ManifestError(f"{path}: {where}: malformed template {template!r} ({exc})") from exc
    unknown = fields - set(TEMPLATE_FIELDS)
    if unknown:
        raise ManifestError(
            f"{path}: {where}: unknown template field(s) {sorted(unknown)} in {template!r}; "
            f"allowed: {list(TEMPLATE_FIELDS)}"
        )


def _parse_dataset(path: Path, name: str, entry: Any) -> DatasetSpec:
    where = f"datasets.{name}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{path}: {where} must be a mapping, found {type(entry).__name__}")
    for key, allowed in (("kind", KINDS), ("domain", DOMAINS), ("layout", LAYOUTS)):
        if entry.get(key) not in allowed:
            raise ManifestError(f"{path}: {where}.{key} must be one of {list(allowed)}, found {entry.get(key)!r}")
    env, default_root = entry.get("env"), entry.get("default_root")
    if not env and not default_root:
        raise ManifestError(f"{path}: {where} needs an 'env' variable or a 'default_root' (or both)")
    _check_template(path, f"{where}.default_root", default_root)
    expected = entry.get("expected_cases")
    if expected is not None and (not isinstance(expected, int) or expected <= 0):
        raise ManifestError(f"{path}: {where}.expected_cases must be a positive integer or null, found {expected!r}")
    return DatasetSpec(
        name=name, kind=entry["kind"], domain=entry["domain"], layout=entry["layout"],
        env=env or None, default_root=default_root or None, expected_cases=expected,
        description=_text(entry, "description"), source=_text(entry, "source"),
        licence=_text(entry, "licence"), citation=_text(entry, "citation"),
    )


def _parse_asset(path: Path, name: str, entry: Any) -> AssetSpec:
    where = f"assets.{name}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{path}: {where} must be a mapping, found {type(entry).__name__}")
    sha = entry.get("sha256")
    if sha is not None:
        sha = str(sha).lower()
        if not _SHA256.match(sha):
            raise ManifestError(f"{path}: {where}.sha256 must be 64 hexadecimal digits or null, found {entry['sha256']!r}")
    _check_template(path, f"{where}.default_path", entry.get("default_path"))
    return AssetSpec(
        name=name, env=entry.get("env") or None, default_path=entry.get("default_path") or None, sha256=sha,
        required=bool(entry.get("required", False)),
        description=_text(entry, "description"), source=_text(entry, "source"),
        licence=_text(entry, "licence"), citation=_text(entry, "citation"),
    )


@lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int, size: int) -> Manifest:
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: the manifest must be a mapping with 'datasets' and 'assets'")
    datasets_raw = raw.get("datasets") or {}
    assets_raw = raw.get("assets") or {}
    if not isinstance(datasets_raw, dict) or not isinstance(assets_raw, dict):
        raise ManifestError(f"{path}: 'datasets' and 'assets' must be mappings of name -> entry")
    datasets = {name: _parse_dataset(path, name, e) for name, e in datasets_raw.items()}
    assets = {name: _parse_asset(path, name, e) for name, e in assets_raw.items()}
    return Manifest(path=path, datasets=datasets, assets=assets)


def load_manifest(path: os.PathLike | str | None = None) -> Manifest:
    """Read and check the manifest (cached while the file is unchanged).

    Raises
    ------
    ManifestError
        Missing file, invalid YAML, or an entry with an unknown kind/domain/layout, neither
        ``env`` nor a default, an unknown template field, or a malformed sha256.
    """
    path = Path(path) if path is not None else manifest_file()
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ManifestError(f"{path}: data manifest not found (set LESIONLIB_MANIFEST or pass --manifest)")
    st = path.stat()
    return _load_cached(path, st.st_mtime_ns, st.st_size)


def _manifest(manifest: Manifest | os.PathLike | str | None) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def dataset_spec(name: str, manifest: Manifest | os.PathLike | str | None = None) -> DatasetSpec:
    """The manifest entry of dataset ``name``; unknown names raise :class:`ManifestError` listing the known ones."""
    m = _manifest(manifest)
    if name not in m.datasets:
        hint = " (that is an asset: use asset_path)" if name in m.assets else ""
        raise ManifestError(f"{m.path}: unknown dataset {name!r}{hint}; known datasets: {sorted(m.datasets)}")
    return m.datasets[name]


def asset_spec(name: str, manifest: Manifest | os.PathLike | str | None = None) -> AssetSpec:
    """The manifest entry of asset ``name``; unknown names raise :class:`ManifestError` listing the known ones."""
    m = _manifest(manifest)
    if name not in m.assets:
        hint = " (that is a dataset: use dataset_root)" if name in m.datasets else ""
        raise ManifestError(f"{m.path}: unknown asset {name!r}{hint}; known assets: {sorted(m.assets)}")
    return m.assets[name]


def _expand(template: str, profile: str) -> Path:
    values = {
        "data_root": str(config.data_root()),
        "results_root": str(config.results_root()),
        "project_root": str(config.PROJECT_ROOT),
        "profile": profile,
    }
    return Path(template.format(**values)).expanduser()


def _env_value(var: str | None) -> str | None:
    if not var:
        return None
    value = os.environ.get(var, "").strip()
    return value or None


def dataset_root(name: str, profile: str = config.DEFAULT_PROFILE, override: os.PathLike | str | None = None,
                 manifest: Manifest | os.PathLike | str | None = None) -> Path:
    """Root folder of dataset ``name``: override > environment variable > manifest default.

    The root is resolved, not checked for existence (discovery does that, with a hint on how
    to obtain the data). For the ``atlas`` layout the root is the folder holding ``Training/``.

    Raises
    ------
    ManifestError
        Unknown name, or no override, the variable unset and no default: the message names the
        variable to set and where the data come from.
    """
    spec = dataset_spec(name, manifest)
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env_value = _env_value(spec.env)
    if env_value is not None:
        return Path(env_value).expanduser()
    if spec.default_root is not None:
        return _expand(spec.default_root, profile)
    raise ManifestError(
        f"dataset {name!r} has no root: set the environment variable {spec.env} to its folder "
        f"(e.g. export {spec.env}=/path/to/{name}) or pass --root PATH. Where to get it: {spec.source}"
    )


def file_sha256(path: os.PathLike | str, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def asset_path(name: str, override: os.PathLike | str | None = None, *, profile: str = config.DEFAULT_PROFILE,
               verify: bool = True, manifest: Manifest | os.PathLike | str | None = None) -> Path | None:
    """Local file of asset ``name`` (override > environment variable > manifest default), or ``None``.

    ``None`` means the asset is not configured (no override, variable unset, no default) and
    not ``required``. A configured path must exist; when the manifest gives a sha256 and
    ``verify`` is true, the file's sha256 must match.

    Raises
    ------
    ManifestError
        Unknown name; a required asset that is not configured (the message names the variable).
    DataValidationError
        The configured file does not exist, or its sha256 differs from the manifest's.
    """
    spec = asset_spec(name, manifest)
    if override is not None and str(override) != "":
        path, origin = Path(override).expanduser(), "override"
    elif (env_value := _env_value(spec.env)) is not None:
        path, origin = Path(env_value).expanduser(), f"environment variable {spec.env}"
    elif spec.default_path is not None:
        path, origin = _expand(spec.default_path, profile), "manifest default_path"
    else:
        if spec.required:
            raise ManifestError(
                f"asset {name!r} is required but not configured: set the environment variable {spec.env} "
                f"to the local file (e.g. export {spec.env}=/path/to/file). Where to get it: {spec.source}"
            )
        logger.debug("asset %s not configured (%s unset)", name, spec.env)
        return None
    if origin == "override":
        fix = "check the path given"
    elif spec.env and origin.startswith("environment"):
        fix = f"point {spec.env} at the file (where to get it: {spec.source}) or unset {spec.env} to run without it"
    else:
        fix = f"fix assets.{name}.default_path in {_manifest(manifest).path}"
    if not path.is_file():
        raise DataValidationError(path, f"asset {name!r} file does not exist (path from {origin}): {fix}")
    if verify and spec.sha256 is not None:
        try:
            found = file_sha256(path)
        except OSError as exc:
            raise DataValidationError(path, f"asset {name!r} file cannot be read ({exc.strerror or exc}): {fix}") from exc
        if found != spec.sha256:
            raise DataValidationError(
                path, f"asset {name!r}: sha256 mismatch: expected {spec.sha256}, found {found} (wrong or corrupt "
                      f"file): {fix}"
            )
    return path


def data_source(name: str, manifest: Manifest | os.PathLike | str | None = None, *,
                profile: str = config.DEFAULT_PROFILE) -> str:
    """``'synthetic'``, ``'real'`` or ``'rehearsal'``: the ``data_source`` column of run outputs for dataset ``name``.

    ``'rehearsal'``: a dataset of kind ``real`` whose configured root holds synthetic data (a
    ``dataset_description.json`` with ``"Synthetic": true``, as :mod:`lesionlib.rehearsal` writes), so that
    results on stand-ins laid out as the real data are never labelled real.
    """
    kind = dataset_spec(name, manifest).kind
    if kind == "real":
        from lesionlib.rehearsal import is_synthetic_root

        try:
            root = dataset_root(name, profile, manifest=manifest)
        except ManifestError:  # not configured: nothing to look at
            return kind
        if is_synthetic_root(root):
            return "rehearsal"
    return kind


def manifest_sha256(path: os.PathLike | str | None = None) -> str:
    """sha256 of the manifest file's bytes, for run provenance."""
    path = Path(path) if path is not None else manifest_file()
    if not path.is_file():
        raise ManifestError(f"{path}: data manifest not found")
    return file_sha256(path)
