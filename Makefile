# The two commands of README.md call `make book` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
LESIONLIB_VENV ?= $(HOME)/.cache/lesionlib/venv
export LESIONLIB_VENV
PY := $(LESIONLIB_VENV)/bin/python
PROFILE ?= quick
# Number of CPU cores used by the experiment grid.
CORES ?= 2
# Every job imports torch, MONAI or nnU-Net in fresh processes; setup installs them without bytecode
# (pip --no-compile) so that Python compiles what is imported, once, on first use. A
# PYTHONDONTWRITEBYTECODE=1 inherited from the shell forbids that, and every import of every job then
# compiles from source again (measured on 2 busy cores: `import monai` 37 s instead of 14 s).
unexport PYTHONDONTWRITEBYTECODE
# One clone, one code: clones on one machine share the venv, whose editable install points at the clone
# that ran `make` last. Every process started from here (Snakemake and its jobs, papermill and book kernels)
# imports this clone's lesionlib, first on PYTHONPATH; lesionlib stops with an error naming both clones
# when it was imported from another one than $LESIONLIB_CLONE (lesionlib/clone.py).
export LESIONLIB_CLONE := $(CURDIR)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup data book test slurm-setup test-slurm lab rehearsal clean-results

setup:
	@bash scripts/setup.sh

# Synthetic adult + child cohorts for the chosen profile, then validation of every record.
data: setup
	$(PY) -m lesionlib synth --profile $(PROFILE)
	$(PY) -m lesionlib validate --profile $(PROFILE)

# The whole paper: every run of the profile's grid (Snakemake skips finished runs), the report
# notebooks and the Jupyter Book. Jobs run in parallel, one thread each.
book: data
	OMP_NUM_THREADS=1 $(LESIONLIB_VENV)/bin/snakemake --cores $(CORES) --config profile=$(PROFILE) --rerun-incomplete
	@echo "[book] results/$(PROFILE)/_book/_build/html/index.html"

# The official BIDS validator (npm bids-validator 1.15.0, outside the clone) checks the predicted-mask
# derivatives in the tests; without node/npm those tests skip and say why.
test: setup
	@bash scripts/bids_validator.sh >/dev/null || echo "[test] bids-validator not installed (needs node and npm): its tests skip"
	$(PY) -m pytest -q -n $(CORES) --dist loadfile

# The grid on SLURM (issue #24). slurm-setup adds Snakemake's SLURM executor (requirements/slurm.txt) to the
# venv, resolved against the lock without changing it. test-slurm (root, Debian; minutes, not part of `make test`):
# a one-node SLURM cluster on this machine (scripts/slurm_cluster.sh: `install` once, as root) runs a tiny
# grid through workflow/profiles/slurm, every cell a SLURM job (tests/test_slurm.py); stopped afterwards.
slurm-setup: setup
	$(PY) -m pip install -q --no-compile -c requirements/constraints.txt -r requirements/slurm.txt

test-slurm: slurm-setup
	LESIONLIB_SLURM_TESTS=1 $(PY) -m pytest -q -rP tests/test_slurm.py

# JupyterLab on this clone, in the same environment (lesionlib/lab.py): notebooks/*.py paired with their (ignored)
# .ipynb by jupytext, the environment's python3 kernel, 127.0.0.1 with a token; prints the URL that opens
# notebooks/cell.ipynb. Notebooks run there write under results/<profile>/interactive/. LAB_PORT: first port tried.
LAB_PORT ?= 8888
lab: setup
	$(PY) -m lesionlib.lab --port $(LAB_PORT)

# The researcher's path rehearsed (lesionlib/rehearsal.py): synthetic stand-ins laid out as ATLAS v2.0, a child
# BIDS cohort without session-2 masks and MedicalNet's weights file; the variables README gives researchers,
# exported from rehearsal.env; then the paper profile's grid through `make book`, as the profile `rehearsal` of
# a researcher's own profiles file (workflow/rehearsal.yaml: `extends: paper`, smoke schedules, CPU).
# Book: results/rehearsal/_book/_build/html/index.html
REHEARSAL_DIR ?= $(CURDIR)/data/rehearsal
REHEARSAL_PROFILES := $(CURDIR)/workflow/rehearsal.yaml
rehearsal: setup
	LESIONLIB_PROFILES=$(REHEARSAL_PROFILES) $(PY) -m lesionlib rehearsal --profile rehearsal --out $(REHEARSAL_DIR)
	source $(REHEARSAL_DIR)/rehearsal.env && export LESIONLIB_PROFILES=$(REHEARSAL_PROFILES) && \
	  $(MAKE) --no-print-directory book PROFILE=rehearsal

clean-results:
	rm -rf results _build
