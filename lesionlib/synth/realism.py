"""How close the cohorts are to real data: lesion shape statistics, anatomy, and published reference figures.

Per lesion mask (:func:`lesion_shape`): volume (mL), number of 26-connected components,
sphericity, centroid (world mm) and, for masks in MNI space, whether the centroid lies in the
posterior fossa (MNI z < -20 mm). Per cohort (:func:`summarise_lesions`): medians, shares and
ranges. Per synthetic subject the generators record the brain volume and the tissue contrast
(:func:`contrast_ratios`) in ``participants.tsv``; :func:`anatomy_table` reads them back.
:func:`realism_report` puts every figure of ours beside the reference figure it should be
compared with (:data:`REFERENCES`, each with its source), and :func:`plot_realism` draws the
distributions.

Sphericity
----------
``sphericity = pi^(1/3) (6 V)^(2/3) / A`` with ``V`` the number of mask voxels and ``A`` the number
of *surface voxels*: mask voxels with at least one of their six face neighbours outside the mask
(the volume's border counts as outside). Both are voxel counts, so the figure depends on the
voxel size (it is meant for 1 mm grids; masks with anisotropic voxels are first resampled, nearest
neighbour, to isotropic voxels of their smallest spacing). With this definition a large digital
ball scores about 1.25 (a surface voxel per ~0.8 voxel faces of area), a single voxel 4.84, an
``n``-voxel line ``pi^(1/3) (6 n)^(2/3) / n``, and rough, lobulated or fragmented masks less.
Calibration: issue #12 reported a median of 0.93 for the first generator's adults (30 subjects,
1 mm, seed 2024) and about 0.7 for real chronic and acute stroke masks; this definition gives
0.931 on exactly those 30 masks (the alternatives give 0.52 counting exposed voxel faces, 0.58
counting surface voxels with 26-neighbourhoods, 0.70 with a marching-cubes area).

Shapes are arrays ``(X, Y, Z)`` indexed like the NIfTI data; affines map voxel indices to world
millimetres (RAS+).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from lesionlib.space import grid_mismatch, mni_grid
from lesionlib.synth.lesions import POSTERIOR_FOSSA_Z_MM

if TYPE_CHECKING:
    import matplotlib.figure

    from lesionlib.data.records import ImageRecord
    from lesionlib.synth.deform import SubjectTissues

log = logging.getLogger(__name__)

__all__ = [
    "POSTERIOR_FOSSA_Z_MM", "surface_voxel_count", "sphericity", "LesionShape", "lesion_shape", "lesion_table",
    "tissue_class_means", "contrast_ratios", "nonlinear_residual_mm", "summarise_lesions", "anatomy_table",
    "summarise_anatomy", "ReferenceFigure", "REFERENCES", "reference_table", "realism_report", "cite_sources",
    "expected_child_brain_fraction", "plot_realism", "REALISM_FILES", "RealismReport", "write_realism_report",
    "adult_lesion_sample_1mm",
]

_FACES = ndimage.generate_binary_structure(3, 1)
_CUBE = np.ones((3, 3, 3), dtype=bool)


# --------------------------------------------------------------------------- one mask
def surface_voxel_count(mask: np.ndarray) -> int:
    """Mask voxels with at least one face neighbour (6-neighbourhood) outside the mask or the volume."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0
    box = tuple(slice(max(int(a) - 1, 0), int(b) + 1) for a, b in zip(np.argwhere(m).min(0), np.argwhere(m).max(0)))
    padded = np.pad(m[box], 1)
    return int((padded & ~ndimage.binary_erosion(padded, structure=_FACES)).sum())


def _is_isotropic(spacing_mm: Sequence[float]) -> bool:
    spacing = np.asarray(spacing_mm, dtype=float)
    return bool(np.allclose(spacing, spacing.min(), rtol=0.01))


def _isotropic(mask: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing_mm, dtype=float)
    if _is_isotropic(spacing):
        return np.asarray(mask, dtype=bool)
    zoom = spacing / spacing.min()
    return ndimage.zoom(np.asarray(mask, dtype=np.uint8), zoom, order=0, grid_mode=True, mode="grid-constant") > 0


