"""Synthetic cohorts built from nilearn's MNI152 2009a templates.

* :func:`generate_adult_cohort`: ATLAS v2.0-like adults with chronic-stroke lesions, on the
  MNI152 2009a grid (197x233x189 at 1 mm), ATLAS file names.
* :func:`generate_child_cohort`: CAP-like children (12-48 months, two sessions 90 days
  apart) with perinatal-stroke lesions, in native space (LPS, anisotropic voxels), BIDS.

Both are whole-head images (the adults defaced, as ATLAS v2.0's) with brain-only lesion masks,
deterministic from their seed (same seed, same bytes) and idempotent. Command line:
``lesionlib synth``. :mod:`lesionlib.synth.realism` measures how close they are to real data.
"""

from lesionlib.synth.adult import generate_adult_cohort
from lesionlib.synth.child import generate_child_cohort
from lesionlib.synth.cohort_files import SYNTH_FORMAT_VERSION

__all__ = ["generate_adult_cohort", "generate_child_cohort", "SYNTH_FORMAT_VERSION"]
