"""The paper's 3D U-Net: MONAI ``UNet`` with five resolution levels and residual units."""

from __future__ import annotations

from typing import Sequence

from monai.networks.nets import UNet
from torch import nn

from lesionlib.models import register_model

__all__ = ["LesionUNet"]


@register_model("unet")
class LesionUNet(UNet):
    """MONAI 3D U-Net, 5 levels (4 down-samplings by 2), 2 output classes.

    Input ``(B, in_channels, X, Y, Z)`` with X, Y, Z multiples of :attr:`size_divisor`
    (product of ``strides``); output logits ``(B, 2, X, Y, Z)``.

    Parameters
    ----------
    channels
        Feature maps per level, top to bottom; the paper-size default is (16, 32, 64, 128, 256).
    strides
        Down-sampling factor between consecutive levels (``len(channels) - 1`` entries).
    num_res_units
        Residual units per block.
    norm
        Normalisation layer (MONAI name); instance norm by default (batch size 2).
    dropout
        Dropout probability (0 keeps training deterministic given the seed).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        if len(strides) != len(channels) - 1:
            raise ValueError(f"need len(strides) == len(channels) - 1, got {strides} for {channels}")
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        self.encoder_pretrained = False
        divisor = 1
        for s in strides:
            divisor *= int(s)
        self.size_divisor = divisor

    def encoder_modules(self) -> list[nn.Module]:
        """The down path: each level's down block plus the bottom block.

        MONAI nests the U-Net as ``Sequential(down, SkipConnection(Sequential(...)), up)``;
        this walks the nesting and collects the ``down`` blocks and the innermost one.
        """
        modules: list[nn.Module] = []
        level = self.model
        while isinstance(level, nn.Sequential) and len(level) == 3:
            modules.append(level[0])
            level = level[1].submodule
        modules.append(level)  # bottom block
        return modules
