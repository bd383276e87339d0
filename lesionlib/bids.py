"""File naming: the ATLAS v2.0 layout, the child cohort's BIDS layout, and derivatives.

All of lesionlib builds paths through these functions, so that the synthetic cohorts,
real ATLAS v2.0 and a real paediatric BIDS dataset are read the same way.

ATLAS v2.0 (``Training/`` of the released archive)::

    Training/R001/sub-r001s001/ses-1/anat/
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

Child cohort (native space, plain BIDS; masks are derivatives)::

    sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz
    derivatives/lesion_masks/sub-01/ses-1/anat/sub-01_ses-1_label-L_desc-lesion_mask.nii.gz
    participants.tsv   (participant_id, age_months, sex, site)

Predictions written by lesionlib::

    <out>/derivatives/lesionlib/sub-01/ses-1/anat/sub-01_ses-1[_space-X]_desc-lesion_mask.nii.gz
"""

from __future__ import annotations

import re
from pathlib import Path

ATLAS_SPACE = "MNI152NLin2009aSym"
CHILD_MASK_DERIVATIVE = "lesion_masks"
PREDICTION_DERIVATIVE = "lesionlib"

_ATLAS_SUBJECT = re.compile(r"^r(\d{3})s(\d{3})$")


def atlas_site_of(subject: str) -> str:
    """ATLAS site folder of a subject label: ``'r001s001'`` -> ``'R001'``."""
    m = _ATLAS_SUBJECT.match(subject)
    if not m:
        raise ValueError(f"not an ATLAS v2.0 subject label (expected rNNNsNNN): {subject!r}")
    return f"R{m.group(1)}"


def atlas_subject(site_index: int, subject_index: int) -> str:
    """ATLAS subject label from a 1-based site and subject index: (1, 1) -> ``'r001s001'``."""
    return f"r{site_index:03d}s{subject_index:03d}"


def atlas_anat_dir(root: Path, subject: str, session: str = "1") -> Path:
    return Path(root) / "Training" / atlas_site_of(subject) / f"sub-{subject}" / f"ses-{session}" / "anat"


def atlas_t1w_path(root: Path, subject: str, session: str = "1") -> Path:
    """ATLAS v2.0 T1w image path under ``root`` (the folder holding ``Training/``)."""
    name = f"sub-{subject}_ses-{session}_space-{ATLAS_SPACE}_T1w.nii.gz"
    return atlas_anat_dir(root, subject, session) / name


def atlas_mask_path(root: Path, subject: str, session: str = "1") -> Path:
    """ATLAS v2.0 lesion mask path under ``root``."""
    name = f"sub-{subject}_ses-{session}_space-{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz"
    return atlas_anat_dir(root, subject, session) / name


def child_t1w_path(root: Path, subject: str, session: str) -> Path:
    """Child T1w path: ``sub-XX/ses-N/anat/sub-XX_ses-N_T1w.nii.gz``."""
    return Path(root) / f"sub-{subject}" / f"ses-{session}" / "anat" / f"sub-{subject}_ses-{session}_T1w.nii.gz"


def child_mask_path(root: Path, subject: str, session: str) -> Path:
    """Child lesion mask path under ``derivatives/lesion_masks``."""
    return (
        Path(root) / "derivatives" / CHILD_MASK_DERIVATIVE / f"sub-{subject}" / f"ses-{session}" / "anat"
        / f"sub-{subject}_ses-{session}_label-L_desc-lesion_mask.nii.gz"
    )


def prediction_path(out_root: Path, subject: str, session: str, space: str | None = None,
                    desc: str = "lesion") -> Path:
    """Where a predicted mask goes: ``derivatives/lesionlib/sub-X/ses-Y/anat/..._desc-lesion_mask.nii.gz``."""
    space_part = f"_space-{space}" if space else ""
    name = f"sub-{subject}_ses-{session}{space_part}_desc-{desc}_mask.nii.gz"
    return Path(out_root) / "derivatives" / PREDICTION_DERIVATIVE / f"sub-{subject}" / f"ses-{session}" / "anat" / name


def parse_entities(filename: str) -> dict[str, str]:
    """BIDS key-value entities of a file name: ``sub-01_ses-1_T1w.nii.gz`` -> {'sub': '01', 'ses': '1'}."""
    stem = Path(filename).name.split(".")[0]
    out = {}
    for part in stem.split("_"):
        if "-" in part:
            k, v = part.split("-", 1)
            out[k] = v
    return out
