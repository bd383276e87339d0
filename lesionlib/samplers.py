"""Which images and which patches a model sees.

* :func:`atlas_subset` — the paper's ATLAS subset (lesion volume >= 2.5 mL and no cerebellar
  lesion; 305 of 655 cases on real ATLAS v2.0), with a report of what each rule removed.
* :func:`train_val_split` — seeded subject-level train/validation split (80/20 by default).
* :func:`few_shot_split` — the 5 child images for fine-tuning / in-domain training: subject-level,
  stratified by lesion size, seeded, serialisable.
* :class:`PatchDataset` — training patches with lesion oversampling (1/3 of patches centred on a
  lesion voxel, as nnU-Net), reproducible per (seed, epoch, slot) whatever the worker count.

Cerebellum definition (MNI152 space, mm)
----------------------------------------
The paper keeps lesions "outside the cerebellum". With a cerebellum atlas (the manifest's
``cerebellum_atlas`` asset, or ``cerebellum_mask``: a NIfTI in MNI space, values > 0.5 =
cerebellum, resampled to each mask's grid by nearest neighbour when needed) that is what is applied:
a case is excluded when any lesion voxel lies in the cerebellum. nilearn ships no cerebellum atlas
offline, so without one the posterior fossa is approximated by the box ``y < -40 mm and z < -20 mm``
(behind and below the tentorium; the MNI cerebellum spans about y in [-90, -30], z in [-70, -10])
and a case is excluded when a lesion connected component (26-connectivity) has at least
:data:`CEREBELLUM_BOX_MIN_FRACTION` of its voxels in the box — a weaker rule, named as such in the
:class:`SubsetReport`. Limits of the box: it also contains the lower brainstem and the most
inferior occipito-temporal cortex, and misses the upper vermis (z > -20 mm); it is meaningful
only for images in MNI space (ATLAS v2.0), not native-space child scans.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from lesionlib.data.records import ImageRecord
from lesionlib.io import DataValidationError, load_nifti
from lesionlib.space import same_grid

if TYPE_CHECKING:  # MONAI takes seconds to import; splits and the ATLAS subset rule do not need it
    from monai.transforms import Compose

__all__ = [
    "POSTERIOR_FOSSA_BOX_MNI",
    "SubsetReport",
    "atlas_subset",
    "lesion_volume_ml",
    "cerebellar_lesion",
    "train_val_split",
    "FewShotSplit",
    "few_shot_split",
    "sample_seed",
    "lesion_centred_crop",
    "PatchDataset",
]

log = logging.getLogger(__name__)

#: Posterior-fossa box in MNI mm: voxels with y < y_max_mm and z < z_max_mm.
POSTERIOR_FOSSA_BOX_MNI = {"y_max_mm": -40.0, "z_max_mm": -20.0}
#: Share of a lesion component's voxels inside the box that makes it cerebellar (box rule only).
CEREBELLUM_BOX_MIN_FRACTION = 0.5
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------------
# ATLAS subset
# ---------------------------------------------------------------------------------------------

def lesion_volume_ml(record: ImageRecord, mask: nib.Nifti1Image | None = None) -> float:
    """A record's total lesion volume in mL: ``record.lesion_volume_ml`` (from discovery) when known,
    else :func:`lesionlib.data.discovery.mask_volume_ml` of ``mask`` or of the record's mask file."""
    if record.lesion_volume_ml is not None:
        return float(record.lesion_volume_ml)
    if record.mask_path is None:
        raise ValueError(f"{record.case_id} of {record.dataset}: no mask and no lesion volume")
    from lesionlib.data.discovery import mask_volume_ml

    return mask_volume_ml(mask if mask is not None else record.mask_path)


def _region_on_grid(mask: nib.Nifti1Image, atlas: nib.Nifti1Image | None,
                    box: dict[str, float]) -> np.ndarray:
    """Boolean cerebellar region on ``mask``'s voxel grid (atlas if given, else the box)."""
    if atlas is not None:
        if same_grid(atlas, mask):
            return np.asarray(atlas.dataobj) > 0.5
        from nilearn.image import resample_to_img

        res = resample_to_img(atlas, mask, interpolation="nearest", force_resample=True, copy_header=True)
        return np.asarray(res.dataobj) > 0.5
    ijk = np.indices(mask.shape, dtype=np.float32).reshape(3, -1)
    xyz = mask.affine[:3, :3].astype(np.float32) @ ijk + mask.affine[:3, 3:4].astype(np.float32)
    inside = (xyz[1] < box["y_max_mm"]) & (xyz[2] < box["z_max_mm"])
    return inside.reshape(mask.shape)


