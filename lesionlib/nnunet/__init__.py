"""nnU-Net v2 bridge: export cohorts, plan/preprocess, train (short schedules), fine-tune, predict.

Uses the installed ``nnunetv2`` (its command-line tools and ``nnUNetPredictor``) in
subprocesses whose nnU-Net folders live inside the run's own workspace; see
:mod:`lesionlib.nnunet.pipeline` for the workflow and :mod:`lesionlib.nnunet.trainers` for the
short-schedule trainers.
"""

from lesionlib.nnunet.export import export_dataset
from lesionlib.nnunet.paths import NnUNetPaths, dataset_folder_name
from lesionlib.nnunet.pipeline import (
    DEFAULT_PLANS,
    FINETUNE_EPOCHS,
    NnUNetRun,
    NnUNetStageError,
    default_device,
    evaluate_predictions,
)
from lesionlib.nnunet.trainers import parse_trainer_name, trainer_name

__all__ = [
    "NnUNetRun",
    "NnUNetStageError",
    "NnUNetPaths",
    "export_dataset",
    "evaluate_predictions",
    "dataset_folder_name",
    "trainer_name",
    "parse_trainer_name",
    "default_device",
    "DEFAULT_PLANS",
    "FINETUNE_EPOCHS",
]
