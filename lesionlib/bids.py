"""File naming: the ATLAS v2.0 layout, the child cohort's BIDS layout, and derivatives.

All of lesionlib builds paths through these functions, so that the synthetic cohorts,
real ATLAS v2.0 and a real paediatric BIDS dataset are read the same way.

ATLAS v2.0 (``Training/`` of the released archive)::

    Training/R001/sub-r001s001/ses-1/anat/
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

Child cohort (native space, plain BIDS; masks are derivatives)::

    sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz
    derivatives/lesion_masks/sub-01/ses-1/anat/sub-01_ses-1_label-L_desc-lesion_mask.nii.gz
    participants.tsv   (participant_id, age_months, sex, site)

Predicted masks: one BIDS-derivatives dataset per source dataset (:func:`prediction_root`), named
after the source's manifest name, so that adults and children never share a dataset::

    <out>/<dataset>/                      e.g. <run>/predictions/synthetic_adult/, .../child_cohort/
        dataset_description.json          DatasetType "derivative", GeneratedBy, SourceDatasets, DatasetLinks
        README
        sub-01/ses-1/anat/sub-01_ses-1[_space-S]_desc-lesion_mask.nii.gz
        sub-01/ses-1/anat/sub-01_ses-1[_space-S]_desc-lesion_mask.json   {"Sources": [...], "Type": "Lesion", ...}

``space-S`` is the input image's own ``space`` entity (``MNI152NLin2009aSym`` for ATLAS), absent
for native-space child scans: every mask lies on its input image's voxel grid. ``Sources`` holds a
BIDS URI ``bids:source:<path of the T1w inside its dataset>``, ``source`` being the
``DatasetLinks`` entry that points at the source dataset's root (a ``file://`` URI). Masks are
written by :func:`save_prediction` (atomically, the dataset description first): the grid's cells,
``lesionlib predict``, ``lesionlib lesiongnb predict``, ``lesionlib nnunet predict`` and every segmenter's
``predict`` write there.

:func:`prediction_path` names an internal tree without a dataset description,
``<out>/derivatives/lesionlib/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-<desc>_mask.nii.gz``: the session-2
masks propagated by :mod:`lesionlib.register` (under ``<results>/<profile>/_shared/session2_masks``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import nibabel as nib

from lesionlib.io import atomic_path, save_nifti_atomic

if TYPE_CHECKING:
    from lesionlib.data.records import ImageRecord

log = logging.getLogger(__name__)

ATLAS_SPACE = "MNI152NLin2009aSym"
CHILD_MASK_DERIVATIVE = "lesion_masks"
PREDICTION_DERIVATIVE = "lesionlib"
"""Pipeline folder of the generic ``<out>/derivatives/lesionlib/`` tree (:func:`prediction_path`)."""

BIDS_VERSION = "1.9.0"
"""BIDS version the prediction datasets declare (that of the synthetic cohorts)."""
DESCRIPTION_FILE = "dataset_description.json"
SOURCE_LINK = "source"
"""``DatasetLinks`` key of a prediction dataset's source dataset (the BIDS URIs ``bids:source:...``)."""