def cerebellar_lesion(mask: nib.Nifti1Image, *, atlas: nib.Nifti1Image | None = None,
                      min_fraction: float = 0.5, box: dict[str, float] | None = None) -> bool:
    """Whether any lesion component of an MNI-space ``mask`` lies in the cerebellum (see module doc)."""
    data = np.asarray(mask.dataobj) > 0
    if not data.any():
        return False
    region = _region_on_grid(mask, atlas, box or POSTERIOR_FOSSA_BOX_MNI)
    labels, n = ndimage.label(data, structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels.ravel(), weights=region.ravel(), minlength=n + 1)
    fractions = inside[1:] / np.maximum(sizes[1:], 1)
    if min_fraction <= 0:  # any lesion voxel in the region
        return bool((inside[1:] > 0).any())
    return bool((fractions >= min_fraction).any())


@dataclass
class SubsetReport:
    """What :func:`atlas_subset` did; ``to_dict()`` is YAML/JSON-serialisable.

    ``failed_volume`` / ``failed_cerebellum`` count the cases failing each rule (a case can fail
    both, counted in ``failed_both``); ``n_input - n_kept`` cases were removed in all.
    """

    n_input: int
    n_kept: int
    failed_volume: int
    failed_cerebellum: int
    failed_both: int
    min_volume_ml: float
    exclude_cerebellum: bool
    cerebellum_definition: str
    removed: dict[str, list[str]] = field(default_factory=dict)  # case_id -> reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_input": self.n_input, "n_kept": self.n_kept, "n_removed": self.n_input - self.n_kept,
            "failed_volume": self.failed_volume, "failed_cerebellum": self.failed_cerebellum,
            "failed_both": self.failed_both, "min_volume_ml": self.min_volume_ml,
            "exclude_cerebellum": self.exclude_cerebellum, "cerebellum_definition": self.cerebellum_definition,
            "removed": {k: list(v) for k, v in self.removed.items()},
        }


def _cerebellum_rule(rule: str, cerebellum_mask: os.PathLike | str | None) -> tuple[nib.Nifti1Image | None, float, str]:
    """``(atlas or None, component fraction that makes a lesion cerebellar, description)`` of a rule."""
    if rule not in ("auto", "atlas", "box"):
        raise ValueError(f"cerebellum rule must be 'auto', 'atlas' or 'box', got {rule!r}")
    if cerebellum_mask is None and rule != "box":
        from lesionlib.data.manifest import asset_path

        cerebellum_mask = asset_path("cerebellum_atlas")
        if cerebellum_mask is None and rule == "atlas":
            raise ValueError("cerebellum rule 'atlas' needs the manifest's cerebellum_atlas asset "
                             "($LESIONLIB_CEREBELLUM_ATLAS): an MNI152 2009a cerebellum mask")
    if rule != "box" and cerebellum_mask is not None:
        return (load_nifti(cerebellum_mask), 0.0,
                f"atlas {Path(cerebellum_mask).name}: any lesion voxel in the cerebellum excludes the case")
    return (None, CEREBELLUM_BOX_MIN_FRACTION,
            f"MNI posterior-fossa box (y < {POSTERIOR_FOSSA_BOX_MNI['y_max_mm']:g} mm, z < "
            f"{POSTERIOR_FOSSA_BOX_MNI['z_max_mm']:g} mm; no atlas configured): a lesion component with at least "
            f"{CEREBELLUM_BOX_MIN_FRACTION:.0%} of its voxels in the box excludes the case")


