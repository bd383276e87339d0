"""A Sphinx extension of the book (``_config.yml``: ``sphinx.extra_extensions``): its pages load in a browser
without console errors.

Two errors every page of the Jupyter Book 1.x build showed in the browser console (Chromium, tests/test_book.py):

* ``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``: sphinx-thebe 0.3.1 adds its
  inline configuration script from an ``env-before-read-docs`` handler, and with Sphinx 7.4 the script reaches
  each page twice (the application's registry and the already-initialised builder both keep it, one with the
  file name ``None``, the other ``''``). Entries loading the same file or inline body with the same attributes are dropped here, each page
  keeping the first.
* ``Got invalid theme mode: . Resetting to auto.``: pydata-sphinx-theme reads the default light/dark mode from
  ``html_context['default_mode']``, which Jupyter Book leaves unset. It is set to ``auto``, the mode the theme
  fell back to, so the pages look as before.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["DEFAULT_MODE", "unique_scripts", "setup"]

log = logging.getLogger(__name__)

DEFAULT_MODE = "auto"


def _script_key(script: Any) -> str:
    """What a script entry loads: its file, or its inline body (file ``None`` or ``''``: the copy that reaches a
    page twice has the other one), and its attributes."""
    if isinstance(script, str):
        return script
    attributes = getattr(script, "attributes", {}) or {}
    return repr((str(getattr(script, "filename", None) or ""), sorted(attributes.items())))


def unique_scripts(scripts: list[Any]) -> list[Any]:
    """``scripts`` without repeated entries (same file or inline body, same attributes), each kept where it first
    appears."""
    seen: set[str] = set()
    kept = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def _dedupe_page_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = unique_scripts(list(scripts))


def _default_mode(app: Any, config: Any) -> None:
    context = dict(config.html_context or {})
    context.setdefault("default_mode", DEFAULT_MODE)
    config.html_context = context


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.connect("config-inited", _default_mode)
    app.connect("html-page-context", _dedupe_page_scripts, priority=999)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