_ATLAS_SUBJECT = re.compile(r"^r(\d{3})s(\d{3})$")
_ATLAS_SITE = re.compile(r"^R\d{3}$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOI = re.compile(r"(?:doi:\s*|doi\.org/)(10\.\d{4,9}/[^\s,;]+?)[.,;]?(?:\s|$)", re.IGNORECASE)


def atlas_site_of(subject: str) -> str:
    """ATLAS site folder of a subject label: ``'r001s001'`` -> ``'R001'``."""
    m = _ATLAS_SUBJECT.match(subject)
    if not m:
        raise ValueError(f"not an ATLAS v2.0 subject label (expected rNNNsNNN): {subject!r}")
    return f"R{m.group(1)}"


def atlas_subject(site_index: int, subject_index: int) -> str:
    """ATLAS subject label from a 1-based site and subject index: (1, 1) -> ``'r001s001'``."""
    return f"r{site_index:03d}s{subject_index:03d}"


def atlas_anat_dir(root: Path, subject: str, session: str = "1") -> Path:
    return Path(root) / "Training" / atlas_site_of(subject) / f"sub-{subject}" / f"ses-{session}" / "anat"


def atlas_t1w_path(root: Path, subject: str, session: str = "1") -> Path:
    """ATLAS v2.0 T1w image path under ``root`` (the folder holding ``Training/``)."""
    name = f"sub-{subject}_ses-{session}_space-{ATLAS_SPACE}_T1w.nii.gz"
    return atlas_anat_dir(root, subject, session) / name


def atlas_mask_path(root: Path, subject: str, session: str = "1") -> Path:
    """ATLAS v2.0 lesion mask path under ``root``."""
    name = f"sub-{subject}_ses-{session}_space-{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz"
    return atlas_anat_dir(root, subject, session) / name


def child_t1w_path(root: Path, subject: str, session: str) -> Path:
    """Child T1w path: ``sub-XX/ses-N/anat/sub-XX_ses-N_T1w.nii.gz``."""
    return Path(root) / f"sub-{subject}" / f"ses-{session}" / "anat" / f"sub-{subject}_ses-{session}_T1w.nii.gz"


def child_mask_path(root: Path, subject: str, session: str) -> Path:
    """Child lesion mask path under ``derivatives/lesion_masks``."""
    return (
        Path(root) / "derivatives" / CHILD_MASK_DERIVATIVE / f"sub-{subject}" / f"ses-{session}" / "anat"
        / f"sub-{subject}_ses-{session}_label-L_desc-lesion_mask.nii.gz"
    )


def prediction_path(out_root: Path, subject: str, session: str, space: str | None = None,
                    desc: str = "lesion") -> Path:
    """A mask in the generic tree ``<out_root>/derivatives/lesionlib/sub-X/ses-Y/anat/..._desc-<desc>_mask.nii.gz``.

    Used for session-2 masks propagated by :mod:`lesionlib.register`; predictions of a segmenter
    go to :func:`prediction_mask_path` (one BIDS-derivatives dataset per source dataset).
    """
    space_part = f"_space-{space}" if space else ""
    name = f"sub-{subject}_ses-{session}{space_part}_desc-{desc}_mask.nii.gz"
    return Path(out_root) / "derivatives" / PREDICTION_DERIVATIVE / f"sub-{subject}" / f"ses-{session}" / "anat" / name


def parse_entities(filename: str) -> dict[str, str]:
    """BIDS key-value entities of a file name: ``sub-01_ses-1_T1w.nii.gz`` -> {'sub': '01', 'ses': '1'}."""
    stem = Path(filename).name.split(".")[0]
    out = {}
    for part in stem.split("_"):
        if "-" in part:
            k, v = part.split("-", 1)
            out[k] = v
    return out


# --------------------------------------------------------------------------- predicted masks


def image_space(image_path: os.PathLike | str) -> str | None:
    """The ``space`` entity of an image's file name (``None`` for native space)."""
    return parse_entities(Path(image_path).name).get("space")


def source_dataset_root(image_path: os.PathLike | str, subject: str) -> Path:
    """Root of the dataset an image belongs to.

    The folder above the image's ``sub-<subject>`` folder; for the ATLAS v2.0 layout
    (``Training/R001/sub-r001s001/...``) the folder holding ``Training/``. An image outside any
    ``sub-<subject>`` folder: its own folder.
    """
    path = Path(image_path).absolute()
    for parent in path.parents:
        if parent.name == f"sub-{subject}":
            root = parent.parent
            if _ATLAS_SITE.match(root.name) and root.parent.name == "Training":
                root = root.parent.parent
            return root
    return path.parent


def source_uri(record: "ImageRecord") -> str:
    """BIDS URI of a record's image: ``bids:source:<path inside its dataset>`` (see :data:`SOURCE_LINK`)."""
    root = source_dataset_root(record.image_path, record.subject)
    rel = Path(record.image_path).absolute().relative_to(root)
    return f"bids:{SOURCE_LINK}:{rel.as_posix()}"


def prediction_root(out_root: os.PathLike | str, dataset: str) -> Path:
    """The BIDS-derivatives dataset holding the predictions of source dataset ``dataset``: ``<out_root>/<dataset>``.

    ``dataset`` is the manifest name (``ImageRecord.dataset``), e.g. ``'synthetic_child'``.
    """
    if not _DATASET_NAME.match(dataset):
        raise ValueError(f"dataset name {dataset!r} cannot name a folder (letters, digits, '_', '-', '.')")
    return Path(out_root) / dataset


def prediction_mask_path(out_root: os.PathLike | str, record: "ImageRecord", *, space: str | None = "auto",
                         desc: str = "lesion") -> Path:
    """Where the predicted mask of ``record`` goes, in the derivative dataset of its source dataset.

    ``<out_root>/<dataset>/sub-X/ses-Y/anat/sub-X_ses-Y[_space-S]_desc-<desc>_mask.nii.gz``;
    ``space='auto'`` takes ``S`` from the input image's name (``MNI152NLin2009aSym`` for ATLAS, none
    for native-space child scans), ``None`` omits it.
    """
    rec_space = image_space(record.image_path) if space == "auto" else space
    space_part = f"_space-{rec_space}" if rec_space else ""
    sub, ses = record.subject, record.session
    name = f"sub-{sub}_ses-{ses}{space_part}_desc-{desc}_mask.nii.gz"
    return prediction_root(out_root, record.dataset) / f"sub-{sub}" / f"ses-{ses}" / "anat" / name


def sidecar_path(nifti_path: os.PathLike | str) -> Path:
    """The JSON sidecar of a ``.nii.gz`` / ``.nii`` file (same name, ``.json``)."""
    path = Path(nifti_path)
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".json")