def sphericity(mask: np.ndarray, spacing_mm: Sequence[float] | None = None) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A`` in voxel units (see the module doc); NaN for an empty mask.

    ``spacing_mm`` (per axis): anisotropic masks are resampled to isotropic voxels first.
    """
    m = np.asarray(mask, dtype=bool)
    if spacing_mm is not None:
        m = _isotropic(m, spacing_mm)
    volume = int(m.sum())
    if volume == 0:
        return float("nan")
    return float(math.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / surface_voxel_count(m))


@dataclass(frozen=True)
class LesionShape:
    """Shape statistics of one lesion mask; centroid in world mm (RAS+), NaN for an empty mask."""

    volume_ml: float
    n_components: int
    sphericity: float
    centroid_x_mm: float
    centroid_y_mm: float
    centroid_z_mm: float
    posterior_fossa: bool | None
    """Centroid below MNI z = -20 mm; ``None`` when the mask is not in MNI space or is empty."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def lesion_shape(mask: np.ndarray, affine: np.ndarray, *, mni_space: bool) -> LesionShape:
    """Volume, 26-connected component count, sphericity, centroid and posterior-fossa flag of ``mask``."""
    m = np.asarray(mask) > 0
    affine = np.asarray(affine, dtype=float)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    n = int(m.sum())
    if n == 0:
        nan = float("nan")
        return LesionShape(0.0, 0, nan, nan, nan, nan, None)
    # every measure on the mask's bounding box (a 1 mm MNI grid has 8.7 M voxels, a lesion a few thousand);
    # resampling an anisotropic mask to isotropic voxels keeps the whole grid (its blocks start at the grid's edge)
    box = ndimage.find_objects(m.view(np.uint8))[0]
    corner = np.array([b.start for b in box], dtype=float)
    cropped = m[box]
    centroid = affine[:3, :3] @ (np.argwhere(cropped).mean(axis=0) + corner) + affine[:3, 3]
    return LesionShape(
        volume_ml=n * voxel_ml,
        n_components=int(ndimage.label(cropped, structure=_CUBE)[1]),
        sphericity=sphericity(cropped if _is_isotropic(spacing) else m, spacing),
        centroid_x_mm=float(centroid[0]), centroid_y_mm=float(centroid[1]), centroid_z_mm=float(centroid[2]),
        posterior_fossa=bool(centroid[2] < POSTERIOR_FOSSA_Z_MM) if mni_space else None,
    )


