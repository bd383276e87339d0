"""Sliding-window inference, written as NIfTI masks on each input image's own grid.

For each image: the training preprocessing (:func:`lesionlib.transforms.preprocessing`: RAS,
resampling to the model's spacing, brain crop, z-score) -> MONAI sliding-window inference
(Gaussian-weighted windows of the training patch size) -> lesion probability on the processed
grid -> resampled back onto the input grid by trilinear interpolation through the two affines
(``inv(A_processed) @ A_input``; this undoes reorientation, resampling and cropping in one step)
-> threshold 0.5 (the two-class argmax) -> optional post-processing -> ``uint8`` mask with the
input's shape, affine and header, written atomically into the BIDS-derivatives dataset of the
record's source dataset (:func:`lesionlib.bids.save_prediction`)::

    <out_root>/<dataset>/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-lesion_mask.nii.gz

with a JSON sidecar naming the input (``Sources``) and describing the model and settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage
from tqdm.auto import tqdm

from lesionlib import bids
from lesionlib.data.records import ImageRecord
from lesionlib.data.validate import require_valid
from lesionlib.io import load_nifti
from lesionlib.train import autocast, model_from_checkpoint, on_device, resolve_device
from lesionlib.transforms import preprocessing

__all__ = ["predict_records", "predict_probability", "postprocess_mask", "prediction_space"]

log = logging.getLogger(__name__)

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def postprocess_mask(mask: np.ndarray, min_size_voxels: int = 0, largest_component: bool = False) -> np.ndarray:
    """Remove connected components (26-connectivity) smaller than ``min_size_voxels``; optionally keep
    only the largest component. Input and output: boolean ``(X, Y, Z)`` on the same grid."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or (min_size_voxels <= 1 and not largest_component):
        return mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= max(int(min_size_voxels), 1)
    if largest_component:
        largest = int(np.argmax(sizes))
        keep = np.zeros_like(keep)
        keep[largest] = sizes[largest] >= max(int(min_size_voxels), 1)
    keep[0] = False
    return keep[labels]


def prediction_space(record: ImageRecord) -> str | None:
    """The BIDS ``space`` entity of the record's image file name (``None`` for native space)."""
    return bids.image_space(record.image_path)


