"""The MNI152 2009a tissue templates that every synthetic brain is built from.

nilearn ships (offline) the ICBM 2009a T1, grey-matter and white-matter probability maps and
the brain mask on a 197x233x189 grid of 1 mm voxels whose first voxel centre sits at
(-98, -134, -72) mm (RAS+). That grid is exactly the ATLAS v2.0 grid.

For a coarser ``resolution_mm`` the same field of view is kept: voxel centres start at the
same origin and step by ``resolution_mm``, ``n = floor((n_1mm - 1) / resolution_mm) + 1``
voxels per axis (2 mm gives nilearn's own 99x117x95 grid, 3 mm gives 66x78x63). The maps
are low-pass filtered (Gaussian, FWHM matching the new voxel size) before sampling, so a
coarse voxel holds a partial-volume fraction rather than an aliased sample.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

MNI_SHAPE_1MM: tuple[int, int, int] = (197, 233, 189)
MNI_ORIGIN_MM: tuple[float, float, float] = (-98.0, -134.0, -72.0)

__all__ = ["MNI_SHAPE_1MM", "MNI_ORIGIN_MM", "TissueTemplates", "mni_grid", "load_tissue_templates",
           "voxel_centres_mm"]


def mni_grid(resolution_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and 4x4 affine (voxel -> MNI mm, RAS+) of the MNI152 2009a grid at ``resolution_mm``.

    At 1 mm this is nilearn's template grid, 197x233x189 with origin (-98, -134, -72).
    """
    if not np.isfinite(resolution_mm) or resolution_mm <= 0:
        raise ValueError(f"resolution_mm must be a positive number, got {resolution_mm!r}")
    shape = tuple(int(np.floor((n - 1) / resolution_mm + 1e-9)) + 1 for n in MNI_SHAPE_1MM)
    affine = np.diag([resolution_mm, resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = MNI_ORIGIN_MM
    return shape, affine  # type: ignore[return-value]


def voxel_centres_mm(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape ``(3, *shape)``, float32."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return world.reshape((3, *shape))


@dataclass(frozen=True)
class TissueTemplates:
    """Tissue fractions on the MNI grid at one resolution; arrays are float32, shape ``shape``.

    ``brain`` is the brain-mask fraction (1 inside the mask at 1 mm); ``gm`` and ``wm`` are
    probabilities, clipped so that ``gm + wm <= brain``; ``csf`` is the remainder of the brain.
    """

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    resolution_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape  # type: ignore[return-value]

    @property
    def csf(self) -> np.ndarray:
        return np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)


def _resample_to(data: np.ndarray, resolution_mm: float, shape: tuple[int, int, int]) -> np.ndarray:
    if resolution_mm == 1.0:
        return data.astype(np.float32)
    if resolution_mm > 1.0:
        sigma = np.sqrt(resolution_mm**2 - 1.0) / 2.3548  # FWHM of the new voxel, in 1 mm voxels
        data = ndimage.gaussian_filter(data, sigma=sigma, mode="constant")
    axes = [np.arange(n, dtype=np.float64) * resolution_mm for n in shape]
    coords = np.meshgrid(*axes, indexing="ij")
    out = ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=0.0)
    return out.astype(np.float32)


@functools.lru_cache(maxsize=4)
def load_tissue_templates(resolution_mm: float = 1.0) -> TissueTemplates:
    """nilearn's MNI152 2009a GM, WM and brain mask resampled onto :func:`mni_grid` (cached)."""
    from nilearn import datasets

    shape, affine = mni_grid(resolution_mm)
    log.debug("loading MNI152 2009a tissue templates at %.3g mm (grid %s)", resolution_mm, shape)
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    if gm_img.shape != MNI_SHAPE_1MM or not np.allclose(gm_img.affine[:3, 3], MNI_ORIGIN_MM):
        raise RuntimeError(f"unexpected nilearn MNI152 grid {gm_img.shape} {gm_img.affine[:3, 3]}")
    gm = gm_img.get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    arrays = [np.clip(_resample_to(a, resolution_mm, shape), 0.0, 1.0) for a in (gm, wm, brain)]
    gm, wm, brain = arrays
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    for a in (gm, wm, brain):
        a.setflags(write=False)
    return TissueTemplates(gm=gm, wm=wm, brain=brain, affine=affine, resolution_mm=float(resolution_mm))
