#!/usr/bin/env bash
# Install the official BIDS validator (npm `bids-validator`, pinned) outside the clone and print
# the path of its executable on stdout (everything else goes to stderr).
#
#   LESIONLIB_NODE             folder of the npm install (default: ~/.cache/lesionlib/node)
#   LESIONLIB_BIDS_VALIDATOR   the pinned version (default: 1.15.0, the one tests/test_bids_derivatives.py
#                              was written against)
#
# Idempotent: when that version is already installed there, nothing is downloaded. Needs node and
# npm (node >= 18) and, on the first call, the npm registry.
#
#   validator="$(scripts/bids_validator.sh)"
#   "$validator" --json --config /abs/path/config.json results/quick/<run_id>/predictions/synthetic_child
#
# Validator 1.x knows only raw-BIDS file names, not BIDS-Derivatives ones: on lesionlib's prediction
# datasets (derivatives holding masks) it needs the configuration VALIDATOR_CONFIG of
# tests/test_bids_derivatives.py, which says why (a relative --config path is read inside the dataset).
set -euo pipefail
prefix="${LESIONLIB_NODE:-$HOME/.cache/lesionlib/node}"
version="${LESIONLIB_BIDS_VALIDATOR:-1.15.0}"
exe="$prefix/node_modules/.bin/bids-validator"
manifest="$prefix/node_modules/bids-validator/package.json"

installed_version() {
    [ -f "$manifest" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$manifest" 2>/dev/null || true
}

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "[bids-validator] $tool not found: install Node.js >= 18 (with npm) first" >&2
        exit 1
    fi
done

if [ -x "$exe" ] && [ "$(installed_version)" = "$version" ]; then
    echo "[bids-validator] $version already installed in $prefix" >&2
else
    echo "[bids-validator] installing bids-validator@$version into $prefix" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "bids-validator@$version" >&2
    found="$(installed_version)"
    if [ "$found" != "$version" ] || [ ! -x "$exe" ]; then
        echo "[bids-validator] install failed: expected $version at $exe, found '${found:-nothing}'" >&2
        exit 1
    fi
fi
echo "$exe"
