"""lesionlib.synth.realism: sphericity and shape statistics on analytic shapes, tissue classes, reports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lesionlib.synth import realism
from lesionlib.synth.deform import SubjectTissues

CONSTANT = math.pi ** (1.0 / 3.0)


def ball(radius: float, size: int | None = None, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    size = size or int(2 * radius / min(spacing)) + 5
    grid = np.indices((size, size, size)).astype(float)
    centre = (size - 1) / 2.0
    d2 = sum(((grid[k] - centre) * spacing[k]) ** 2 for k in range(3))
    return d2 <= radius**2


def test_sphericity_of_exact_shapes():
    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    assert realism.surface_voxel_count(voxel) == 1
    assert realism.sphericity(voxel) == pytest.approx(CONSTANT * 6 ** (2 / 3))
    # an n-cube: every voxel but the (n-2)^3 interior ones is a surface voxel; the volume border counts
    for n in (2, 5, 10):
        cube = np.ones((n, n, n), bool)
        surface = n**3 - max(n - 2, 0) ** 3
        assert realism.surface_voxel_count(cube) == surface
        assert realism.sphericity(cube) == pytest.approx(CONSTANT * (6 * n**3) ** (2 / 3) / surface)
    line = np.zeros((1, 1, 20), bool)
    line[...] = True
    assert realism.sphericity(line) == pytest.approx(CONSTANT * 120 ** (2 / 3) / 20)
    assert math.isnan(realism.sphericity(np.zeros((4, 4, 4), bool)))


def test_sphericity_of_balls_is_scale_free_and_rough_shapes_score_lower():
    values = [realism.sphericity(ball(r)) for r in (6, 10, 16)]
    assert all(1.15 < v < 1.4 for v in values), values
    assert max(values) - min(values) < 0.1
    # an elongated ellipsoid of the same volume scores lower than the ball
    grid = np.indices((61, 61, 61)) - 30.0
    ellipsoid = (grid[0] / 20) ** 2 + (grid[1] / 7) ** 2 + (grid[2] / 7) ** 2 <= 1
    assert realism.sphericity(ellipsoid) < 0.9 * values[1]
    # removing a random quarter of a ball's voxels (holes, rough border) lowers it a lot
    rough = ball(10) & (np.random.default_rng(0).random(ball(10).shape) > 0.25)
    assert realism.sphericity(rough) < 0.6 * values[1]
    # two separate balls: same per-ball shape, but the union scores 2^(2/3) / 2 of one ball
    two = np.concatenate([ball(8), ball(8)], axis=0)
    assert realism.sphericity(two) == pytest.approx(realism.sphericity(ball(8)) * 2 ** (2 / 3) / 2, rel=1e-6)


def test_sphericity_resamples_anisotropic_masks():
    iso = realism.sphericity(ball(10))
    coarse_z = ball(10, size=30, spacing=(1.0, 1.0, 2.0))
    resampled = realism.sphericity(coarse_z, spacing_mm=(1.0, 1.0, 2.0))
    assert resampled == pytest.approx(iso, rel=0.15)  # nearest-neighbour staircase costs ~10%


def test_lesion_shape_counts_26_connected_components_and_places_the_centroid():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:5, 2:5, 2:5] = True
    mask[5, 5, 5] = True  # touches the cube at a corner only: same 26-component
    mask[10:13, 10:13, 10:13] = True
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-10.0, -10.0, -40.0)
    shape = realism.lesion_shape(mask, affine, mni_space=True)
    assert shape.n_components == 2
    assert shape.volume_ml == pytest.approx(mask.sum() * 8 / 1000)
    expected = affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]
    np.testing.assert_allclose([shape.centroid_x_mm, shape.centroid_y_mm, shape.centroid_z_mm], expected)
    assert shape.posterior_fossa is bool(expected[2] < -20)
    assert realism.lesion_shape(mask, affine, mni_space=False).posterior_fossa is None
    empty = realism.lesion_shape(np.zeros((4, 4, 4)), np.eye(4), mni_space=True)
    assert empty.n_components == 0 and empty.volume_ml == 0 and empty.posterior_fossa is None
    # measured on the mask's bounding box: the same sphericity as on the whole grid, at the grid's edge too
    assert shape.sphericity == pytest.approx(realism.sphericity(mask))
    edge = np.zeros((20, 20, 20), bool)
    edge[0:4, 16:20, 5:9] = True
    assert realism.lesion_shape(edge, np.eye(4), mni_space=False).sphericity == pytest.approx(realism.sphericity(edge))
    aniso = np.diag([1.0, 1.0, 2.0, 1.0])  # resampled to isotropic voxels on the whole grid
    assert realism.lesion_shape(mask, aniso, mni_space=False).sphericity == pytest.approx(
        realism.sphericity(mask, (1.0, 1.0, 2.0)))


def test_tissue_class_means_recover_a_three_class_mixture():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(30, 3, 2000), rng.normal(70, 4, 5000), rng.normal(90, 4, 5000)])
    image = values.reshape(12, 10, 100)
    csf, gm, wm = realism.tissue_class_means(image, np.ones(image.shape, bool))
    assert csf == pytest.approx(30, abs=2) and gm == pytest.approx(70, abs=2) and wm == pytest.approx(90, abs=2)
    ratios = realism.contrast_ratios(image, np.ones(image.shape, bool))
    assert ratios["wm_gm_ratio"] == pytest.approx(90 / 70, rel=0.03)


def tissues_with(anat: np.ndarray, affine: np.ndarray) -> SubjectTissues:
    shape = anat.shape[1:]
    brain = np.zeros(shape, np.float32)
    brain[4:-4, 4:-4, 4:-4] = 1.0
    return SubjectTissues(gm=brain * 0.5, wm=brain * 0.5, csf=np.zeros(shape, np.float32), anat_mm=anat,
                          affine=affine)


def test_nonlinear_residual_ignores_affine_maps_and_measures_warps():
    shape = (24, 24, 24)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    world = np.indices(shape).astype(np.float32) * 2.0
    linear = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.05], [0.02, 0.0, 1.0]], np.float32)
    anat = np.einsum("ij,j...->i...", linear, world) + np.float32(5.0)
    assert realism.nonlinear_residual_mm(tissues_with(anat, affine)) < 1e-3
    warped = anat.copy()
    warped[0] += 3.0 * np.sin(world[1] / 3.0)  # 19 mm period
    assert realism.nonlinear_residual_mm(tissues_with(warped, affine)) > 1.0


def lesion_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"case_id": "a", "domain": "adult", "resolution_mm": 1.0, "volume_ml": 1.0, "n_components": 1,
         "sphericity": 0.9, "centroid_x_mm": -10.0, "centroid_y_mm": 0.0, "centroid_z_mm": 10.0,
         "posterior_fossa": False},
        {"case_id": "b", "domain": "adult", "resolution_mm": 1.0, "volume_ml": 10.0, "n_components": 3,
         "sphericity": 0.6, "centroid_x_mm": 10.0, "centroid_y_mm": -60.0, "centroid_z_mm": -30.0,
         "posterior_fossa": True},
        {"case_id": "c", "domain": "child", "resolution_mm": 1.0, "volume_ml": 40.0, "n_components": 1,
         "sphericity": 0.7, "centroid_x_mm": -40.0, "centroid_y_mm": 0.0, "centroid_z_mm": 10.0,
         "posterior_fossa": None},
    ])


def test_summaries_and_report_put_ours_beside_cited_references():
    summary = realism.summarise_lesions(lesion_rows())
    assert summary.loc["adult", "share_multi_component"] == 0.5
    assert summary.loc["adult", "share_posterior_fossa"] == 0.5
    assert summary.loc["adult", "volume_median_ml"] == 5.5
    assert math.isnan(summary.loc["child", "share_posterior_fossa"])
    anatomy = pd.DataFrame([
        {"cohort": "adult", "participant_id": "sub-a", "age_months": np.nan, "brain_volume_ml": 1800.0,
         "wm_gm_ratio": 1.25, "csf_wm_ratio": 0.55, "brain_fraction_of_adult": np.nan},
        {"cohort": "child", "participant_id": "sub-01", "age_months": 14.0, "brain_volume_ml": 1350.0,
         "wm_gm_ratio": 1.15, "csf_wm_ratio": 0.66, "brain_fraction_of_adult": 0.75},
    ])
    report = realism.realism_report(lesion_rows(), anatomy)
    assert list(report.columns) == ["cohort", "quantity", "ours", "reference", "kind", "source"]
    multi = report[(report["cohort"] == "adult") & report["quantity"].str.contains("> 1 component")]
    assert multi["ours"].iloc[0] == "0.50" and multi["reference"].iloc[0] == "0.68"
    assert "ds004889" in multi["source"].iloc[0]
    assert report["source"].str.len().min() > 10
    assert (report["cohort"] == "child").any() and report["quantity"].str.contains("12 months").any()
    # every reference figure names where it comes from and how it was obtained
    refs = realism.reference_table()
    assert set(refs["kind"]) <= {"published", "measured", "reported"}
    assert refs["source"].str.contains(r"\d{4}|Issue #12").all()
    summary = realism.summarise_anatomy(anatomy)
    assert {"adults", "children 12-23 months"} <= set(summary.index)


def test_expected_child_brain_fraction_follows_knickmeyer():
    assert realism.expected_child_brain_fraction(12) == pytest.approx(0.72)
    assert realism.expected_child_brain_fraction(24) == pytest.approx(0.83)
    ages = np.linspace(12, 48, 10)
    assert np.all(np.diff(realism.expected_child_brain_fraction(ages)) > 0)


def test_plot_realism_draws_six_panels():
    import matplotlib

    matplotlib.use("Agg")
    fig = realism.plot_realism(lesion_rows(), None)
    assert len(fig.axes) == 6


def test_write_realism_report_measures_masks_on_disk(tmp_path):
    import nibabel as nib

    from lesionlib.data.records import ImageRecord
    from lesionlib.space import mni_grid

    shape, affine = mni_grid(3.0)
    records = []
    for n, centre_z in enumerate((20, 5)):  # voxel index 5 along z is z = -57 mm: posterior fossa
        mask = np.zeros(shape, np.uint8)
        mask[30:34, 40:44, centre_z:centre_z + 3] = 1
        mask[20, 20, 40] = 1  # a second component
        path = tmp_path / f"adult{n}_mask.nii.gz"
        nib.save(nib.Nifti1Image(mask, affine), path)
        records.append(ImageRecord("synthetic_adult", f"a{n}", "1", path, path, domain="adult"))
    native = np.diag([-3.0, -3.0, 3.6, 1.0])
    mask = np.zeros((40, 40, 30), np.uint8)
    mask[10:20, 10:20, 10:18] = 1
    path = tmp_path / "child_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, native), path)
    records.append(ImageRecord("synthetic_child", "01", "1", path, path, domain="child"))
    adult_root, child_root = tmp_path / "adult", tmp_path / "child"
    adult_root.mkdir()
    child_root.mkdir()
    (adult_root / "participants.tsv").write_text(
        "participant_id\tbrain_volume_ml\twm_gm_ratio\tcsf_wm_ratio\nsub-a0\t1800\t1.25\t0.55\nsub-a1\t1900\t1.27\t0.54\n")
    (child_root / "participants.tsv").write_text(
        "participant_id\tage_months\tbrain_volume_ml\twm_gm_ratio\tcsf_wm_ratio\nsub-01\t14.0\t1360\t1.14\t0.68\n")
    out = realism.write_realism_report(records, tmp_path / "report", adult_root=adult_root, child_root=child_root)
    for name in realism.REALISM_FILES.values():
        assert (tmp_path / "report" / name).is_file()
    lesions = pd.read_csv(tmp_path / "report" / realism.REALISM_FILES["lesions"])
    adults = lesions[lesions["domain"] == "adult"]
    assert list(adults["n_components"]) == [2, 2] and list(adults["posterior_fossa"]) == [False, True]
    child = lesions[lesions["domain"] == "child"].iloc[0]
    assert pd.isna(child["posterior_fossa"]) and child["volume_ml"] == pytest.approx(800 * 9 * 3.6 / 1000)
    assert out.anatomy.loc[out.anatomy["cohort"] == "child", "brain_fraction_of_adult"].iloc[0] == \
        pytest.approx(1360 / 1850)
    report = pd.read_csv(tmp_path / "report" / realism.REALISM_FILES["report"], keep_default_na=False)
    assert (report["cohort"] == "child").any() and (report["ours"] != "").all()
    assert report.loc[report["quantity"].str.contains("below MNI z") & (report["cohort"] == "adult"), "ours"].iloc[0] \
        == "0.50"


def test_cite_sources_numbers_each_source_once_in_order_of_appearance():
    from lesionlib.synth.realism import cite_sources

    report = pd.DataFrame({"quantity": ["a", "b", "c", "d"],
                           "source": ["Liew 2022", "SOOP 2024", "Liew 2022", "no reference figure"]})
    table, sources = cite_sources(report)
    assert sources == ["Liew 2022", "SOOP 2024"]
    assert list(table["source"]) == ["[1]", "[2]", "[1]", "no reference figure"]
    assert list(report["source"])[0] == "Liew 2022"  # the input is not modified