def atlas_subset(records: Sequence[ImageRecord], min_volume_ml: float = 2.5, exclude_cerebellum: bool = True,
                 cerebellum_mask: os.PathLike | str | None = None, rule: str = "auto",
                 progress: bool = True) -> tuple[list[ImageRecord], SubsetReport]:
    """The paper's ATLAS subset: lesion volume >= ``min_volume_ml`` and no cerebellar lesion.

    Parameters
    ----------
    records
        MNI-space records with masks (ATLAS v2.0 or the synthetic adult cohort).
    min_volume_ml
        Minimum total lesion volume (mL); cases strictly below are removed.
    exclude_cerebellum
        Apply the cerebellum rule.
    cerebellum_mask, rule
        ``rule='auto'``: with a cerebellum atlas (``cerebellum_mask``, else the manifest's
        ``cerebellum_atlas`` asset) a case is excluded when *any* lesion voxel lies in the
        cerebellum — the paper's "no cerebellum involvement"; without one, the posterior-fossa box
        rule of the module docstring is used (and the report says so). ``'atlas'`` requires the
        atlas; ``'box'`` always uses the box.

    Returns
    -------
    (kept, report)
        Kept records in input order, and a :class:`SubsetReport` (``cerebellum_definition`` says
        which rule was used).
    """
    atlas, min_fraction, definition = _cerebellum_rule(rule, cerebellum_mask) if exclude_cerebellum \
        else (None, 1.0, "not applied")
    kept: list[ImageRecord] = []
    removed: dict[str, list[str]] = {}
    n_vol = n_cer = n_both = 0
    for rec in tqdm(records, desc="ATLAS subset", disable=not progress, unit="case"):
        mask = None
        if exclude_cerebellum or rec.lesion_volume_ml is None:
            if rec.mask_path is None:
                raise ValueError(f"{rec.case_id} of {rec.dataset}: the subset rules need a lesion mask")
            mask = load_nifti(rec.mask_path)
        reasons = []
        if lesion_volume_ml(rec, mask) < min_volume_ml:
            reasons.append(f"lesion volume < {min_volume_ml} mL")
        if exclude_cerebellum and cerebellar_lesion(mask, atlas=atlas, min_fraction=min_fraction):
            reasons.append("cerebellar lesion")
        n_vol += any(r.startswith("lesion volume") for r in reasons)
        n_cer += "cerebellar lesion" in reasons
        n_both += len(reasons) == 2
        if reasons:
            removed[f"{rec.dataset}/{rec.case_id}"] = reasons
        else:
            kept.append(rec)
    report = SubsetReport(n_input=len(records), n_kept=len(kept), failed_volume=n_vol, failed_cerebellum=n_cer,
                          failed_both=n_both, min_volume_ml=min_volume_ml, exclude_cerebellum=exclude_cerebellum,
                          cerebellum_definition=definition, removed=removed)
    log.info("ATLAS subset: kept %d of %d (volume rule failed %d, cerebellum rule failed %d, both %d)",
             len(kept), len(records), n_vol, n_cer, n_both)
    return kept, report


# ---------------------------------------------------------------------------------------------
# Subject-level splits
# ---------------------------------------------------------------------------------------------

def _by_subject(records: Sequence[ImageRecord]) -> dict[tuple[str, str], list[ImageRecord]]:
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for rec in records:
        groups[(rec.dataset, rec.subject)].append(rec)
    return dict(sorted(groups.items()))


def train_val_split(records: Sequence[ImageRecord], val_fraction: float = 0.2,
                    seed: int = 0) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Seeded subject-level split: all sessions of a subject go to the same side.

    ``round(val_fraction * n_subjects)`` subjects (at least one when ``val_fraction > 0`` and there
    are two or more subjects) go to validation. Both lists keep the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = list(_by_subject(records))
    n_val = int(round(val_fraction * len(groups)))
    if val_fraction > 0 and len(groups) >= 2:
        n_val = min(max(n_val, 1), len(groups) - 1)
    order = np.random.default_rng(seed).permutation(len(groups))
    val_keys = {groups[i] for i in order[:n_val]}
    train = [r for r in records if (r.dataset, r.subject) not in val_keys]
    val = [r for r in records if (r.dataset, r.subject) in val_keys]
    return train, val


@dataclass
class FewShotSplit:
    """Result of :func:`few_shot_split`.

    ``train``: the selected images (one session of each selected child); ``test``: every image of
    the children not selected; ``excluded``: the other sessions of selected children (used on
    neither side, so no child is on both sides). ``selection`` is a serialisable record.
    """

    train: list[ImageRecord]
    test: list[ImageRecord]
    excluded: list[ImageRecord]
    selection: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.selection)


