"""The researcher's path, rehearsed: synthetic data laid out exactly as the real datasets are.

A researcher who holds ATLAS v2.0, a paediatric BIDS cohort and MedicalNet's weights points three
environment variables at them (README, *Real data*) and runs ``PROFILE=paper make book``. No real
data can be had here, so ``make rehearsal`` walks the same path on stand-ins:

* ``<out>/ATLAS_2/`` — a synthetic adult cohort at 1 mm in the ATLAS v2.0 release tree
  (``Training/R*/sub-*/ses-1/anat``, MNI152NLin2009aSym, 197 x 233 x 189; see
  :func:`lesionlib.data.discovery.discover_atlas`);
* ``<out>/child_bids/`` — a synthetic paediatric BIDS dataset (two sessions, native space,
  ``participants.tsv``) whose lesion masks exist for **session 1 only**, as in the paper's cohort:
  the session-2 masks are made by registration (``data.child_session2_masks: propagated``);
* ``<out>/MedicalNet/pretrain/resnet_10.pth`` — a *random* ResNet-10 saved exactly as MedicalNet
  releases its files (``{'state_dict': {'module.conv1.weight', ...}}``, the ``conv_seg.*`` head of its
  segmentation model, shortcut convolutions without bias), so that the loader meets the real layout;
* ``<out>/rehearsal.env`` — the ``export`` lines README gives researchers, pointing at the above.

The grid then runs the ``rehearsal`` profile of ``workflow/rehearsal.yaml``, a researcher's own
profiles file that ``extends: paper`` and changes only the schedules (and the working resolution,
for a CPU). Every dataset written here carries ``"Synthetic": true`` in its
``dataset_description.json``; :func:`rehearsal_roots` finds it, so the profile's ``data_source`` is
``'rehearsal'`` and no page, table or figure of the book built from it says "real".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from lesionlib import bids
from lesionlib.io import atomic_path

__all__ = [
    "ADULT_DIR", "CHILD_DIR", "WEIGHTS_FILE", "ENV_FILE", "MEDICALNET_SEG_HEAD",
    "write_medicalnet_release", "prepare_rehearsal_data", "environment", "is_synthetic_root", "register_cli",
]

log = logging.getLogger(__name__)

ADULT_DIR = "ATLAS_2"
CHILD_DIR = "child_bids"
WEIGHTS_FILE = Path("MedicalNet") / "pretrain" / "resnet_10.pth"
ENV_FILE = "rehearsal.env"
STAMP_FILE = "rehearsal.json"
REHEARSAL_FORMAT = 1

# MedicalNet's segmentation head (models/resnet.py, `conv_seg`): ConvTranspose3d(512, 32, 2, stride 2),
# BatchNorm3d(32), ReLU, Conv3d(32, 32, 3, bias=False), BatchNorm3d(32), ReLU, Conv3d(32, n_classes, 1, bias=False).
# The 23-dataset release files carry it; every loader must ignore it.
MEDICALNET_SEG_HEAD: dict[str, tuple[int, ...]] = {
    "conv_seg.0.weight": (512, 32, 2, 2, 2), "conv_seg.0.bias": (32,),
    "conv_seg.1.weight": (32,), "conv_seg.1.bias": (32,), "conv_seg.1.running_mean": (32,),
    "conv_seg.1.running_var": (32,),
    "conv_seg.3.weight": (32, 32, 3, 3, 3),
    "conv_seg.4.weight": (32,), "conv_seg.4.bias": (32,), "conv_seg.4.running_mean": (32,),
    "conv_seg.4.running_var": (32,),
    "conv_seg.6.weight": (2, 32, 1, 1, 1),
}


def write_medicalnet_release(path: Path, seed: int = 0) -> Path:
    """Save a random ResNet-10 (1 input channel, shortcut B) in MedicalNet's release layout.

    The file is ``{'state_dict': {'module.<key>': tensor}}`` as ``torch.save`` wrote it from MedicalNet's
    ``DataParallel`` model: the encoder's tensors (``conv1``, ``bn1``, ``layer1``-``layer4``, the shortcut
    ``downsample.0`` convolutions without bias) and the segmentation head :data:`MEDICALNET_SEG_HEAD`, and no
    ``num_batches_tracked`` entries (the release predates them). Written atomically; returns ``path``.
    """
    import torch

    from lesionlib.models import build_model

    torch.manual_seed(seed)
    encoder = build_model("resunet").encoder
    state = {f"module.{k}": v.detach().clone() for k, v in encoder.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    if any(".downsample.0.bias" in k for k in state):  # MedicalNet's shortcut convolutions have no bias
        raise RuntimeError("the Res-U-Net encoder has biased shortcut convolutions: not MedicalNet's layout")
    generator = torch.Generator().manual_seed(seed + 1)
    for key, shape in MEDICALNET_SEG_HEAD.items():
        value = torch.ones(shape) if key.endswith("running_var") else torch.randn(shape, generator=generator) * 0.01
        state[f"module.{key}"] = value
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state}, tmp)
    return path


def is_synthetic_root(root: Path | str | None) -> bool:
    """True when ``root`` holds a ``dataset_description.json`` with ``"Synthetic": true`` (lesionlib.synth)."""
    if root is None:
        return False
    root = Path(root)
    for candidate in (root, root.parent):  # an ATLAS root may be given as Training/ itself
        path = candidate / "dataset_description.json"
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("Synthetic") is True
            except (OSError, json.JSONDecodeError, AttributeError):
                return False
    return False


def _drop_later_session_masks(child_root: Path) -> int:
    """Delete every child's lesion masks but those of its first session (the paper's cohort has no others)."""
    masks = child_root / "derivatives" / bids.CHILD_MASK_DERIVATIVE
    removed = 0
    for subject in sorted(masks.glob("sub-*")):
        sessions = sorted((p for p in subject.glob("ses-*") if p.is_dir()), key=lambda p: p.name)
        for later in sessions[1:]:
            shutil.rmtree(later)
            removed += 1
    return removed


def environment(out: Path) -> dict[str, str]:
    """The variables README tells researchers to set, pointing at the rehearsal's folders under ``out``."""
    out = Path(out).resolve()
    return {"ATLAS_V2_ROOT": str(out / ADULT_DIR), "CHILD_BIDS_ROOT": str(out / CHILD_DIR),
            "MEDICALNET_RESNET10": str(out / WEIGHTS_FILE)}


