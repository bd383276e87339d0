"""Res-U-Net: a MedicalNet-layout ResNet-10 encoder under a U-Net decoder with skip connections.

Built on MONAI's ``FlexibleUNet`` with the ``resnet10`` backbone: the encoder is MONAI's
``ResNetFeatures('resnet10')`` whose parameter names and shapes are those of MedicalNet's
ResNet-10 (``conv1`` 7x7x7 stride 2 with 64 filters, ``bn1``, ``layer1``..``layer4`` with one basic
block each, shortcut type B = 1x1x1 convolution + batch norm without bias). It returns feature
maps at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size; the decoder up-samples through them
with skip connections back to full resolution.

Difference from MedicalNet: MedicalNet's segmentation network keeps ``layer3``/``layer4`` at
stride 1 with dilations 2 and 4; here they have stride 2 so the decoder gets a multi-scale
pyramid. The kernels have the same shapes, so MedicalNet weights load unchanged.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from monai.networks.nets import FlexibleUNet
from torch import nn

from lesionlib.models import register_model

__all__ = ["ResUNet"]

log = logging.getLogger(__name__)


@register_model("resunet")
class ResUNet(FlexibleUNet):
    """U-Net with a ResNet-10 (MedicalNet layout) encoder; input ``(B, 1, X, Y, Z)``, X, Y, Z multiples of 32.

    Parameters
    ----------
    out_channels
        Output classes (2: background, lesion).
    decoder_channels
        Channels of the five decoder stages, coarse to fine.
    upsample
        ``'deconv'`` (transposed convolutions) or ``'nontrainable'`` (interpolation + conv).
    encoder_weights
        Optional local MedicalNet ``.pth`` loaded into the encoder (see
        :func:`lesionlib.models.medicalnet.load_medicalnet_weights`). Never downloaded.
    """

    size_divisor = 32

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        upsample: str = "deconv",
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone="resnet10",
            pretrained=False,  # True would try a model hub: forbidden and unreachable
            decoder_channels=tuple(decoder_channels),
            spatial_dims=3,
            upsample=upsample,
        )
        self.encoder_pretrained = False
        if encoder_weights is not None:
            from lesionlib.models.medicalnet import load_medicalnet_weights

            load_medicalnet_weights(self, encoder_weights)

    def encoder_modules(self) -> list[nn.Module]:
        """The ResNet-10 encoder (one module)."""
        return [self.encoder]
