"""The training loss: soft Dice + cross-entropy (the one place to change it).

Both models output two-class logits ``(B, 2, X, Y, Z)``; targets are label maps
``(B, 1, X, Y, Z)`` with values {0, 1}. The Dice term is computed over the lesion class only
(background excluded, as in nnU-Net) and pooled over the batch ("batch Dice"), so patches
without lesion do not produce a degenerate per-sample Dice.
"""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import nn

__all__ = ["build_loss"]


def build_loss(lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> nn.Module:
    """Dice + cross-entropy on softmax outputs, weighted ``lambda_dice * Dice + lambda_ce * CE``."""
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
    )