def few_shot_split(records: Sequence[ImageRecord], n_images: int = 5, seed: int = 0,
                   stratify_by: str | None = "lesion_volume_ml", session: str = "first") -> FewShotSplit:
    """Pick ``n_images`` images from ``n_images`` different children, stratified by lesion size.

    Children are sorted by ``stratify_by`` (their mean over sessions; lesion volume is computed
    from the mask when the record lacks it) and cut into ``n_images`` strata of (near) equal size;
    one child is drawn from each stratum with ``numpy.random.default_rng(seed)``. From each drawn
    child one session is used (``session='first'``: the lowest session label; ``'random'``: seeded).
    ``stratify_by=None`` draws children uniformly.
    """
    groups = _by_subject(records)
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if n_images > len(groups):
        raise ValueError(f"cannot pick {n_images} images from distinct children: only {len(groups)} children")
    if session not in ("first", "random"):
        raise ValueError(f"session must be 'first' or 'random', got {session!r}")
    rng = np.random.default_rng(seed)
    keys = list(groups)

    def subject_value(key: tuple[str, str]) -> float:
        recs = groups[key]
        if stratify_by == "lesion_volume_ml":
            vals = [lesion_volume_ml(r) for r in recs]
        else:
            vals = [float(getattr(r, stratify_by)) for r in recs if getattr(r, stratify_by) is not None]
            if not vals:
                raise ValueError(f"subject {key[1]} of {key[0]} has no {stratify_by!r} to stratify by")
        return float(np.mean(vals))

    if stratify_by is None:
        strata = [keys]
        values = {k: None for k in keys}
        chosen = [keys[i] for i in sorted(rng.choice(len(keys), size=n_images, replace=False))]
    else:
        values = {k: subject_value(k) for k in keys}
        ordered = sorted(keys, key=lambda k: (values[k], k))
        strata = [list(s) for s in np.array_split(np.array(ordered, dtype=object), n_images)]
        strata = [[tuple(k) for k in s] for s in strata]
        chosen = [s[int(rng.integers(len(s)))] for s in strata]

    train, excluded = [], []
    for key in chosen:
        sessions = sorted(groups[key], key=lambda r: r.session)
        pick = sessions[0] if session == "first" else sessions[int(rng.integers(len(sessions)))]
        train.append(pick)
        excluded.extend(r for r in sessions if r is not pick)
    chosen_set = set(chosen)
    test = [r for r in records if (r.dataset, r.subject) not in chosen_set]
    selection = {
        "n_images": n_images, "seed": seed, "stratify_by": stratify_by, "session": session,
        "train": [f"{r.dataset}/{r.case_id}" for r in train],
        "test": [f"{r.dataset}/{r.case_id}" for r in test],
        "excluded": [f"{r.dataset}/{r.case_id}" for r in excluded],
        "strata": [[{"subject": f"{k[0]}/{k[1]}", "value": values[k]} for k in s] for s in strata]
        if stratify_by is not None else [],
    }
    return FewShotSplit(train=train, test=test, excluded=excluded, selection=selection)


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