def _doi(text: str) -> str | None:
    """The first DOI of a citation, as ``'doi:10.xxxx/...'`` (the BIDS form), or ``None``."""
    m = _DOI.search(text or "")
    return f"doi:{m.group(1)}" if m else None


def _synthetic_root(root: Path) -> bool:
    """Whether a dataset root says it holds synthetic data (``"Synthetic": true`` in its description)."""
    try:
        return bool(json.loads((root / DESCRIPTION_FILE).read_text()).get("Synthetic", False))
    except (OSError, ValueError, AttributeError):
        return False


def _manifest_spec(dataset: str) -> Any:
    """The manifest's entry of ``dataset`` (``None`` for a name the manifest does not know)."""
    from lesionlib.data.manifest import ManifestError, load_manifest

    try:
        return load_manifest().datasets.get(dataset)
    except ManifestError as exc:  # the names still describe the dataset
        log.warning("no manifest entry for dataset %r: %s", dataset, exc)
        return None


def prediction_dataset_description(dataset: str, source_root: os.PathLike | str, *, description: str) -> dict[str, Any]:
    """``dataset_description.json`` of the predictions of ``dataset`` (a BIDS derivative dataset).

    ``GeneratedBy``: lesionlib, its version and ``description`` (the method, or the grid cell).
    ``SourceDatasets`` / ``DatasetLinks``: the source dataset's root as a ``file://`` URI and, for
    real data (a manifest dataset of kind ``real`` whose root does not declare ``"Synthetic": true``),
    the DOI of the manifest's citation. Deterministic: the same arguments give the same content (no
    dates).
    """
    import lesionlib

    spec = _manifest_spec(dataset)
    root_uri = Path(source_root).absolute().as_uri()
    source: dict[str, str] = {"URL": root_uri}
    real = spec is not None and spec.kind == "real" and not _synthetic_root(Path(source_root))
    doi = _doi(spec.citation) if real else None
    if doi:
        source["DOI"] = doi
    # a real dataset's place held by synthetic stand-ins (make rehearsal) is a rehearsal, never "real data"
    kind = "" if spec is None else (", rehearsal on synthetic stand-ins" if spec.kind == "real" and not real
                                    else f", {spec.kind} data")
    return {
        "Name": f"lesionlib lesion-mask predictions on {dataset}{kind}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lesionlib", "Version": lesionlib.__version__, "Description": description}],
        "SourceDatasets": [source],
        "DatasetLinks": {SOURCE_LINK: root_uri},
    }


