"""Res-U-Net: MedicalNet's segmentation ResNet-10 as encoder, under a U-Net decoder with skip connections.

The encoder is built as MedicalNet builds it for segmentation (Tencent/MedicalNet ``models/resnet.py``,
Chen et al. 2019, *Med3D*), so that its published weights meet the geometry they were trained in:

=========  ==========================  ======  ========  =========  ================
stage      layers                      stride  dilation  channels   output (of input)
=========  ==========================  ======  ========  =========  ================
stem       ``conv1`` 7x7x7, ``bn1``    2       1         64         1/2
pool       ``maxpool`` 3x3x3           2       --        64         1/4
layer1     one basic block             1       1         64         1/4
layer2     one basic block             2       1         128        1/8
layer3     one basic block             1       2         256        1/8
layer4     one basic block             1       4         512        1/8
=========  ==========================  ======  ========  =========  ================

A basic block is two 3x3x3 convolutions with batch norm; its shortcut is MedicalNet's type B (a 1x1x1
convolution *without bias* and batch norm) wherever the shape changes. The parameter names are
MedicalNet's (``conv1.weight``, ``layer3.0.downsample.0.weight``...), so its release files load unchanged
(:func:`lesionlib.models.medicalnet.load_medicalnet_weights`).

The decoder (MONAI's DynUNet blocks: two 3x3x3 convolutions, instance norm, leaky ReLU; transposed
convolutions to up-sample) starts at 1/8 from ``layer4`` concatenated with ``layer2``, and goes up
through skips at 1/4 (``layer1``), 1/2 (the stem) and full resolution (the input image itself).
Output stride 8: input sizes must be multiples of 8 (:attr:`ResUNet.size_divisor`).

``encoder_widths`` may narrow ``layer3``/``layer4`` (for CPU profiles without MedicalNet's weights:
``layer4`` at 512 channels is over 60 % of the encoder's arithmetic); MedicalNet's weights only fit the
default widths, and loading them into another width fails naming every mismatched tensor.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, get_conv_layer
from torch import nn

from lesionlib.medicalnet_geometry import MEDICALNET_LAYER_DILATIONS, MEDICALNET_LAYER_STRIDES, MEDICALNET_WIDTHS
from lesionlib.models import register_model

__all__ = ["ResUNet", "MedicalNetResNet10", "MEDICALNET_WIDTHS"]

log = logging.getLogger(__name__)



class _BasicBlock(nn.Module):
    """MedicalNet's ``BasicBlock``: conv-bn-relu-conv-bn plus the (type B) shortcut, then relu."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, channels, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv3d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class MedicalNetResNet10(nn.Module):
    """MedicalNet's segmentation ResNet-10 without its head (see the module docstring for the geometry).

    Parameters
    ----------
    in_channels
        Input channels (MedicalNet: 1, a T1w or CT volume).
    widths
        Channels of stem, layer1, layer2, layer3, layer4 (MedicalNet's: :data:`MEDICALNET_WIDTHS`).
    layer_strides, layer_dilations
        Stride and dilation of layer1..layer4 (MedicalNet's: (1, 2, 1, 1) and (1, 1, 2, 4)). MONAI's
        ``ResNetFeatures('resnet10')`` is (1, 2, 2, 2) and (1, 1, 1, 1): the tests compare the two.

    ``forward(x)`` with ``x`` of shape ``(B, in_channels, X, Y, Z)`` returns the five feature maps
    ``[stem, layer1, layer2, layer3, layer4]``; with MedicalNet's geometry at 1/2, 1/4, 1/8, 1/8 and 1/8
    of the input size.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = MEDICALNET_WIDTHS,
                 layer_strides: Sequence[int] = MEDICALNET_LAYER_STRIDES,
                 layer_dilations: Sequence[int] = MEDICALNET_LAYER_DILATIONS
                 ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"encoder widths must be 5 positive channel counts (stem, layer1..layer4), got {widths}")
        if len(layer_strides) != 4 or len(layer_dilations) != 4:
            raise ValueError("layer_strides and layer_dilations need one entry per layer (4)")
        self.widths = widths
        self.conv1 = nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        blocks = []
        for i, (stride, dilation) in enumerate(zip(layer_strides, layer_dilations)):
            blocks.append(nn.Sequential(_BasicBlock(widths[i], widths[i + 1], stride=int(stride),
                                                    dilation=int(dilation))))
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]


class _UpBlock(nn.Module):
    """Transposed convolution (x2), concatenation with a skip of any width, then a DynUNet basic block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.up = get_conv_layer(3, in_channels, out_channels, kernel_size=2, stride=2, conv_only=True,
                                 is_transposed=True)
        self.block = UnetBasicBlock(3, out_channels + skip_channels, out_channels, kernel_size=3, stride=1,
                                    norm_name=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


@register_model("resunet")
class ResUNet(nn.Module):
    """U-Net decoder on MedicalNet's ResNet-10; input ``(B, 1, X, Y, Z)`` with X, Y, Z multiples of 8.

    Output: logits ``(B, out_channels, X, Y, Z)``.

    Parameters
    ----------
    out_channels
        Output classes (2: background, lesion).
    decoder_channels
        Channels of the decoder at 1/8, 1/4, 1/2 and full resolution (the paper-size default is
        (256, 128, 64, 32); the CPU profiles use fewer).
    encoder_widths
        Channels of the encoder's stem and layer1..layer4; MedicalNet's weights need the default
        :data:`MEDICALNET_WIDTHS`.
    decoder_norm
        MONAI name of the decoder's normalisation (instance norm: batch size 2; it makes the inference
        window matter, so segment with windows of the training patch size).
    encoder_weights
        Optional local MedicalNet ``.pth`` loaded into the encoder (see
        :func:`lesionlib.models.medicalnet.load_medicalnet_weights`). Never downloaded.
    """

    size_divisor = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
        encoder_widths: Sequence[int] = MEDICALNET_WIDTHS,
        decoder_norm: str = "instance",
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != 4 or min(decoder_channels) < 1:
            raise ValueError("decoder_channels needs 4 positive channel counts (at 1/8, 1/4, 1/2 and full "
                             f"resolution), got {decoder_channels}")
        self.encoder = MedicalNetResNet10(in_channels, encoder_widths)
        w = self.encoder.widths
        c8, c4, c2, c1 = decoder_channels
        self.bottleneck = UnetBasicBlock(3, w[2] + w[4], c8, kernel_size=3, stride=1, norm_name=decoder_norm)
        self.up4 = _UpBlock(c8, w[1], c4, decoder_norm)
        self.up2 = _UpBlock(c4, w[0], c2, decoder_norm)
        self.up1 = _UpBlock(c2, in_channels, c1, decoder_norm)
        self.head = UnetOutBlock(3, c1, out_channels)
        self.encoder_pretrained = False
        if encoder_weights is not None:
            from lesionlib.models.medicalnet import load_medicalnet_weights

            load_medicalnet_weights(self, encoder_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(int(s) % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"Res-U-Net input size {tuple(x.shape[2:])} must be a multiple of {self.size_divisor}")
        stem, f1, f2, _f3, f4 = self.encoder(x)
        y = self.bottleneck(torch.cat([f4, f2], dim=1))
        y = self.up4(y, f1)
        y = self.up2(y, stem)
        y = self.up1(y, x)
        return self.head(y)

    def encoder_modules(self) -> list[nn.Module]:
        """The ResNet-10 encoder (one module)."""
        return [self.encoder]
