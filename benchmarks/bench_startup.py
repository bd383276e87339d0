"""Process start-up of a grid job with and without Python bytecode, as a ratio measured in one run.

Every grid job starts fresh Python processes (the ``lesionlib grid`` command, a Jupyter kernel,
nnU-Net's subprocesses) that import torch, MONAI, nnU-Net and scikit-learn. ``scripts/setup.sh``
installs them without bytecode (``pip --no-compile``); Python then compiles each imported module
once and caches it, unless ``PYTHONDONTWRITEBYTECODE`` is set, in which case *every* process compiles
from source again. This script times the imports of one grid cell in three states, each in a fresh
bytecode cache (``PYTHONPYCACHEPREFIX`` pointing to a new temporary folder, so that bytecode already
next to the sources is not used):

* *no bytecode*: ``PYTHONDONTWRITEBYTECODE=1``, what every job paid before the Makefile unset it;
* *first*: writing allowed, the first process (it compiles and writes the cache);
* *cached*: the following processes.

    ~/.cache/lesionlib/venv/bin/python benchmarks/bench_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMPORTS = "import lesionlib.cli, lesionlib.cells, lesionlib.train, lesionlib.reporting.runs, monai, nnunetv2.inference.predict_from_raw_data"


def _time_import(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed processes per state (median reported)")
    args = parser.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        no_bytecode = {**base, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": os.path.join(tmp, "never")}
        cached = {**base, "PYTHONPYCACHEPREFIX": os.path.join(tmp, "cache")}
        none_s = [_time_import(no_bytecode) for _ in range(args.repeats)]
        first_s = _time_import(cached)
        cached_s = [_time_import(cached) for _ in range(args.repeats)]
        assert not os.path.exists(os.path.join(tmp, "never")), "PYTHONDONTWRITEBYTECODE=1 wrote bytecode"
    none, cached_med = statistics.median(none_s), statistics.median(cached_s)
    print(f"imports: {IMPORTS[7:]}")
    print(f"no bytecode (PYTHONDONTWRITEBYTECODE=1): median {none:.2f} s  {[round(t, 2) for t in none_s]}")
    print(f"first process, writing the cache:        {first_s:.2f} s")
    print(f"later processes, cache present:          median {cached_med:.2f} s  {[round(t, 2) for t in cached_s]}")
    print(f"cached / no bytecode: {cached_med / none:.3f}   first / no bytecode: {first_s / none:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
