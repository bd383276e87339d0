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


def test_resunet_has_medicalnets_geometry_and_takes_multiples_of_8():
    model = build_model("resunet", decoder_channels=(16, 8, 8, 4)).eval()
    assert model.size_divisor == 8 and model.encoder_pretrained is False
    enc = model.encoder
    names = set(enc.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight"} <= names
    assert enc.conv1.weight.shape == (64, 1, 7, 7, 7) and enc.conv1.stride == (2, 2, 2)
    assert enc.layer2[0].downsample[0].bias is None  # shortcut B without bias, as MedicalNet
    # MedicalNet's segmentation ResNet: layer3 / layer4 keep stride 1 and dilate by 2 and 4.
    assert enc.layer2[0].conv1.stride == (2, 2, 2)
    assert [enc.layer3[0].conv1.stride, enc.layer3[0].conv1.dilation] == [(1, 1, 1), (2, 2, 2)]
    assert [enc.layer4[0].conv2.stride, enc.layer4[0].conv2.dilation] == [(1, 1, 1), (4, 4, 4)]
    x = torch.zeros(1, 1, 40, 24, 48)  # multiples of 8, not of 16 or 32
    with torch.no_grad():
        features = enc(x)
        out = model(x)
    assert [tuple(f.shape[2:]) for f in features] == [(20, 12, 24), (10, 6, 12)] + [(5, 3, 6)] * 3
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    assert out.shape == (1, 2, 40, 24, 48)
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 1, 36, 24, 48))


def test_encoder_blocks_match_monais_resnet10_in_its_strided_geometry():
    """Our basic blocks are MONAI's: with MONAI's strides and no dilation, the same weights give the same features."""
    from lesionlib.models.resunet import MedicalNetResNet10

    torch.manual_seed(0)
    monai_encoder = ResNetFeatures("resnet10", pretrained=False).eval()
    ours = MedicalNetResNet10(layer_strides=(1, 2, 2, 2), layer_dilations=(1, 1, 1, 1)).eval()
    missing, unexpected = ours.load_state_dict(monai_encoder.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for theirs, mine in zip(monai_encoder(x), ours(x), strict=True):
            assert theirs.shape == mine.shape
            torch.testing.assert_close(mine, theirs)


def test_narrow_encoder_is_a_setting_and_refuses_medicalnet_weights(tmp_path):
    model = build_model("resunet", encoder_widths=(32, 32, 64, 64, 64), decoder_channels=(16, 8, 8, 4))
    assert [model.encoder.layer3[0].conv1.out_channels, model.encoder.layer4[0].conv2.out_channels] == [64, 64]
    torch.save({"state_dict": {f"module.{k}": v for k, v in _medicalnet_state().items()}}, tmp_path / "r10.pth")
    with pytest.raises(MedicalNetWeightsError, match=r"r10\.pth.*shape mismatch"):
        load_medicalnet_weights(model, tmp_path / "r10.pth")
    with pytest.raises(ValueError, match="5 positive channel counts"):
        build_model("resunet", encoder_widths=(32, 32, 64, 64))


def test_medicalnet_release_file_loads_every_encoder_tensor_and_a_renamed_key_fails(tmp_path):
    from lesionlib.rehearsal import write_medicalnet_release

    path = write_medicalnet_release(tmp_path / "resnet_10.pth")
    release = torch.load(path, weights_only=True)["state_dict"]
    encoder_keys = [k for k in release if not k.startswith("module.conv_seg.")]
    # conv1 + bn1 (4) + layer1 (2 convs, 2 batch norms: 10) + layer2..4 (10 + shortcut conv and bn: 15 each)
    assert len(encoder_keys) == 60 and all(k.startswith("module.") for k in release)
    model = build_model("resunet", decoder_channels=(16, 8, 8, 4))
    info = load_medicalnet_weights(model, path)
    assert info["n_tensors"] == 60 and model.encoder_pretrained is True
    loaded = model.encoder.state_dict()
    for key in encoder_keys:
        assert torch.equal(loaded[key[len("module."):]], release[key]), key
    renamed = dict(release)
    renamed["module.layer3.0.conv_a.weight"] = renamed.pop("module.layer3.0.conv1.weight")
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    fresh = build_model("resunet", decoder_channels=(16, 8, 8, 4))
    with pytest.raises(MedicalNetWeightsError, match=r"renamed\.pth.*layer3\.0\.conv1\.weight.*layer3\.0\.conv_a\.weight"):
        load_medicalnet_weights(fresh, tmp_path / "renamed.pth")
    assert fresh.encoder_pretrained is False


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
