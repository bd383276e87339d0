"""Subprocess entry point: run ``nnUNetPredictor`` on a list of files described by a JSON spec.

Started by :meth:`lesionlib.nnunet.pipeline.NnUNetRun.predict` as
``python -m lesionlib.nnunet.predict_worker spec.json`` with the workspace's nnU-Net
environment (so that lesionlib's trainer classes resolve through ``nnUNet_extTrainer``).

Spec keys: ``model_dir`` (``<trainer>__<plans>__<configuration>`` folder), ``folds`` (list of
``'all'`` or ints), ``checkpoint`` (file name), ``device`` (``'cpu'``/``'cuda'``/``'mps'``),
``use_mirroring`` (test-time augmentation by mirroring), ``tile_step_size``, ``inputs`` (list
of single-element lists: one T1w file per case), ``outputs`` (output paths without the file
ending, one per case), ``num_processes`` (0 or 1: sequential, no worker processes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def run(spec: dict) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(spec.get("num_threads") or os.cpu_count() or 1)))
    predictor = nnUNetPredictor(
        tile_step_size=float(spec.get("tile_step_size", 0.5)),
        use_gaussian=True,
        use_mirroring=bool(spec["use_mirroring"]),
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        allow_tqdm=True,
    )
    folds = tuple(f if f == "all" else int(f) for f in spec["folds"])
    predictor.initialize_from_trained_model_folder(spec["model_dir"], use_folds=folds,
                                                   checkpoint_name=spec["checkpoint"])
    if device.type == "cpu":  # channels-last 3D convolutions are faster on the CPU (lesionlib.train.on_device)
        predictor.network.to(memory_format=torch.channels_last_3d)
    num_processes = int(spec.get("num_processes", 0))
    if num_processes <= 1:
        predictor.predict_from_files_sequential(spec["inputs"], spec["outputs"], save_probabilities=False,
                                                overwrite=True)
    else:
        predictor.predict_from_files(spec["inputs"], spec["outputs"], save_probabilities=False, overwrite=True,
                                     num_processes_preprocessing=num_processes,
                                     num_processes_segmentation_export=num_processes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lesionlib.nnunet.predict_worker SPEC.json", file=sys.stderr)
        return 2
    run(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
