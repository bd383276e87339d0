"""Model registry, forward shapes, and MedicalNet ResNet-10 weight loading."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import resnet10
from monai.networks.nets.resnet import ResNetFeatures
from torch import nn

from lesionlib.models import available_models, build_model, load_medicalnet_weights, register_model
from lesionlib.models.medicalnet import MedicalNetWeightsError


def _medicalnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-10 state dict with MedicalNet's names, filled with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    state = ResNetFeatures("resnet10", pretrained=False).state_dict()
    return {k: (torch.randn(v.shape, generator=gen) if v.is_floating_point() else v) for k, v in state.items()}


def test_registry_lists_both_models_and_rejects_unknown_names():
    assert {"unet", "resunet"} <= set(available_models())
    with pytest.raises(KeyError, match="unknown model 'vnet'"):
        build_model("vnet")
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet")(nn.Identity)


def test_unet_has_five_levels_and_keeps_the_input_size():
    model = build_model("unet", channels=(4, 8, 16, 32, 64), num_res_units=1).eval()
    assert model.size_divisor == 16 and model.encoder_pretrained is False
    assert len(model.encoder_modules()) == 5  # four down blocks + bottom
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 48, 32))
    assert out.shape == (1, 2, 32, 48, 32)
    default = build_model("unet")
    assert default.size_divisor == 16
    assert default.encoder_modules()[0].conv.unit0.conv.out_channels == 16


def test_resunet_forward_shape_and_medicalnet_encoder_names():
    model = build_model("resunet").eval()
    assert model.size_divisor == 32 and model.encoder_pretrained is False
    names = set(model.encoder.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight"} <= names
    assert model.encoder.conv1.weight.shape == (64, 1, 7, 7, 7) and model.encoder.conv1.stride == (2, 2, 2)
    assert model.encoder.layer2[0].downsample[0].bias is None  # shortcut B without bias, as MedicalNet
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 64, 32, 32))
    assert out.shape == (1, 2, 64, 32, 32)


@pytest.mark.parametrize("layout", ["medicalnet", "flat", "flat_module_prefix"])
def test_medicalnet_weights_load_in_every_layout(tmp_path, layout):
    state = _medicalnet_state()
    head = {"conv_seg.0.weight": torch.zeros(32, 512, 3, 3, 3)}
    if layout == "medicalnet":
        payload = {"state_dict": {f"module.{k}": v for k, v in {**state, **head}.items()}}
    elif layout == "flat":
        payload = state
    else:
        payload = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / f"{layout}.pth"
    torch.save(payload, path)
    model = build_model("resunet")
    info = load_medicalnet_weights(model, path)
    assert model.encoder_pretrained is True
    loaded = model.encoder.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert info["ignored_keys"] == (["conv_seg.0.weight"] if layout == "medicalnet" else [])


def test_monai_resnet10_weights_fit_the_encoder(tmp_path):
    """MONAI's resnet10 with MedicalNet settings has the same names and shapes (its fc head is ignored)."""
    net = resnet10(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
                   bias_downsample=False)
    torch.save(net.state_dict(), tmp_path / "monai.pth")
    model = build_model("resunet", encoder_weights=tmp_path / "monai.pth")
    assert model.encoder_pretrained is True
    assert torch.equal(model.encoder.conv1.weight, net.conv1.weight)


def test_wrong_weights_fail_naming_the_file_and_keys(tmp_path):
    state = _medicalnet_state()
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7, 7)  # a 3-channel stem
    del state["layer4.0.conv2.weight"]
    path = tmp_path / "resnet_18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build_model("resunet")
    before = model.encoder.conv1.weight.clone()
    with pytest.raises(MedicalNetWeightsError) as err:
        load_medicalnet_weights(model, path)
    message = str(err.value)
    assert str(path) in message
    assert "conv1.weight (file (64, 3, 7, 7, 7) vs model (64, 1, 7, 7, 7))" in message
    assert "layer4.0.conv2.weight" in message
    assert model.encoder_pretrained is False and torch.equal(model.encoder.conv1.weight, before)


def test_unreadable_or_missing_weights_are_clear_errors(tmp_path):
    model = build_model("resunet")
    with pytest.raises(MedicalNetWeightsError, match="does not exist"):
        load_medicalnet_weights(model, tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MedicalNetWeightsError, match="junk.pth: cannot be read"):
        load_medicalnet_weights(model, junk)
    torch.save({"state_dict": {"module.extra.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(MedicalNetWeightsError, match="extra.weight"):
        load_medicalnet_weights(model, tmp_path / "other.pth")


def test_bare_encoder_accepts_weights(tmp_path):
    state = _medicalnet_state(seed=1)
    torch.save(state, tmp_path / "w.pth")
    encoder = ResNetFeatures("resnet10", pretrained=False)
    load_medicalnet_weights(encoder, tmp_path / "w.pth")
    assert torch.equal(encoder.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_default_weights_come_from_the_manifest_asset(tmp_path, monkeypatch):
    from lesionlib.models.medicalnet import default_weights_path

    monkeypatch.delenv("MEDICALNET_RESNET10", raising=False)
    assert default_weights_path() is None  # not configured: the caller warns and trains from scratch
    torch.save(_medicalnet_state(), tmp_path / "resnet_10.pth")
    monkeypatch.setenv("MEDICALNET_RESNET10", str(tmp_path / "resnet_10.pth"))
    assert default_weights_path() == tmp_path / "resnet_10.pth"
    monkeypatch.setenv("MEDICALNET_RESNET10", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="missing.pth"):  # configured but absent: an error, not a fall-back
        default_weights_path()
