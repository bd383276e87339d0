"""Provenance of a results page: git commit, package versions, profile, data manifest hash."""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

from lesionlib.config import PROJECT_ROOT

__all__ = ["PACKAGES", "git_commit", "package_versions", "provenance", "provenance_html",
           "provenance_markdown"]

PACKAGES: tuple[str, ...] = (
    "lesionlib", "torch", "monai", "nnunetv2", "nibabel", "nilearn", "SimpleITK", "torchio", "numpy",
    "scipy", "scikit-learn", "pandas", "seaborn", "jupyter-book", "papermill", "jupytext", "snakemake",
)


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """``{'commit': <sha or 'unknown'>, 'dirty': bool | None}`` of the working tree at ``root``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=20).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True, timeout=60).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed distribution versions (``'not installed'`` where absent)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _manifest_record(path: Path | None) -> dict[str, str]:
    """``{'path', 'sha256'}`` of the data manifest (:func:`lesionlib.data.manifest.manifest_sha256`);
    ``sha256`` is ``'absent'`` when the file does not exist."""
    from lesionlib.data.manifest import manifest_file, manifest_sha256

    path = Path(path) if path is not None else manifest_file()
    return {"path": str(path), "sha256": manifest_sha256(path) if path.is_file() else "absent"}


def provenance(profile: str, *, data_source: str | None = None, manifest: Path | None = None,
               root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Everything needed to say where a page's numbers come from.

    Keys: ``generated_utc``, ``profile``, ``data_source``, ``git`` (commit, dirty), ``packages``
    (name -> version), ``manifest`` (path, sha256), ``platform``.
    """
    return {
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "profile": profile,
        "data_source": data_source or "unknown",
        "git": git_commit(root),
        "packages": package_versions(),
        "manifest": _manifest_record(manifest),
        "platform": platform.platform(),
    }


def provenance_markdown(prov: dict[str, Any]) -> str:
    """A compact Markdown block of :func:`provenance`'s dictionary."""
    git = prov["git"]
    dirty = "" if not git.get("dirty") else " (with uncommitted changes)"
    pkgs = ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
    return (
        f"**Provenance** — profile `{prov['profile']}`, data source **{prov['data_source']}**; "
        f"git commit `{git['commit'][:12]}`{dirty}; data manifest sha256 `{prov['manifest']['sha256'][:16]}`; "
        f"generated {prov['generated_utc']} on {prov['platform']}.\n\nPackages: {pkgs}."
    )


def provenance_html(prov: dict[str, Any]) -> str:
    """The same block as HTML (a ``<details>`` element with every package version)."""
    git = prov["git"]
    dirty = "" if not git.get("dirty") else " (with uncommitted changes)"
    items = "".join(f"<li>{html.escape(k)} {html.escape(str(v))}</li>" for k, v in prov["packages"].items())
    return (
        '<div class="lesionlib-provenance"><p><b>Provenance</b> — profile '
        f"<code>{html.escape(prov['profile'])}</code>, data source <b>{html.escape(prov['data_source'])}</b>; "
        f"git commit <code>{html.escape(git['commit'])}</code>{dirty}; data manifest "
        f"<code>{html.escape(Path(prov['manifest']['path']).name)}</code> sha256 "
        f"<code>{html.escape(prov['manifest']['sha256'])}</code>; generated {html.escape(prov['generated_utc'])}."
        f"</p><details><summary>Package versions</summary><ul>{items}</ul></details></div>"
    )
