#!/usr/bin/env bash
# Create or reuse the project's virtual environment, outside the clone.
#
#   LESIONLIB_VENV   where the venv lives (default: ~/.cache/lesionlib/venv)
#
# The venv is keyed by a hash of requirements/constraints.txt and pyproject.toml: when both
# are unchanged, only the (cheap) editable install of this clone is refreshed. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LESIONLIB_VENV:-$HOME/.cache/lesionlib/venv}"
py="${PYTHON:-python3}"
lock_hash="$(cat "$here/requirements/constraints.txt" "$here/pyproject.toml" | sha256sum | cut -c1-16)"
stamp="$venv/.lesionlib-lock"

# The clone the venv's editable install points at now (empty when none): the one that ran setup last.
editable_clone() {
    [ -x "$venv/bin/python" ] || return 0
    (cd / && env -u PYTHONPATH -u LESIONLIB_CLONE LESIONLIB_CLONE_CHECK=0 "$venv/bin/python" -c \
        'import os, lesionlib; print(os.path.dirname(os.path.dirname(os.path.realpath(lesionlib.__file__))))' \
        2>/dev/null) || true
}
previous="$(editable_clone)"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating venv at $venv"
    "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
    echo "[setup] installing pinned dependencies into $venv (lock $lock_hash)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # torch and torchvision first: torch 2.13.0+cpu cannot import PyPI's torchvision (needed by
    # nnunetv2 -> timm); this pair is taken from local disk where available.
    # --no-compile: no byte-compiling of every installed module (torch alone: ~15 s of CPU); Python
    # compiles what it imports, once, on first use (the Makefile makes sure it may write the bytecode).
    "$venv/bin/python" -m pip install -q --no-compile "torch==2.14.1" "torchvision==0.29.1"
    "$venv/bin/python" -m pip install -q --no-compile -c "$here/requirements/constraints.txt" -e "$here[test]"
    echo "$lock_hash" > "$stamp"
else
    # Point the editable install at this clone (fast, no dependency resolution).
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >/dev/null
fi
# Other clones sharing this venv keep importing their own code when run through their Makefile (it exports
# LESIONLIB_CLONE and PYTHONPATH); started otherwise, lesionlib stops with an error naming both clones.
if [ -n "$previous" ] && [ "$previous" != "$(cd "$here" && pwd -P)" ]; then
    echo "[setup] the venv's editable install now points at $here (it pointed at $previous: run make there," \
         "or set PYTHONPATH=$previous, to use that clone)"
fi
echo "[setup] venv ready: $venv"