def lesion_table(records: Iterable["ImageRecord"], *, progress: bool = False) -> pd.DataFrame:
    """One row of :class:`LesionShape` per labelled record (masks read from disk), plus ``case_id``,
    ``subject``, ``domain`` and ``resolution_mm`` (smallest voxel size). A mask counts as MNI space
    (posterior-fossa flag defined) when it lies on :func:`lesionlib.space.mni_grid` of its resolution."""
    import nibabel as nib
    from tqdm.auto import tqdm

    rows = []
    for rec in tqdm(list(records), desc="lesion shapes", disable=not progress):
        if rec.mask_path is None:
            continue
        img = nib.load(str(rec.mask_path))
        spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        resolution = float(spacing.min())
        mni = np.allclose(spacing, resolution, rtol=1e-3) and grid_mismatch(img, mni_grid(resolution)) is None
        shape = lesion_shape(np.asanyarray(img.dataobj), img.affine, mni_space=mni)
        rows.append({"case_id": rec.case_id, "subject": rec.subject, "domain": rec.domain,
                     "resolution_mm": resolution, **shape.as_dict()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- anatomy
def adult_lesion_sample_1mm(seed: int, n_subjects: int = 50) -> pd.DataFrame:
    """Shape statistics (:func:`lesion_shape`) of the lesion plans of the first ``n_subjects`` adults of
    ``seed`` (each subject draws its plan first, so it is the same at every resolution) grown at 1 mm
    on the unwarped template: the generator's lesion model at the resolution of ATLAS and of the
    reference figures, for cohorts generated on coarser grids (whose voxel sphericity is not
    comparable). Rows carry ``domain = 'adult (1 mm sample)'``, ``target_volume_ml`` and ``n_lesions``.
    About 0.5 s per plan on one core."""
    from lesionlib.space import mni_volumes
    from lesionlib.synth import deform, lesions
    from lesionlib.synth.adult import ADULT_STREAM, adult_lesion_plan

    shape, affine = mni_grid(1.0)
    tissues = deform.sample_templates(mni_volumes(1.0), deform.deformation_coordinates(shape, affine, np.eye(4)),
                                      affine)
    rows = []
    for index in range(n_subjects):
        rng = np.random.default_rng([seed, ADULT_STREAM, index])
        plan = adult_lesion_plan(seed, index, rng)
        mask = np.zeros(shape, dtype=bool)
        for lesion in lesions.grow_plan(tissues, plan, rng):
            mask |= lesion.mask
        rows.append({"case_id": f"plan-{index:03d}", "subject": str(index), "domain": "adult (1 mm sample)",
                     "resolution_mm": 1.0, **lesion_shape(mask, affine, mni_space=True).as_dict(),
                     "target_volume_ml": plan.total_volume_ml, "n_lesions": len(plan.lesions)})
    return pd.DataFrame(rows)


def tissue_class_means(image: np.ndarray, brain: np.ndarray, *, seed: int = 0,
                       max_samples: int = 10_000) -> tuple[float, float, float]:
    """Means of a 3-class Gaussian mixture on the intensities inside ``brain`` (bool), sorted: CSF, GM, WM.

    The measurement behind the real-scan figures of ``NOTES.md`` (brain-extracted T1w, 3-class
    mixture on brain intensities), so synthetic and real ratios are computed alike.
    """
    from sklearn.mixture import GaussianMixture

    values = np.asarray(image)[np.asarray(brain, dtype=bool)].astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size < 30:
        raise ValueError(f"only {values.size} brain voxels to fit tissue classes on")
    rng = np.random.default_rng(seed)
    if values.size > max_samples:
        values = rng.choice(values, max_samples, replace=False)
    start = np.percentile(values, [15.0, 50.0, 85.0])[:, None]  # deterministic start, no k-means
    gmm = GaussianMixture(3, means_init=start, random_state=seed).fit(values[:, None])
    csf, gm, wm = np.sort(gmm.means_[:, 0])
    return float(csf), float(gm), float(wm)


def contrast_ratios(image: np.ndarray, brain: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """``wm_gm_ratio`` and ``csf_wm_ratio`` of the class means (:func:`tissue_class_means`)."""
    csf, gm, wm = tissue_class_means(image, brain, seed=seed)
    return {"wm_gm_ratio": wm / gm, "csf_wm_ratio": csf / wm}


def nonlinear_residual_mm(tissues: "SubjectTissues", *, max_points: int = 50_000, seed: int = 0) -> float:
    """RMS (mm) of the part of a subject's mapping to the template that no affine map explains.

    Fits, by least squares over brain voxels (brain fraction > 0.5), an affine map from subject
    world mm to template mm (``tissues.anat_mm``) and returns the RMS distance of the residual:
    the shape difference an affine registration to the template cannot remove.
    """
    inside = np.flatnonzero(tissues.brain.ravel() > 0.5)
    rng = np.random.default_rng(seed)
    if inside.size > max_points:
        inside = np.sort(rng.choice(inside, max_points, replace=False))
    ijk = np.array(np.unravel_index(inside, tissues.shape), dtype=float)
    world = tissues.affine[:3, :3] @ ijk + tissues.affine[:3, 3:4]
    target = tissues.anat_mm.reshape(3, -1)[:, inside].astype(float)
    design = np.vstack([world, np.ones(world.shape[1])]).T
    coef, *_ = np.linalg.lstsq(design, target.T, rcond=None)
    residual = target.T - design @ coef
    return float(np.sqrt((residual**2).sum(axis=1).mean()))


def expected_child_brain_fraction(age_months: float | np.ndarray) -> np.ndarray:
    """Brain volume as a fraction of the adult's, by age: 0.72 at 12 months and 0.83 at 24 months
    (Knickmeyer et al. 2008), then linearly towards 0.95 at 72 months (~95% at 6 years: Giedd et al.
    1999, as cited by Peper et al. 2009). The synthetic children's brains are drawn around this curve."""
    return np.interp(np.asarray(age_months, dtype=float), [12.0, 24.0, 72.0], [0.72, 0.83, 0.95])


def anatomy_table(adult_root: Path | None, child_root: Path | None) -> pd.DataFrame:
    """The per-subject anatomy columns the synthetic generators write into ``participants.tsv``.

    Rows: one per subject with ``cohort`` ('adult' / 'child'), ``age_months`` (children),
    ``brain_volume_ml``, ``wm_gm_ratio``, ``csf_wm_ratio`` and, for children,
    ``brain_fraction_of_adult`` (brain volume over the adults' mean brain volume). Missing files or
    columns (e.g. real datasets) give missing rows or NaN.
    """
    frames = []
    for cohort, root in (("adult", adult_root), ("child", child_root)):
        path = Path(root) / "participants.tsv" if root is not None else None
        if path is None or not path.is_file():
            continue
        df = pd.read_csv(path, sep="\t", na_values=["n/a"])
        df.insert(0, "cohort", cohort)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["cohort", "participant_id", "age_months", "brain_volume_ml", "wm_gm_ratio",
                                     "csf_wm_ratio", "brain_fraction_of_adult"])
    table = pd.concat(frames, ignore_index=True)
    for column in ("age_months", "brain_volume_ml", "wm_gm_ratio", "csf_wm_ratio"):
        if column not in table:
            table[column] = np.nan
    adult_mean = table.loc[table["cohort"] == "adult", "brain_volume_ml"].mean()
    table["brain_fraction_of_adult"] = np.where(table["cohort"] == "child", table["brain_volume_ml"] / adult_mean,
                                                np.nan)
    keep = ["cohort", "participant_id", "age_months", "brain_volume_ml", "wm_gm_ratio", "csf_wm_ratio",
            "brain_fraction_of_adult", "nonlinear_residual_mm"]
    return table[[c for c in keep if c in table]]


# --------------------------------------------------------------------------- cohort summaries
def summarise_lesions(table: pd.DataFrame, by: str = "domain") -> pd.DataFrame:
    """Per cohort (``by``): n, volume (min, median, mean, max mL), share < 2.5 mL, share with more than
    one component, median component count, median sphericity, share in the posterior fossa (MNI
    masks only) and share of left-sided centroids (x < 0)."""
    rows = {}
    for name, df in table.groupby(by):
        lesioned = df[df["volume_ml"] > 0]
        pf = lesioned["posterior_fossa"].dropna()
        rows[name] = {
            "n": int(len(df)),
            "volume_min_ml": float(lesioned["volume_ml"].min()),
            "volume_median_ml": float(lesioned["volume_ml"].median()),
            "volume_mean_ml": float(lesioned["volume_ml"].mean()),
            "volume_max_ml": float(lesioned["volume_ml"].max()),
            "share_under_2_5_ml": float((lesioned["volume_ml"] < 2.5).mean()),
            "share_multi_component": float((lesioned["n_components"] > 1).mean()),
            "median_components": float(lesioned["n_components"].median()),
            "median_sphericity": float(lesioned["sphericity"].median()),
            "share_posterior_fossa": float(pf.astype(bool).mean()) if len(pf) else float("nan"),
            "share_left": float((lesioned["centroid_x_mm"] < 0).mean()),
        }
    return pd.DataFrame(rows).T


def _age_band(age: float) -> str:
    return "12-23 months" if age < 24 else ("24-35 months" if age < 36 else "36-48 months")


def summarise_anatomy(anatomy: pd.DataFrame) -> pd.DataFrame:
    """Mean brain volume (mL), brain fraction of the adults', WM/GM and CSF/WM ratios per cohort and,
    for children, per age band (12-23, 24-35, 36-48 months)."""
    if anatomy.empty:
        return pd.DataFrame()
    groups = anatomy.assign(group=[("adults" if c == "adult" else f"children {_age_band(a)}")
                                   for c, a in zip(anatomy["cohort"], anatomy["age_months"])])
    cols = ["brain_volume_ml", "brain_fraction_of_adult", "wm_gm_ratio", "csf_wm_ratio"]
    out = groups.groupby("group")[cols].agg(["mean", "min", "max"])
    out.insert(0, ("n", ""), groups.groupby("group").size())
    return out


# --------------------------------------------------------------------------- reference figures
@dataclass(frozen=True)
class ReferenceFigure:
    """A figure of real data to compare with: value (or range), what it describes, and its source."""

    key: str
    cohort: str
    quantity: str
    value: str
    source: str
    kind: str
    """'published' (from the cited paper), 'measured' (by this project on the cited real data) or 'reported'
    (stated in the issue that asked for this report, measured on real masks by the project)."""


_ATLAS = ("ATLAS v2.0 training set (n = 655): Liew et al., A large, curated, open-source stroke neuroimaging "
          "dataset to improve lesion segmentation algorithms, Sci Data 9:320 (2022); figures as recorded in the "
          "project notes")
_SOOP = ("SOOP, 1449 acute ischaemic stroke masks (OpenNeuro ds004889): Absher et al., The stroke outcome "
         "optimization project: acute ischemic strokes from a comprehensive stroke center, Sci Data 11:839 "
         "(2024); measured by this project (1 mm standard space)")
_PAPER = ("Lhermitte et al., ISBI 2024 (the reproduced paper): its paediatric cohort")
_ISSUE = "Issue #12: real chronic (ATLAS-like) and acute (SOOP) masks, measured by the project with this definition"
_KNICKMEYER = ("Knickmeyer et al., A structural MRI study of human brain development from birth to 2 years, "
               "J Neurosci 28(47):12176-12182 (2008)")
_INFANT_SCANS = ("Real infant/child T1w scans (0.8 mm, brain-extracted), 3-class Gaussian mixture on brain "
                 "intensities; measured by this project (NOTES.md, 2026-11-25)")
_BARKOVICH = ("T1w grey/white contrast matures over the first 1-2 years, adult-like in sign by about 12 months: "
              "Barkovich et al., Normal maturation of the neonatal and infant brain: MR imaging at 1.5 T, "
              "Radiology 166:173-180 (1988); Dubois et al., The early development of brain white matter, "
              "Neuroscience 276:48-71 (2014)")

REFERENCES: tuple[ReferenceFigure, ...] = (
    ReferenceFigure("volume_range_ml", "adult", "lesion volume range (mL)", "0.003-469", _ATLAS, "published"),
    ReferenceFigure("volume_mean_ml", "adult", "lesion volume mean (mL)", "26.8", _ATLAS, "published"),
    ReferenceFigure("volume_median_ml", "adult", "lesion volume median (mL)", "about 5", _ATLAS, "published"),
    ReferenceFigure("volume_median_ml_soop", "adult", "lesion volume median (mL), acute", "12.7", _SOOP, "measured"),
    ReferenceFigure("share_under_2_5_ml", "adult", "share of masks under 2.5 mL, acute", "0.28", _SOOP, "measured"),
    ReferenceFigure("share_multi_component", "adult", "share of masks with > 1 component (26-conn.)", "0.68",
                    _SOOP, "measured"),
    ReferenceFigure("median_components", "adult", "median number of components", "2", _SOOP, "measured"),
    ReferenceFigure("median_sphericity", "adult", "median voxel sphericity (1 mm)", "about 0.7", _ISSUE, "reported"),
    ReferenceFigure("share_posterior_fossa", "adult", "share centred below MNI z = -20 mm", "about 0.11", _SOOP,
                    "measured"),
    ReferenceFigure("volume_range_ml", "child", "lesion volume range (mL)", "2.5-172", _PAPER, "published"),
    ReferenceFigure("volume_mean_ml", "child", "lesion volume mean (mL)", "50.6", _PAPER, "published"),
    ReferenceFigure("brain_fraction_12", "child", "brain volume / adult, 12 months", "about 0.72", _KNICKMEYER,
                    "published"),
    ReferenceFigure("brain_fraction_24", "child", "brain volume / adult, 24 months", "about 0.83", _KNICKMEYER,
                    "published"),
    ReferenceFigure("brain_volume_ml", "child", "brain volume (mL), 11-23 months", "about 1000-1100 "
                    "(adults 1200-1400)", _INFANT_SCANS, "measured"),
    ReferenceFigure("wm_gm_ratio_adult", "adult", "WM/GM class-mean ratio", "1.24 (MNI152 template)",
                    _INFANT_SCANS, "measured"),
    ReferenceFigure("wm_gm_ratio_12_23", "child", "WM/GM class-mean ratio, 12-23 months",
                    "1.11-1.15 at 9-11 months, 1.16-1.19 at 19-23 months", _INFANT_SCANS, "measured"),
    ReferenceFigure("csf_wm_ratio", "child", "CSF/WM class-mean ratio", "0.65-0.70 (template 0.57)",
                    _INFANT_SCANS, "measured"),
    ReferenceFigure("contrast_maturation", "child", "T1w grey/white contrast at 12-48 months",
                    "adult-like in sign, weaker; late in frontal/temporal white matter", _BARKOVICH, "published"),
)
"""Reference figures of real data, with sources. Nothing here is a result of this project's models."""


def reference_table() -> pd.DataFrame:
    """:data:`REFERENCES` as a table (columns key, cohort, quantity, value, source, kind)."""
    return pd.DataFrame([r.__dict__ for r in REFERENCES])


def _fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}"


def realism_report(lesions: pd.DataFrame, anatomy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our figures beside the reference figures: one row per (cohort, quantity).

    Columns: ``cohort``, ``quantity``, ``ours``, ``reference``, ``kind`` (of the reference) and
    ``source``. ``lesions`` is :func:`lesion_table` (``domain`` = cohort); ``anatomy`` is
    :func:`anatomy_table`.
    """
    refs = {(r.cohort, r.key): r for r in REFERENCES}
    summary = summarise_lesions(lesions) if len(lesions) else pd.DataFrame()
    rows: list[dict[str, str]] = []

    def add(cohort: str, key: str, ours: str, quantity: str | None = None) -> None:
        ref = refs.get((cohort, key))
        rows.append({"cohort": cohort, "quantity": quantity or (ref.quantity if ref else key), "ours": ours,
                     "reference": ref.value if ref else "n/a", "kind": ref.kind if ref else "",
                     "source": ref.source if ref else "no reference figure"})

    for cohort in ("adult", "adult (1 mm sample)", "child"):
        if cohort not in summary.index:
            continue
        s = summary.loc[cohort]
        if cohort == "adult (1 mm sample)":  # the lesion model at the reference's resolution
            rows.extend({"cohort": cohort, "quantity": refs[("adult", key)].quantity, "ours": _fmt(s[key]),
                         "reference": refs[("adult", key)].value, "kind": refs[("adult", key)].kind,
                         "source": refs[("adult", key)].source}
                        for key in ("median_sphericity", "share_multi_component", "share_posterior_fossa"))
            continue
        add(cohort, "volume_range_ml", f"{_fmt(s['volume_min_ml'], 2)}-{_fmt(s['volume_max_ml'], 3)}")
        add(cohort, "volume_mean_ml", _fmt(s["volume_mean_ml"], 3))
        add(cohort, "volume_median_ml", _fmt(s["volume_median_ml"], 3), "lesion volume median (mL)")
        if cohort == "adult":
            add(cohort, "volume_median_ml_soop", _fmt(s["volume_median_ml"], 3))
        add(cohort, "share_under_2_5_ml", _fmt(s["share_under_2_5_ml"]), "share of masks under 2.5 mL")
        add(cohort, "share_multi_component", _fmt(s["share_multi_component"]),
            "share of masks with > 1 component (26-conn.)")
        add(cohort, "median_components", _fmt(s["median_components"]), "median number of components")
        resolution = lesions.loc[lesions["domain"] == cohort, "resolution_mm"].median()
        add(cohort, "median_sphericity", _fmt(s["median_sphericity"]),
            f"median voxel sphericity (ours at {_fmt(resolution, 2)} mm)")
        add(cohort, "share_posterior_fossa", _fmt(s["share_posterior_fossa"]), "share centred below MNI z = -20 mm")
    if anatomy is not None and len(anatomy):
        adults = anatomy[anatomy["cohort"] == "adult"]
        children = anatomy[anatomy["cohort"] == "child"]
        if len(adults):
            add("adult", "wm_gm_ratio_adult", _fmt(adults["wm_gm_ratio"].mean(), 3), "WM/GM class-mean ratio")
        if len(children):
            for months, key in ((12, "brain_fraction_12"), (24, "brain_fraction_24")):
                near = children[(children["age_months"] - months).abs() <= 6]
                add("child", key, _fmt(near["brain_fraction_of_adult"].mean(), 2) + f" (n = {len(near)}, "
                    f"{months - 6}-{months + 6} months)")
            young = children[children["age_months"] < 24]
            add("child", "brain_volume_ml", f"{_fmt(young['brain_volume_ml'].min(), 4)}-"
                f"{_fmt(young['brain_volume_ml'].max(), 4)} (adults {_fmt(adults['brain_volume_ml'].mean(), 4)}; "
                "template-sized brains)", "brain volume (mL), 12-23 months")
            add("child", "wm_gm_ratio_12_23", _fmt(young["wm_gm_ratio"].mean(), 3) +
                f"; 24-48 months {_fmt(children.loc[children['age_months'] >= 24, 'wm_gm_ratio'].mean(), 3)}")
            add("child", "csf_wm_ratio", _fmt(children["csf_wm_ratio"].mean(), 2) +
                f" (adults {_fmt(adults['csf_wm_ratio'].mean(), 2)})")
            add("child", "contrast_maturation", "WM/GM rises with age; frontal/temporal WM darker (by design)")
    return pd.DataFrame(rows, columns=["cohort", "quantity", "ours", "reference", "kind", "source"])


def cite_sources(report: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``report`` (:func:`realism_report`) with each ``source`` replaced by a number ``[k]``, and the sources.

    Many rows share one source; a numbered list under the table reads better than the same
    reference written out on every row. Rows without a reference figure keep their text.
    """
    sources: list[str] = []
    keys = []
    for source in report["source"].fillna(""):
        if not source or source == "no reference figure":
            keys.append(source)
            continue
        if source not in sources:
            sources.append(source)
        keys.append(f"[{sources.index(source) + 1}]")
    return report.assign(source=keys), sources


# --------------------------------------------------------------------------- figure
def plot_realism(lesions: pd.DataFrame, anatomy: pd.DataFrame | None = None) -> "matplotlib.figure.Figure":
    """Six panels: lesion volume, sphericity, component count and centroid height per cohort; child
    brain volume fraction and WM/GM ratio by age; reference figures drawn in black."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    colours = {"adult": "tab:blue", "child": "tab:orange", "adult (1 mm sample)": "tab:green"}
    lesioned = lesions[lesions["volume_ml"] > 0] if len(lesions) else lesions
    ax = axes[0, 0]
    for cohort, df in lesioned.groupby("domain"):
        ax.hist(np.log10(df["volume_ml"]), bins=20, alpha=0.5, density=True, color=colours.get(cohort), label=cohort)
    for x in (np.log10(0.003), np.log10(469)):
        ax.axvline(x, color="k", linestyle=":", linewidth=1)
    ax.axvline(np.log10(5.0), color="k", linewidth=1, label="ATLAS v2.0 median, range")
    for x in (np.log10(2.5), np.log10(172.0)):
        ax.axvline(x, color="tab:orange", linestyle=":", linewidth=1)
    ax.plot([], [], color="tab:orange", linestyle=":", label="paper's children: range")
    ax.set(xlabel="lesion volume (log10 mL)", ylabel="density", title="Volume")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for cohort, df in lesioned.groupby("domain"):
        ax.hist(df["sphericity"].clip(upper=2.0), bins=20, alpha=0.5, density=True, color=colours.get(cohort),
                label=cohort)
    ax.axvline(0.7, color="k", linewidth=1, label="real masks ~0.7 (1 mm)")
    ax.set(xlabel="voxel sphericity (clipped at 2)", title="Shape")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    groups = list(lesioned.groupby("domain"))
    width = 0.8 / max(len(groups), 1)
    for k, (cohort, df) in enumerate(groups):
        counts = df["n_components"].clip(upper=5).value_counts(normalize=True).reindex(range(1, 6), fill_value=0)
        ax.bar(np.arange(1, 6) + (k - (len(groups) - 1) / 2) * width, counts.values, width=width,
               color=colours.get(cohort), label=f"{cohort}: {(df['n_components'] > 1).mean():.0%} > 1")
    ax.axhline(0.32, color="k", linewidth=1, label="SOOP: 32% single (68% > 1)")
    ax.set(xticks=range(1, 6), xticklabels=["1", "2", "3", "4", "5+"], xlabel="connected components (26-conn.)",
           ylabel="share of masks", title="Multi-focality")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    mni = lesioned[lesioned["posterior_fossa"].notna()] if len(lesioned) else lesioned
    for cohort, df in mni.groupby("domain"):
        ax.hist(df["centroid_z_mm"], bins=20, alpha=0.5, color=colours.get(cohort),
                label=f"{cohort}: {df['posterior_fossa'].astype(bool).mean():.0%} below -20 mm")
    ax.axvline(POSTERIOR_FOSSA_Z_MM, color="k", linewidth=1, label="SOOP: ~11% below")
    ax.set(xlabel="lesion centroid z (MNI mm)", ylabel="masks", title="Location (MNI-space masks)")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    ages = np.linspace(12, 48, 50)
    ax.plot(ages, expected_child_brain_fraction(ages), color="grey", linewidth=1, label="generator's curve")
    ax.plot([12, 24], [0.72, 0.83], "ks", label="Knickmeyer et al. 2008")
    if anatomy is not None and len(anatomy):
        ch = anatomy[anatomy["cohort"] == "child"]
        ax.plot(ch["age_months"], ch["brain_fraction_of_adult"], "o", color=colours["child"],
                label="synthetic children")
    ax.set(xlabel="age (months)", ylabel="brain volume / adult", title="Child brain volume")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.errorbar([10, 21], [1.13, 1.175], yerr=[0.02, 0.015], fmt="ks", capsize=3, label="real scans (NOTES.md)")
    ax.axhline(1.24, color="k", linestyle=":", linewidth=1, label="MNI template 1.24")
    if anatomy is not None and len(anatomy):
        ch = anatomy[anatomy["cohort"] == "child"]
        ax.plot(ch["age_months"], ch["wm_gm_ratio"], "o", color=colours["child"], label="synthetic children")
        ad = anatomy[anatomy["cohort"] == "adult"]["wm_gm_ratio"]
        if len(ad):
            ax.axhline(float(ad.mean()), color=colours["adult"], linewidth=1, label="synthetic adults (mean)")
    ax.set(xlabel="age (months)", ylabel="WM/GM class-mean ratio", title="Grey/white contrast")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the report files
REALISM_FILES = {"report": "realism.csv", "lesions": "realism_lesions.csv", "anatomy": "realism_anatomy.csv",
                 "summary": "realism_summary.csv", "figure": "realism.png"}
"""File names the data notebook writes into ``<results>/<profile>/_report/`` (the book reads them)."""


@dataclass
class RealismReport:
    """The realism report of a profile's cohorts (the tables also written by :func:`write_realism_report`)."""

    report: pd.DataFrame
    lesions: pd.DataFrame
    anatomy: pd.DataFrame
    summary: pd.DataFrame
    figure: Path


def write_realism_report(records: Sequence["ImageRecord"], out_dir: Path, *, adult_root: Path | None = None,
                         child_root: Path | None = None, sample_1mm: pd.DataFrame | None = None,
                         progress: bool = False) -> RealismReport:
    """Measure the cohorts' lesions (every labelled record) and, for synthetic cohorts, the anatomy
    columns of their ``participants.tsv``; write :data:`REALISM_FILES` into ``out_dir``.

    ``sample_1mm`` (:func:`adult_lesion_sample_1mm`) adds the generator's lesions at 1 mm, for
    cohorts generated on coarser grids.

    ``realism.csv`` is :func:`realism_report` (ours beside the reference figures), ``realism_lesions.csv``
    one row per mask (:func:`lesion_table`), ``realism_anatomy.csv`` :func:`anatomy_table`,
    ``realism_summary.csv`` :func:`summarise_lesions` and ``realism.png`` :func:`plot_realism`.
    """
    import matplotlib.pyplot as plt

    from lesionlib.io import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lesions = lesion_table(records, progress=progress)
    if sample_1mm is not None and len(sample_1mm):
        lesions = pd.concat([lesions, sample_1mm[[c for c in sample_1mm if c in lesions or not len(lesions)]]],
                            ignore_index=True)
    anatomy = anatomy_table(adult_root, child_root)
    report = realism_report(lesions, anatomy)
    summary = summarise_lesions(lesions) if len(lesions) else pd.DataFrame()
    for key, df, index in (("report", report, False), ("lesions", lesions, False), ("anatomy", anatomy, False),
                           ("summary", summary, True)):
        with atomic_path(out_dir / REALISM_FILES[key]) as tmp:
            df.to_csv(tmp, index=index, index_label="cohort" if index else None)
    fig = plot_realism(lesions, anatomy)
    figure = out_dir / REALISM_FILES["figure"]
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    log.info("realism report: %d masks, %d subjects with anatomy columns -> %s", len(lesions), len(anatomy), out_dir)
    return RealismReport(report=report, lesions=lesions, anatomy=anatomy, summary=summary, figure=figure)
