"""The book builds on a miniature results folder and shows Tables 1-2 and Figures 1-2; one notebook
runs through papermill with tiny parameters."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from lesionlib import config
from lesionlib.experiments import expand_grid
from lesionlib.notebook_runner import run_notebook

from lesionlib.metrics import METRIC_COLUMNS


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum((grid[i] - centre[i]) ** 2 for i in range(3))
    return (d2 <= radius ** 2).astype(np.uint8)


def write_miniature_results(results_root: Path, profile: str = "quick", n_children: int = 4,
                            run_ids: list[str] | None = None, seed: int = 0) -> list[str]:
    """Fake-but-well-formed runs: metrics.csv, params.yaml, an executed-looking notebook, and tiny
    16^3 NIfTI images / masks / predictions (LPS, 3 mm voxels) for the child cases.

    Returns the run ids written (by default a few cells of each table, not the whole grid).
    """
    rng = np.random.default_rng(seed)
    grid = {r.run_id: r for r in expand_grid(profile)}
    run_ids = run_ids or ["lesiongnb_adult-full_seed0", "unet_adult-full_seed0", "nnunet_adult-full_seed0",
                          "unet_adult-full_ft-child5_seed0", "nnunet_child5_seed0"]
    shape = (16, 16, 16)
    affine = np.diag([-3.0, -3.0, 3.0, 1.0])  # LPS, 3 mm
    affine[:3, 3] = [24.0, 24.0, -24.0]
    data_dir = results_root / "_fixture_data"
    cases = []
    for i in range(n_children):
        case_id = f"sub-{i + 1:02d}_ses-1"
        radius = 1.5 + 1.5 * i  # small to large lesions
        gt = _ball(shape, (8, 8, 8), radius)
        image = rng.normal(0.5, 0.05, shape).astype(np.float32) + 0.3 * gt
        paths = {"image_path": data_dir / f"{case_id}_T1w.nii.gz", "gt_path": data_dir / f"{case_id}_mask.nii.gz"}
        data_dir.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), paths["image_path"])
        nib.save(nib.Nifti1Image(gt, affine), paths["gt_path"])
        cases.append((case_id, f"{i + 1:02d}", gt, paths, float(gt.sum() * 27 / 1000)))
    for run_id in run_ids:
        spec = grid[run_id]
        run_dir = results_root / profile / run_id
        (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
        rows = []
        eval_sets = (["child_test"] if spec.fine_tuned or spec.train_set == "child5"
                     else ["adult_val", "child_test", "child_all"])
        for eval_set in eval_sets:
            for case_id, subject, gt, paths, volume_ml in cases:
                shift = int(rng.integers(0, 3))
                pred = np.roll(gt, shift, axis=0) if gt.sum() > 30 else np.zeros_like(gt)
                inter = float((pred & gt).sum())
                dice = 2 * inter / float(pred.sum() + gt.sum())
                row = {"case_id": case_id, "subject": subject, "session": "1", "eval_set": eval_set,
                       "method": spec.method, "train_set": spec.train_set, "fine_tuned": spec.fine_tuned,
                       "seed": spec.seed, "profile": profile, "data_source": "synthetic",
                       "lesion_volume_ml": volume_ml, "encoder_pretrained": ""}
                row.update({m: float(rng.uniform(0, 1)) for m in METRIC_COLUMNS})
                row["dice"] = dice
                row["hausdorff_mm"] = float("nan") if pred.sum() == 0 else 3.0 * shift + 1.0
                row["hausdorff_penalised_mm"] = 83.1 if pred.sum() == 0 else row["hausdorff_mm"]
                if eval_set == "child_test":
                    pred_path = run_dir / "predictions" / f"{case_id}_pred.nii.gz"
                    nib.save(nib.Nifti1Image(pred, affine), pred_path)
                    row.update(image_path=str(paths["image_path"]), gt_path=str(paths["gt_path"]),
                               pred_path=str(pred_path.relative_to(run_dir)))
                rows.append(row)
        pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
        (run_dir / "params.yaml").write_text(yaml.safe_dump(spec.params()))
        nb = {"cells": [{"id": "fixture", "cell_type": "markdown", "metadata": {}, "source": f"fixture of {run_id}"}],
              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

        (run_dir / "cell.ipynb").write_text(json.dumps(nb))
    # a failed attempt, as the notebook runner leaves it
    failed = results_root / profile / "resunet_adult-full_seed0" / "FAILED-cell-20260101T000000Z"
    failed.mkdir(parents=True)
    (failed / "cell.FAILED.ipynb").write_text(json.dumps(nb))
    (failed / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")
    return run_ids


def _copy_book_sources(dst: Path) -> Path:
    root = config.PROJECT_ROOT
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(root / name, dst / name)
    shutil.copytree(root / "book", dst / "book", ignore=shutil.ignore_patterns("runs", "_build"))
    return dst


@dataclass(frozen=True)
class BuiltBook:
    """The book built once per module on miniature results (its test and the browser test read it)."""

    html_dir: Path
    results: Path
    written: list[str]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> BuiltBook:
    from lesionlib.reporting.book import build_book
    from lesionlib.reporting.report import report_dir, write_figures, write_tables_report

    tmp_path = tmp_path_factory.mktemp("book")
    results = tmp_path / "results"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LESIONLIB_DATA", str(tmp_path / "no_data"))  # no cohorts: the data page must say so
        written = write_miniature_results(results)
        write_tables_report("quick", results, report_dir("quick", results))
        write_figures("quick", results, report_dir("quick", results))
        src = _copy_book_sources(tmp_path / "src")
        index = build_book("quick", results, source_root=src, strict=True, timeout_s=900)
    assert index.is_file()
    return BuiltBook(src / "_build" / "html", results, written)


@pytest.mark.slow
def test_book_builds_with_tables_and_figures(built_book):
    html_dir, written = built_book.html_dir, built_book.written
    results_html = (html_dir / "book" / "results.html").read_text()
    # the findings first, each with a status read from the data
    assert results_html.index("findings, tested") < results_html.index("Table 1")
    assert results_html.count("<h4>") >= 3
    # Table 1 and Table 2: ours (labelled synthetic + profile) with the paper's value beside each cell
    assert "Table 1 — ours (SYNTHETIC data" in results_html
    assert "Table 2 — ours (SYNTHETIC data" in results_html
    assert "(paper 96.9)" in results_html and "(paper 0.70)" in results_html  # published values
    # missing runs are listed, not hidden
    assert "unet_child5_seed0" in results_html and "not run" in results_html
    # undefined Hausdorff distances counted (the smallest fixture lesion has an empty prediction)
    assert "undef." in results_html
    # the long statistics tables are collapsed
    assert "<details>" in results_html
    # the forest plot and Figures 1 and 2 are rendered images after their headings
    for heading in ("Every condition at a glance", "Figure 1", "Figure 2"):
        start = results_html.index(heading)
        assert re.search(r"<img[^>]+src=\"[^\"]+\.png\"", results_html[start:]), heading
    images = re.findall(r"<img[^>]+src=\"([^\"]+\.png)\"", results_html)
    assert len(images) >= 3
    for src_path in images:
        assert (html_dir / "book" / src_path).resolve().is_file()
    # interactive viewer and provenance
    assert "brainsprite" in results_html.lower() or "iframe" in results_html
    assert "Provenance" in results_html and "sha256" in results_html
    # run index links every run's notebook, including the failed attempt
    runs_html = (html_dir / "book" / "runs.html").read_text()
    for run_id in written:
        assert f"runs/{run_id}/cell.html" in runs_html
        assert (html_dir / "book" / "runs" / run_id / "cell.html").is_file()
    assert "runs/resunet_adult-full_seed0/cell.FAILED.html" in runs_html
    # every run page says how to run the cell again (papermill and lesionlib grid run), failed ones too
    for run_id in [*written, "resunet_adult-full_seed0"]:
        page = next((html_dir / "book" / "runs" / run_id).glob("cell*.html")).read_text()
        page = html.unescape(re.sub(r"<[^>]+>", "", page))  # the commands' text, without the highlighting
        assert "How to run it again" in page and "papermill /tmp/cell.ipynb" in page, run_id
        assert f"lesionlib grid run --profile quick --run-id {run_id}" in page, run_id
    data_html = (html_dir / "book" / "data.html").read_text()
    assert "Not computed yet: the data notebook has not run" in data_html  # said, not failed


def test_notebook_smoke_through_papermill(tmp_path):
    """The tables notebook runs through jupytext -> papermill with tiny parameters and writes its outputs."""
    results = tmp_path / "results"
    write_miniature_results(results, run_ids=["unet_adult-full_seed0", "unet_child5_seed0"])
    run_dir = results / "quick" / "_report"
    out = run_notebook(config.PROJECT_ROOT / "notebooks" / "tables.py", run_dir, stage="tables",
                       parameters=lambda d: {"profile": "quick", "results_root": str(results), "out_dir": str(d)})
    assert out == run_dir / "tables.ipynb" and out.is_file()
    table1 = pd.read_csv(run_dir / "table1.csv")
    assert "U-Net (ATLAS full)" in set(table1["Method"])
    assert (run_dir / "findings.html").is_file() and (run_dir / "findings.csv").is_file()
    assert not list(run_dir.glob(".partial-*"))


@pytest.mark.slow
def test_results_page_in_a_real_browser(built_book, tmp_path):
    """The results page opened from disk as README says, in headless Chromium: no console error, and nilearn's
    viewer draws the prediction over the image (its canvas is not blank)."""
    import io

    import matplotlib.image as mpimg
    from selenium.webdriver.common.by import By

    from browser import chrome, console_errors

    page = built_book.html_dir / "book" / "results.html"
    with chrome() as driver:
        driver.set_page_load_timeout(60)
        driver.get(page.as_uri())
        assert "Table 1" in driver.find_element(By.TAG_NAME, "body").text
        frames = [f for f in driver.find_elements(By.TAG_NAME, "iframe")
                  if "brainsprite" in (f.get_attribute("srcdoc") or "").lower()]
        assert frames, "no viewer on the results page"
        driver.execute_script("arguments[0].scrollIntoView()", frames[0])
        driver.switch_to.frame(frames[0])
        canvas = None
        for _ in range(40):  # brainsprite draws once its sprite image has loaded
            canvases = driver.find_elements(By.TAG_NAME, "canvas")
            if canvases and canvases[0].size["width"] > 0:
                pixels = mpimg.imread(io.BytesIO(canvases[0].screenshot_as_png))
                if pixels[..., :3].std() > 0.02:
                    canvas = pixels
                    break
            time.sleep(0.25)
        driver.switch_to.default_content()
        errors = console_errors(driver)
        driver.save_screenshot(str(tmp_path / "results.png"))
    assert canvas is not None, "the viewer's canvas stayed blank"
    assert canvas.shape[0] > 50 and canvas.shape[1] > 100, canvas.shape
    assert not errors, errors


def test_book_pages_keep_one_copy_of_each_script():
    """sphinx-thebe's inline script reaches every page twice, once with file None and once with '' (a redeclared
    `const` is a SyntaxError in the browser): one copy stays, where it first appeared; distinct scripts all stay."""
    from types import SimpleNamespace as JS

    from lesionlib.reporting.sphinx_pages import unique_scripts

    thebe = {"body": 'const THEBE_JS_URL = "x"'}
    scripts = [JS(filename="a.js", attributes={}), JS(filename=None, attributes=thebe),
               JS(filename="b.js", attributes={"async": "async"}), JS(filename="", attributes=thebe),
               JS(filename="b.js", attributes={}), JS(filename="a.js", attributes={})]
    kept = unique_scripts(scripts)
    assert [(s.filename, s.attributes) for s in kept] == [("a.js", {}), (None, thebe), ("b.js", {"async": "async"}),
                                                          ("b.js", {})]
