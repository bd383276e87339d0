"""A morphological brain mask for whole-head T1w images, so that they can be registered to a brain template.

LesionGnb's toolbox normalises whole-head T1w images with SPM12's unified segmentation, whose
tissue probability maps include bone, soft tissue and air, so the skull and scalp never pull the
brain out of place. Our stand-in registration (:func:`lesionlib.register.register_to_mni`) matches
the image to nilearn's *skull-stripped* MNI152 2009a template; given a whole-head image it fits the
head, not the brain, to the template's brain. On five synthetic children (3 mm) the mean error of
the registered brain was 12-17 mm registering the whole head and 7-12 mm registering a brain-
extracted copy, where their shape difference that no affine map removes is 5.5-8.9 mm RMS. Native-
space images are therefore brain-extracted before registration, with the classic threshold-erode-
select-dilate recipe:

1. foreground = voxels above 5% of the 99th intensity percentile (background is ~0);
2. bright = voxels above 0.6 times the median intensity of the head's core (foreground voxels
   deeper than half the largest depth: deep white matter, basal ganglia, ventricles), i.e. GM
   (0.7-0.9 of WM on T1w, adults and children), WM, fat and marrow, but not CSF (0.25-0.45) or
   bone. Otsu thresholds proved fragile here: with fat, marrow, brain and dark layers the
   histogram has more modes than classes, and the split fell between white matter and fat, or
   between CSF and the dark layers;
3. erosion by ``erode_mm`` (7 mm; Euclidean distance): cuts the bright shells of scalp fat and
   diploë (at 3 mm voxels they merge into one shell several mm thick) and the partial-volume
   bridges between them and the brain;
4. the largest connected component (6-connectivity) is the brain;
5. geodesic dilation back through bright voxels by ``erode_mm``, then a closing of ``close_mm`` and
   hole filling bring back the sulci, the ventricles and dark lesion cavities.

Finer images are processed on a 3 mm copy (see :func:`brain_mask`).

It is a stand-in for a real brain-extraction tool (BET, HD-BET, SynthStrip), good enough to drive
an affine registration (cortical lesion cavities open to the surface may be left out of the mask);
the tissue analysis itself runs on the whole-head image inside the template's brain mask, as in
the toolbox. Arrays are ``(X, Y, Z)`` on the image's own grid; distances in mm use its voxel sizes.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["dark_threshold", "brain_mask", "brain_extracted"]

log = logging.getLogger(__name__)


def dark_threshold(data: np.ndarray, foreground: np.ndarray, spacing_mm: tuple[float, float, float],
                   fraction: float = 0.6) -> float:
    """``fraction`` times the median intensity of the head's core (foreground voxels deeper than half
    the foreground's largest depth, in mm): the level separating CSF and bone from brain tissue."""
    depth = ndimage.distance_transform_edt(foreground, sampling=spacing_mm)
    core = depth > 0.5 * float(depth.max())
    return fraction * float(np.median(data[core]))


def brain_mask(data: np.ndarray, spacing_mm: tuple[float, float, float], *, erode_mm: float = 7.0,
               close_mm: float = 6.0, working_mm: float = 3.0) -> np.ndarray:
    """Boolean brain mask of a whole-head T1w volume (see the module doc for the steps).

    Volumes with voxels finer than ``working_mm`` are processed on a ``working_mm`` copy (linear
    resampling) and the mask is brought back by linear interpolation (> 0.5): at 1 mm the erosion
    would also remove gyri that the geodesic regrowth cannot bring back. Returns the whole
    foreground (and logs a warning) when nothing survives the erosion.
    """
    data = np.nan_to_num(np.asarray(data, dtype=np.float32))
    spacing = tuple(float(s) for s in spacing_mm)
    zoom = tuple(s / working_mm for s in spacing)
    if max(zoom) < 0.75:
        coarse = ndimage.zoom(data, zoom, order=1, grid_mode=True, mode="grid-constant")
        coarse_spacing = tuple(float(s * n / c) for s, n, c in zip(spacing, data.shape, coarse.shape))
        mask = brain_mask(coarse, coarse_spacing, erode_mm=erode_mm, close_mm=close_mm, working_mm=working_mm)
        back = tuple(n / c for n, c in zip(data.shape, mask.shape))
        fine = ndimage.zoom(mask.astype(np.float32), back, order=1, grid_mode=True, mode="grid-constant") > 0.5
        return fine & (data > 0)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    foreground = data > 0.05 * float(np.percentile(positive, 99))
    bright = data > dark_threshold(data, foreground, spacing)
    core = ndimage.distance_transform_edt(bright, sampling=spacing) > erode_mm
    labels, n = ndimage.label(core)
    if n == 0:
        log.warning("brain extraction: nothing left after a %.1f mm erosion; using the whole foreground", erode_mm)
        return foreground
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    brain = labels == int(np.argmax(sizes))
    # grow back by erode_mm through bright voxels only (geodesic), so that it does not cross dark gaps
    step = min(spacing)
    for _ in range(int(np.ceil(erode_mm / step)) + 1):
        brain = ndimage.binary_dilation(brain) & bright
    closed = ndimage.distance_transform_edt(~brain, sampling=spacing) <= close_mm
    brain = ndimage.distance_transform_edt(closed, sampling=spacing) > close_mm
    return ndimage.binary_fill_holes(brain) & foreground


def brain_extracted(image: nib.Nifti1Image, **kwargs: float) -> nib.Nifti1Image:
    """``image`` with everything outside :func:`brain_mask` set to 0 (same grid, float32)."""
    data = np.asanyarray(image.dataobj).astype(np.float32)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    mask = brain_mask(data, spacing, **kwargs)  # type: ignore[arg-type]
    return nib.Nifti1Image(np.where(mask, data, 0.0).astype(np.float32), image.affine)