def _prediction_readme(content: Mapping[str, Any], dataset: str) -> str:
    spec = _manifest_spec(dataset)
    about = " ".join(spec.description.split()) if spec is not None and spec.description else ""
    generated = content["GeneratedBy"][0]
    return "\n".join([
        f"# {content['Name']}",
        "",
        f"Lesion masks predicted by lesionlib {generated['Version']}: {generated['Description']}",
        "",
        f"Source dataset `{dataset}` ({content['SourceDatasets'][0]['URL']}). {about}".rstrip(),
        "",
        "One mask per T1w image, `sub-<label>/ses-<label>/anat/sub-<label>_ses-<label>[_space-<label>]"
        "_desc-lesion_mask.nii.gz`: uint8, 1 = lesion, 0 = background, on the voxel grid (shape and affine) "
        "of its source image; `space` is the source image's own space entity, absent for native space. "
        "Each mask's JSON sidecar names its source image (`Sources`, a BIDS URI `bids:source:<path>` "
        "with `source` defined in `DatasetLinks`) and the model that produced it.",
        "",
    ])


def _write_text_if_changed(path: Path, text: str, overwrite: bool) -> None:
    """Write ``text`` atomically unless ``path`` holds it already (or exists and ``overwrite`` is false)."""
    if path.is_file() and (not overwrite or path.read_text() == text):
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_prediction_dataset(out_root: os.PathLike | str, record: "ImageRecord", *, description: str,
                             overwrite: bool = False) -> Path:
    """Create the derivative dataset of ``record``'s source dataset: ``dataset_description.json`` and ``README``.

    Each file is written atomically, only when missing (``overwrite=False``: the first writer of a
    dataset describes it; a grid cell writes first, with its identity) or, with ``overwrite=True``,
    when its content differs. Returns the dataset's root (:func:`prediction_root`).
    """
    root = prediction_root(out_root, record.dataset)
    source_root = source_dataset_root(record.image_path, record.subject)
    content = prediction_dataset_description(record.dataset, source_root, description=description)
    _write_text_if_changed(root / DESCRIPTION_FILE, json.dumps(content, indent=2) + "\n", overwrite)
    _write_text_if_changed(root / "README", _prediction_readme(content, record.dataset), overwrite)
    return root


def save_prediction(mask: nib.Nifti1Image | os.PathLike | str, out_root: os.PathLike | str, record: "ImageRecord",
                    *, description: str, sidecar: Mapping[str, Any] | None = None, space: str | None = "auto",
                    desc: str = "lesion") -> Path:
    """Write the predicted mask of ``record`` and its sidecar into its derivative dataset; returns the mask's path.

    Parameters
    ----------
    mask
        The mask as a NIfTI image on ``record``'s own grid, or the path of a NIfTI file already
        written on the same file system, moved into place (``os.replace``).
    description
        What produced the mask (the method), for the dataset's ``GeneratedBy`` when this call
        creates the dataset (:func:`write_prediction_dataset`).
    sidecar
        Extra items of the mask's JSON sidecar, besides ``Sources`` (BIDS URI of the input T1w),
        ``Type: "Lesion"`` and ``Description``.

    Every file is written atomically; the dataset description before the mask.
    """
    write_prediction_dataset(out_root, record, description=description)
    path = prediction_mask_path(out_root, record, space=space, desc=desc)
    if isinstance(mask, nib.Nifti1Image):
        save_nifti_atomic(mask, path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(mask, path)
    content = {"Sources": [source_uri(record)], "Type": "Lesion", "Description": description, **(sidecar or {})}
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return path
