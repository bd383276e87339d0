"""LesionGnb, the paper's baseline (Griffis et al. 2016), as a segmenter: :mod:`lesionlib.baselines.gnb`.

It is not a network: it is fitted once per seed on the adult training split (its voxel subsampling
is seeded) and is neither fine-tuned nor trained on child images. Its model is one ``joblib`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

from pydantic import Field
from tqdm.auto import tqdm

from lesionlib.segmenters.base import FitResult, MethodSettings, Segmenter, Stage, register_segmenter

__all__ = ["LesionGnbSettings", "LesionGnbSegmenter"]

MODEL_FILE = "lesiongnb.joblib"


class LesionGnbSettings(MethodSettings):
    """``working_resolution_mm``: the toolbox's MNI grid (1.5 mm); data at a coarser resolution are
    processed on their own resolution's grid instead."""

    working_resolution_mm: float = Field(1.5, gt=0, le=10)


@register_segmenter
class LesionGnbSegmenter(Segmenter):
    """Gaussian naive Bayes on tissue-map features (see :mod:`lesionlib.baselines.gnb`)."""

    name = "lesiongnb"
    label = "LesionGnb"
    order = 0
    Settings: ClassVar[type[LesionGnbSettings]] = LesionGnbSettings
    settings: LesionGnbSettings
    fine_tunes = False
    uses_gpu = False

    @property
    def working_resolution_mm(self) -> float:
        return max(self.settings.working_resolution_mm, self.resolution_mm)

    def plan(self, stage: Stage, n_train_images: int) -> dict[str, Any]:
        return {"classifier": "GaussianNB on tissue-map features (F1 missing tissue, F2 abnormal tissue)",
                "working_grid_mm": self.working_resolution_mm, "training_images": n_train_images,
                "registration": "12-dof affine to MNI152 2009a for native-space images"}

    def fit(self, train_records: Sequence, val_records: Sequence, *, stage: Stage) -> FitResult:
        from lesionlib.baselines.gnb import LesionGnb

        gnb = LesionGnb(resolution_mm=self.working_resolution_mm, seed=self.seed)
        gnb.fit(train_records, progress=self.progress)
        gnb.save(self.model_dir / MODEL_FILE)
        return FitResult(details={"n_training_voxels": dict(gnb.n_training_voxels_)})

    def predict(self, records: Sequence, out_dir: Path) -> list[Path]:
        from lesionlib.baselines.gnb import LesionGnb
        from lesionlib.bids import save_prediction
        from lesionlib.data.validate import require_valid

        require_valid(list(records), purpose="predict")  # before the first mask is written
        gnb = LesionGnb.load(self.model_dir / MODEL_FILE)
        description = "lesion segmentation by LesionGnb (Gaussian naive Bayes on tissue-map features)"
        sidecar = {"model": "LesionGnb", "model_file": str((self.model_dir / MODEL_FILE).resolve()),
                   "working_resolution_mm": self.working_resolution_mm}
        return [save_prediction(gnb.predict(rec), out_dir, rec, description=description, sidecar=sidecar)
                for rec in tqdm(records, desc="lesiongnb", unit="image", disable=not self.progress)]
