"""Where a run keeps nnU-Net's three folders, and the environment nnU-Net stages run with.

nnU-Net v2 finds its data through three environment variables (``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results``) and external trainer classes through a fourth
(``nnUNet_extTrainer``). lesionlib never touches the user's global values: every run has its
own *workspace* folder holding the three trees, and every nnU-Net stage is started as a
subprocess whose environment points inside that workspace.

Why subprocesses: nnunetv2 2.8.1 reads the variables lazily (``nnunetv2.paths._EnvPath``), so
setting ``os.environ`` in-process would work for one run at a time, but it would leak into
everything else in the interpreter (a notebook, a Snakemake job running several runs) and
nnU-Net's spawn-based multiprocessing needs ``if __name__ == "__main__":`` guards that a
notebook cannot provide. A subprocess with an explicit environment has neither problem, and
its output goes to a log file.

Layout of a workspace::

    <root>/nnUNet_raw/Dataset501_Adult/{imagesTr,labelsTr,imagesTs,dataset.json}
    <root>/nnUNet_preprocessed/Dataset501_Adult/{nnUNetPlans.json,...}
    <root>/nnUNet_results/Dataset501_Adult/<trainer>__<plans>__3d_fullres/fold_all/checkpoint_final.pth
    <root>/logs/<dataset>_<stage>.log
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NnUNetPaths", "dataset_folder_name", "EXT_TRAINER_DIR"]

#: Folder handed to nnU-Net as ``nnUNet_extTrainer``: it holds only the module that defines
#: lesionlib's short-schedule trainers (see :mod:`lesionlib.nnunet.trainers`).
EXT_TRAINER_DIR = Path(__file__).resolve().parent / "ext_trainers"

_DATASET_NAME = re.compile(r"^[A-Za-z0-9]+$")


def dataset_folder_name(dataset_id: int, dataset_name: str) -> str:
    """nnU-Net's folder name of a dataset: ``(501, 'Adult')`` -> ``'Dataset501_Adult'``.

    ``dataset_id`` must be 1..999 (nnU-Net formats it with three digits); ``dataset_name``
    letters and digits only (nnU-Net splits folder names on ``_``).
    """
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not _DATASET_NAME.match(dataset_name):
        raise ValueError(f"nnU-Net dataset name must be letters and digits only, got {dataset_name!r}")
    return f"Dataset{dataset_id:03d}_{dataset_name}"


@dataclass(frozen=True)
class NnUNetPaths:
    """The nnU-Net folders of one workspace (all absolute).

    ``results_root``: where ``nnUNet_results`` and ``logs`` live when they are not under ``root``
    — a grid cell trains into its own folder while reading the raw and preprocessed data that all
    cells of a profile share.
    """

    root: Path
    results_root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())
        object.__setattr__(self, "results_root", Path(self.results_root or self.root).resolve())

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.results_root / "nnUNet_results"

    @property
    def logs(self) -> Path:
        return self.results_root / "logs"

    def make_dirs(self) -> None:
        for folder in (self.raw, self.preprocessed, self.results, self.logs):
            folder.mkdir(parents=True, exist_ok=True)

    def environment(self, *, num_processes: int = 2, augmentation_workers: int | None = None,
                    base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for an nnU-Net subprocess: ``base`` (default ``os.environ``) plus this workspace.

        Sets the three nnU-Net folders, ``nnUNet_extTrainer`` (lesionlib's trainers, followed by
        any folders the caller had already listed), ``nnUNet_def_n_proc`` (default worker count
        of preprocessing/export, ``max(1, num_processes)``) and ``nnUNet_n_proc_DA``
        (data-augmentation workers per GPU, default ``max(1, num_processes)``). nnU-Net 2.8.1
        also feeds ``nnUNet_n_proc_DA`` to ``torch.set_num_threads`` while planning, so 0
        (augmentation inside the training process) is only valid for training stages.
        """
        env = dict(os.environ if base is None else base)
        env["nnUNet_raw"] = str(self.raw)
        env["nnUNet_preprocessed"] = str(self.preprocessed)
        env["nnUNet_results"] = str(self.results)
        previous = env.get("nnUNet_extTrainer")
        ext = [str(EXT_TRAINER_DIR)]
        if previous:
            ext += [p for p in previous.split(os.pathsep) if p and p != str(EXT_TRAINER_DIR)]
        env["nnUNet_extTrainer"] = os.pathsep.join(ext)
        if augmentation_workers is None:
            augmentation_workers = max(1, int(num_processes))
        env["nnUNet_n_proc_DA"] = str(max(0, int(augmentation_workers)))
        env["nnUNet_def_n_proc"] = str(max(1, int(num_processes)))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def __repr__(self) -> str:
        extra = "" if self.results_root == self.root else f", results_root={str(self.results_root)!r}"
        return f"NnUNetPaths({str(self.root)!r}{extra})"