def predict_probability(model: torch.nn.Module, image_path: os.PathLike | str, spacing_mm: Sequence[float],
                        patch_size: Sequence[int], *, overlap: float = 0.5, sw_batch_size: int = 2,
                        device: torch.device | str = "cpu", amp: bool = True) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Lesion probability of one image on the image's own voxel grid.

    Returns
    -------
    (probability, image)
        ``probability``: float32 ``(X, Y, Z)`` in [0, 1] with the input image's shape;
        ``image``: the input as loaded (its affine and header define the grid).
    """
    device = torch.device(device)
    original = load_nifti(image_path)
    item = preprocessing(spacing_mm, patch_size=None)({"image": str(image_path)})
    processed = item["image"]
    affine_processed = np.asarray(processed.affine, dtype=np.float64)
    x = torch.as_tensor(processed).as_subclass(torch.Tensor)[None].to(device)
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        logits = sliding_window_inference(x, tuple(int(p) for p in patch_size), sw_batch_size=sw_batch_size,
                                          predictor=model, overlap=overlap, mode="gaussian")
    logits = torch.as_tensor(logits).as_subclass(torch.Tensor).float()
    prob = torch.softmax(logits, dim=1)[0, 1].cpu().numpy().astype(np.float32)
    # processed voxel index = inv(A_processed) @ A_input @ input voxel index
    mapping = np.linalg.inv(affine_processed) @ np.asarray(original.affine, dtype=np.float64)
    native = ndimage.affine_transform(prob, mapping[:3, :3], offset=mapping[:3, 3], output_shape=original.shape,
                                      order=1, mode="constant", cval=0.0)
    return np.clip(native, 0.0, 1.0).astype(np.float32), original


def predict_records(model_or_checkpoint: torch.nn.Module | os.PathLike | str, records: Sequence[ImageRecord],
                    out_root: os.PathLike | str, overlap: float = 0.5, min_size_voxels: int = 0,
                    largest_component: bool = False, *, space: str | None = "auto",
                    spacing_mm: Sequence[float] | None = None, patch_size: Sequence[int] | None = None,
                    device: str = "auto", sw_batch_size: int = 2, amp: bool = True,
                    progress: bool = True) -> list[Path]:
    """Segment ``records`` and write one mask per image; returns the written paths (input order).

    Parameters
    ----------
    model_or_checkpoint
        A lesionlib checkpoint (``checkpoint_best.pt``; spacing and patch size are read from it)
        or a model, in which case ``spacing_mm`` and ``patch_size`` are required.
    out_root
        Folder of the derivative datasets: each record's mask goes to
        :func:`lesionlib.bids.prediction_mask_path` ``(out_root, record)``, i.e. under
        ``out_root/<record.dataset>/``, which gets a ``dataset_description.json`` if it has none.
    overlap
        Sliding-window overlap in [0, 1).
    min_size_voxels, largest_component
        Post-processing on the output grid (see :func:`postprocess_mask`).
    space
        BIDS ``space`` entity of the output name: ``'auto'`` takes it from the input file name
        (``MNI152NLin2009aSym`` for ATLAS, none for native child scans); ``None`` omits it.

    Raises
    ------
    DataValidationError
        Before anything is written, listing every image that is not valid for prediction
        (:func:`lesionlib.data.validate.require_valid`).
    """
    records = list(records)
    require_valid(records, purpose="predict", progress=progress)
    device_t = resolve_device(device)
    provenance: dict[str, Any]
    if isinstance(model_or_checkpoint, torch.nn.Module):
        if spacing_mm is None or patch_size is None:
            raise ValueError("predict_records with a model needs spacing_mm and patch_size")
        model = on_device(model_or_checkpoint, device_t)
        provenance = {"model": type(model).__name__, "checkpoint": None,
                      "encoder_pretrained": bool(getattr(model, "encoder_pretrained", False))}
    else:
        model, ckpt = model_from_checkpoint(model_or_checkpoint, device_t)
        spacing_mm = spacing_mm or ckpt["spacing_mm"]
        patch_size = patch_size or ckpt.get("inference_patch_size") or ckpt["patch_size"]
        provenance = {"model": ckpt["model_name"], "checkpoint": str(Path(model_or_checkpoint).resolve()),
                      "epoch": ckpt.get("epoch"), "encoder_pretrained": bool(ckpt.get("encoder_pretrained", False))}
    settings = {"overlap": overlap, "min_size_voxels": int(min_size_voxels), "largest_component": largest_component,
                "spacing_mm": [float(s) for s in spacing_mm], "patch_size": [int(p) for p in patch_size]}
    description = f"lesion segmentation by {provenance['model']} (lesionlib.predict, sliding-window inference)"
    written: list[Path] = []
    for rec in tqdm(records, desc="predict", disable=not progress, unit="image"):
        prob, original = predict_probability(model, rec.image_path, spacing_mm, patch_size, overlap=overlap,
                                             sw_batch_size=sw_batch_size, device=device_t, amp=amp)
        mask = postprocess_mask(prob >= 0.5, min_size_voxels=min_size_voxels, largest_component=largest_component)
        header = original.header.copy()
        img = nib.Nifti1Image(mask.astype(np.uint8), original.affine, header)
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1.0, 0.0)
        out_path = bids.save_prediction(img, out_root, rec, description=description, space=space,
                                        sidecar={**provenance, **settings, "n_voxels": int(mask.sum())})
        log.debug("%s: %d lesion voxels -> %s", rec.case_id, int(mask.sum()), out_path)
        written.append(out_path)
    return written