def sample_seed(seed: int, epoch: int, slot: int) -> np.random.Generator:
    """The random generator of one training sample, a pure function of (run seed, epoch, slot).

    Seeding every sample this way makes the data stream independent of worker count and of
    interruptions: a resumed run sees exactly the patches an uninterrupted one would.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(slot)]))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch CPU ops single-threaded, as in a DataLoader worker.

    Multi-threaded kernels can sum in a different order, so augmentation done in the main process
    would differ in the last bits from the same augmentation in a worker (where torch uses one
    thread); pinning one thread makes the patches bitwise independent of ``num_workers``.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def lesion_centred_crop(image: torch.Tensor, label: torch.Tensor, patch_size: Sequence[int],
                        rng: np.random.Generator, foreground_fraction: float,
                        foreground_indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Crop ``patch_size`` from ``(C, X, Y, Z)`` tensors, centred on a lesion voxel with probability
    ``foreground_fraction`` (nnU-Net's oversampling), else at a uniformly random position.

    Equivalent in distribution to MONAI's ``RandCropByPosNegLabeld(pos=f, neg=1-f)`` except that
    negative patches are placed uniformly instead of centred on a background voxel, which avoids
    listing every voxel of the volume at each call: for a 150 x 180 x 150 volume and 128^3 patches,
    MONAI's transform took about 110 ms per patch and this function well under 1 ms (views; the
    copy made by :class:`PatchDataset` adds a few ms), measured on 2 busy CPU cores. Patches always
    lie inside the volume (the volume must be at least ``patch_size``). Returns views
    ``(image_patch, label_patch, centred_on_lesion)``.
    """
    spatial = np.array(image.shape[1:])
    patch = np.array([int(p) for p in patch_size])
    if np.any(spatial < patch):
        raise ValueError(f"volume {tuple(spatial)} is smaller than the patch {tuple(patch)}; pad it first")
    if foreground_indices is None:
        foreground_indices = np.flatnonzero(label[0].numpy() > 0)
    on_lesion = bool(rng.random() < foreground_fraction) and foreground_indices.size > 0
    if on_lesion:
        centre = np.array(np.unravel_index(int(foreground_indices[rng.integers(foreground_indices.size)]),
                                           tuple(spatial)))
        start = np.clip(centre - patch // 2, 0, spatial - patch)
    else:
        start = np.array([int(rng.integers(0, n - p + 1)) for n, p in zip(spatial, patch)])
    region = (slice(None), *(slice(int(a), int(a + p)) for a, p in zip(start, patch)))
    return image[region], label[region], on_lesion


class PatchDataset(torch.utils.data.Dataset):
    """Training patches for ``n_epochs`` epochs of ``samples_per_epoch`` samples each.

    Item ``j`` is sample ``slot = j % samples_per_epoch`` of epoch ``j // samples_per_epoch``:
    a case drawn uniformly (with replacement) from ``volumes``, a ``patch_size`` crop centred on a
    lesion voxel with probability ``foreground_fraction`` (else placed uniformly; see
    :func:`lesion_centred_crop`), then ``augment``. All randomness comes from :func:`sample_seed`.

    Parameters
    ----------
    volumes
        Indexable of preprocessed items ``{'image': (1, X, Y, Z), 'label': (1, X, Y, Z)}`` with
        X, Y, Z >= patch size (e.g. a MONAI ``CacheDataset`` over :func:`lesionlib.transforms.preprocessing`).
        They are only read (patches are copies), so DataLoader workers started by ``fork`` share a memory
        cache copy-on-write instead of copying it (:func:`lesionlib.resources.cache_copies`).

    Returns per item ``{'image': float32 (1, *patch_size), 'label': float32 (1, *patch_size), 'case_index': int}``.
    """

    def __init__(self, volumes: Sequence[dict], patch_size: Sequence[int], samples_per_epoch: int, n_epochs: int,
                 seed: int, foreground_fraction: float = 1.0 / 3.0, augment: Compose | None = None) -> None:
        if len(volumes) == 0:
            raise ValueError("PatchDataset needs at least one training volume")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.volumes = volumes
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.n_epochs = int(n_epochs)
        self.seed = int(seed)
        self.foreground_fraction = float(foreground_fraction)
        if augment is None:
            from monai.transforms import Compose

            augment = Compose([])
        self.augment = augment
        self._foreground: dict[int, np.ndarray] = {}  # lesion voxel indices per case (per process)

    def __len__(self) -> int:
        return self.samples_per_epoch * self.n_epochs

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, slot = divmod(int(index), self.samples_per_epoch)
        rng = sample_seed(self.seed, epoch, slot)
        case = int(rng.integers(len(self.volumes)))
        item = self.volumes[case]
        if "label" not in item:
            raise DataValidationError(item.get("case_id", f"case {case}"), "training needs a lesion mask")
        image = torch.as_tensor(item["image"]).as_subclass(torch.Tensor)
        label = torch.as_tensor(item["label"]).as_subclass(torch.Tensor)
        if case not in self._foreground:
            self._foreground[case] = np.flatnonzero(label[0].numpy() > 0)
        image, label, _ = lesion_centred_crop(image, label, self.patch_size, rng, self.foreground_fraction,
                                              self._foreground[case])
        patch = {"image": image.clone(), "label": label.clone()}
        self.augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
        with torch.random.fork_rng(devices=[]), _one_thread():
            torch.manual_seed(int(rng.integers(2**31 - 1)))
            patch = self.augment(patch)
        return {
            "image": torch.as_tensor(patch["image"]).as_subclass(torch.Tensor).float().contiguous(),
            "label": torch.as_tensor(patch["label"]).as_subclass(torch.Tensor).float().contiguous(),
            "case_index": case,
        }