def prepare_rehearsal_data(out: Path, *, n_adult: int, n_children: int, seed: int = 2024,
                           progress: bool = False, force: bool = False) -> dict[str, str]:
    """Write the rehearsal's three stand-ins and ``rehearsal.env`` under ``out`` (see the module docstring).

    Idempotent: a folder whose ``rehearsal.json`` records the same parameters is left alone. Adults are
    generated at 1 mm on ATLAS's grid; children at 1 mm in their native, non-RAS space. Returns
    :func:`environment`.
    """
    from lesionlib.synth import generate_adult_cohort, generate_child_cohort

    out = Path(out).resolve()
    params = {"format": REHEARSAL_FORMAT, "n_adult": int(n_adult), "n_children": int(n_children), "seed": int(seed),
              "resolution_mm": 1.0}
    env = environment(out)
    stamp = out / STAMP_FILE
    done = (not force and stamp.is_file() and json.loads(stamp.read_text()) == params
            and all(Path(p).exists() for p in env.values()))
    if done:
        log.info("rehearsal data in %s are up to date", out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        generate_adult_cohort(out / ADULT_DIR, n_adult, resolution_mm=1.0, seed=seed, progress=progress)
        # regenerated whole: the generator's own idempotency check would see the removed session-2 masks
        generate_child_cohort(out / CHILD_DIR, n_children, resolution_mm=1.0, seed=seed, progress=progress, force=True)
        removed = _drop_later_session_masks(out / CHILD_DIR)
        log.info("child cohort without its %d session-2 masks (they are propagated, as in the paper)", removed)
        write_medicalnet_release(out / WEIGHTS_FILE, seed=seed)
        with atomic_path(stamp) as tmp:
            tmp.write_text(json.dumps(params, indent=1))
    lines = ["# The rehearsal's stand-ins for the real data (lesionlib.rehearsal); README, 'Real data'."]
    lines += [f"export {key}={value}" for key, value in env.items()]
    with atomic_path(out / ENV_FILE) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return env


def register_cli(subparsers: Any) -> None:
    """Add ``lesionlib rehearsal`` to the command line."""
    p = subparsers.add_parser("rehearsal", help="write synthetic stand-ins for ATLAS v2.0, a child BIDS cohort and "
                                                "MedicalNet's weights, laid out as the real ones",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the stand-ins and rehearsal.env")
    p.add_argument("--profile", default=None,
                   help="take the numbers of adults and children and the seed from this profile's `data:`")
    p.add_argument("--n-adult", type=int, default=None, help="synthetic ATLAS subjects (default: 20)")
    p.add_argument("--n-children", type=int, default=None, help="synthetic children, two sessions each (default: 8)")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: 2024)")
    p.add_argument("--force", action="store_true", help="write everything again")
    p.set_defaults(func=_run_cli)


def _run_cli(args: Any) -> int:
    counts = {"n_adult": 20, "n_children": 8, "seed": 2024}
    if args.profile:
        from lesionlib.profile import load_profile

        data = load_profile(args.profile).data
        counts = {"n_adult": data.n_adult, "n_children": data.n_children, "seed": data.synth_seed}
    for key in counts:
        if getattr(args, key) is not None:
            counts[key] = int(getattr(args, key))
    env = prepare_rehearsal_data(args.out, n_adult=counts["n_adult"], n_children=counts["n_children"],
                                 seed=counts["seed"], force=args.force)
    for key, value in env.items():
        print(f"export {key}={value}")
    return 0
