"""The data manifest: contents, root/asset resolution precedence, checksums, clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from lesionlib import config
from lesionlib.data import manifest as mf
from lesionlib.io import DataValidationError

ENV_VARS = ("ATLAS_V2_ROOT", "CHILD_BIDS_ROOT", "MEDICALNET_RESNET10", "LESIONLIB_CEREBELLUM_ATLAS",
            "LESIONLIB_MANIFEST", "MY_ROOT", "MY_ASSET")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, isolated_roots: dict[str, Path]) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def write_manifest(path: Path, datasets: dict | None = None, assets: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "datasets": datasets or {}, "assets": assets or {}}))
    return path


def dataset_entry(**overrides) -> dict:
    entry = {"kind": "real", "domain": "adult", "layout": "atlas", "env": "MY_ROOT",
             "default_root": "{data_root}/mine/{profile}", "expected_cases": 3,
             "source": "from a colleague", "licence": "CC0"}
    entry.update(overrides)
    return entry


# ---------------------------------------------------------------- the shipped manifest

def test_shipped_manifest_names_every_dataset_and_asset_with_source_and_licence():
    m = mf.load_manifest()
    assert set(m.datasets) == {"synthetic_adult", "synthetic_child", "atlas_v2", "child_cohort"}
    assert {"medicalnet_resnet10", "cerebellum_atlas"} <= set(m.assets)
    for spec in [*m.datasets.values(), *m.assets.values()]:
        assert spec.source and spec.licence, spec.name
    atlas = m.datasets["atlas_v2"]
    assert (atlas.env, atlas.layout, atlas.domain, atlas.kind, atlas.expected_cases) == (
        "ATLAS_V2_ROOT", "atlas", "adult", "real", 655)
    child = m.datasets["child_cohort"]
    assert (child.env, child.layout, child.domain, child.kind) == ("CHILD_BIDS_ROOT", "child_bids", "child", "real")
    assert m.datasets["synthetic_adult"].layout == "atlas"
    assert m.datasets["synthetic_child"].layout == "child_bids"
    weights = m.assets["medicalnet_resnet10"]
    assert weights.env == "MEDICALNET_RESNET10" and "MIT" in weights.licence and "MedicalNet" in weights.source
    assert m.assets["cerebellum_atlas"].env == "LESIONLIB_CEREBELLUM_ATLAS"


@pytest.mark.parametrize("profile", ["quick", "gpu", "paper"])
def test_synthetic_roots_match_config(profile: str):
    roots = config.synthetic_roots(profile)
    assert mf.dataset_root("synthetic_adult", profile=profile) == roots["adult"]
    assert mf.dataset_root("synthetic_child", profile=profile) == roots["child"]


def test_synthetic_root_follows_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LESIONLIB_DATA", str(tmp_path / "elsewhere"))
    assert mf.dataset_root("synthetic_child", profile="gpu") == tmp_path / "elsewhere" / "synthetic" / "gpu" / "child"


def test_data_source_column():
    assert mf.data_source("synthetic_adult") == "synthetic"
    assert mf.data_source("atlas_v2") == "real"


# ---------------------------------------------------------------- dataset roots

def test_real_dataset_without_env_names_the_variable():
    with pytest.raises(mf.ManifestError, match="ATLAS_V2_ROOT") as info:
        mf.dataset_root("atlas_v2")
    assert "--root" in str(info.value)
    with pytest.raises(mf.ManifestError, match="CHILD_BIDS_ROOT"):
        mf.dataset_root("child_cohort")


def test_env_var_then_override(monkeypatch, tmp_path):
    monkeypatch.setenv("ATLAS_V2_ROOT", str(tmp_path / "from_env"))
    assert mf.dataset_root("atlas_v2") == tmp_path / "from_env"
    assert mf.dataset_root("atlas_v2", override=tmp_path / "explicit") == tmp_path / "explicit"


def test_empty_env_var_counts_as_unset(monkeypatch):
    monkeypatch.setenv("ATLAS_V2_ROOT", "  ")
    with pytest.raises(mf.ManifestError, match="ATLAS_V2_ROOT"):
        mf.dataset_root("atlas_v2")


def test_precedence_override_env_default(monkeypatch, tmp_path):
    path = write_manifest(tmp_path / "m.yaml", datasets={"mine": dataset_entry()})
    monkeypatch.setenv("LESIONLIB_DATA", str(tmp_path / "data"))
    assert mf.dataset_root("mine", profile="paper", manifest=path) == tmp_path / "data" / "mine" / "paper"
    monkeypatch.setenv("MY_ROOT", str(tmp_path / "env"))
    assert mf.dataset_root("mine", profile="paper", manifest=path) == tmp_path / "env"
    assert mf.dataset_root("mine", override=str(tmp_path / "cli"), manifest=path) == tmp_path / "cli"


def test_manifest_from_environment_variable(monkeypatch, tmp_path):
    path = write_manifest(tmp_path / "m.yaml", datasets={"mine": dataset_entry(env=None)})
    monkeypatch.setenv("LESIONLIB_MANIFEST", str(path))
    assert mf.manifest_file() == path
    assert set(mf.load_manifest().datasets) == {"mine"}


def test_unknown_names_list_the_known_ones():
    with pytest.raises(mf.ManifestError, match=r"unknown dataset 'atlas_v3'.*atlas_v2"):
        mf.dataset_root("atlas_v3")
    with pytest.raises(mf.ManifestError, match="that is an asset"):
        mf.dataset_root("medicalnet_resnet10")
    with pytest.raises(mf.ManifestError, match=r"unknown asset 'resnet50'.*medicalnet_resnet10"):
        mf.asset_path("resnet50")


# ---------------------------------------------------------------- malformed manifests

@pytest.mark.parametrize("entry, message", [
    (dataset_entry(layout="nifti_folder"), r"datasets\.bad\.layout must be one of"),
    (dataset_entry(domain="elderly"), r"datasets\.bad\.domain must be one of"),
    (dataset_entry(kind="downloaded"), r"datasets\.bad\.kind must be one of"),
    (dataset_entry(env=None, default_root=None), r"needs an 'env' variable or a 'default_root'"),
    (dataset_entry(default_root="{home}/x"), r"unknown template field\(s\) \['home'\]"),
    (dataset_entry(expected_cases=-1), r"expected_cases must be a positive integer"),
])
def test_malformed_dataset_entries(tmp_path, entry, message):
    path = write_manifest(tmp_path / "m.yaml", datasets={"bad": entry})
    with pytest.raises(mf.ManifestError, match=message) as info:
        mf.load_manifest(path)
    assert str(path) in str(info.value)


def test_malformed_sha256_and_yaml(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", assets={"w": {"env": "MY_ASSET", "sha256": "abc123"}})
    with pytest.raises(mf.ManifestError, match=r"assets\.w\.sha256 must be 64 hexadecimal digits"):
        mf.load_manifest(path)
    (tmp_path / "broken.yaml").write_text("datasets: [unclosed\n")
    with pytest.raises(mf.ManifestError, match="not valid YAML"):
        mf.load_manifest(tmp_path / "broken.yaml")
    with pytest.raises(mf.ManifestError, match="not found"):
        mf.load_manifest(tmp_path / "absent.yaml")


def test_edited_manifest_is_reread(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", datasets={"one": dataset_entry()})
    assert set(mf.load_manifest(path).datasets) == {"one"}
    write_manifest(path, datasets={"one": dataset_entry(), "two": dataset_entry(domain="child")})
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert set(mf.load_manifest(path).datasets) == {"one", "two"}


# ---------------------------------------------------------------- assets

@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "resnet_10.pth"
    path.write_bytes(b"not really a state dict, but bytes with a checksum")
    return path


def asset_manifest(tmp_path: Path, sha256: str | None, required: bool = False) -> Path:
    return write_manifest(tmp_path / "assets.yaml", assets={"w": {
        "env": "MY_ASSET", "default_path": None, "sha256": sha256, "required": required,
        "source": "by hand", "licence": "MIT"}})


def test_unconfigured_optional_asset_is_none():
    assert mf.asset_path("medicalnet_resnet10") is None
    assert mf.asset_path("cerebellum_atlas") is None


def test_required_unconfigured_asset_names_the_variable(tmp_path):
    path = asset_manifest(tmp_path, None, required=True)
    with pytest.raises(mf.ManifestError, match="MY_ASSET"):
        mf.asset_path("w", manifest=path)


def test_asset_from_env_and_override(monkeypatch, tmp_path, weights):
    monkeypatch.setenv("MEDICALNET_RESNET10", str(weights))
    assert mf.asset_path("medicalnet_resnet10") == weights
    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    assert mf.asset_path("medicalnet_resnet10", override=other) == other


def test_configured_asset_that_does_not_exist_is_an_error(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "resnet_10.pth"
    monkeypatch.setenv("MEDICALNET_RESNET10", str(missing))
    with pytest.raises(DataValidationError, match="does not exist") as info:
        mf.asset_path("medicalnet_resnet10")
    assert info.value.path == missing and "MEDICALNET_RESNET10" in str(info.value)


def test_asset_sha256_verified(monkeypatch, tmp_path, weights):
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setenv("MY_ASSET", str(weights))
    assert mf.asset_path("w", manifest=asset_manifest(tmp_path, good)) == weights
    assert mf.asset_path("w", manifest=asset_manifest(tmp_path, good.upper())) == weights  # case-insensitive

    wrong = "0" * 64
    path = asset_manifest(tmp_path, wrong)
    with pytest.raises(DataValidationError, match=f"sha256 mismatch: expected {wrong}, found {good}") as info:
        mf.asset_path("w", manifest=path)
    assert info.value.path == weights
    assert mf.asset_path("w", manifest=path, verify=False) == weights


def test_manifest_sha256_is_the_file_digest(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", datasets={"one": dataset_entry()})
    assert mf.manifest_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    before = mf.manifest_sha256(path)
    path.write_text(path.read_text() + "# edited\n")
    assert mf.manifest_sha256(path) != before
    shipped = config.PROJECT_ROOT / "data_manifest.yaml"
    assert mf.manifest_sha256() == hashlib.sha256(shipped.read_bytes()).hexdigest()
