"""The unit every stage works on: one image (and its lesion mask) of one subject and session."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageRecord:
    """One T1w image with its lesion mask, as discovered in a dataset.

    Attributes
    ----------
    dataset
        Manifest name of the dataset (``'synthetic_adult'``, ``'atlas_v2'``, ``'synthetic_child'``, ...).
    subject, session
        BIDS labels without prefixes (``'r001s001'``, ``'1'``).
    image_path, mask_path
        Absolute paths; ``mask_path`` is ``None`` for an unlabelled image.
    lesion_volume_ml
        Total lesion volume in millilitres (sum of mask voxels x voxel volume), ``None`` if unknown.
    site
        Acquisition site / cohort (ATLAS ``R001``...), ``None`` if unknown.
    age_months, sex
        From ``participants.tsv`` where present.
    domain
        ``'adult'`` or ``'child'``.
    extra
        Free-form metadata (e.g. the synthetic generator's lesion centroid); never used for logic.
    """

    dataset: str
    subject: str
    session: str
    image_path: Path
    mask_path: Path | None
    domain: str = "adult"
    lesion_volume_ml: float | None = None
    site: str | None = None
    age_months: float | None = None
    sex: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def case_id(self) -> str:
        """Unique id inside a dataset: ``sub-<subject>_ses-<session>``."""
        return f"sub-{self.subject}_ses-{self.session}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_path"] = str(self.image_path)
        d["mask_path"] = None if self.mask_path is None else str(self.mask_path)
        d["case_id"] = self.case_id
        return d
