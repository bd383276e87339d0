"""MedicalNet's segmentation ResNet-10 in numbers (torch-free, so that profiles can be checked without torch).

Tencent/MedicalNet ``models/resnet.py`` (Chen et al. 2019, *Med3D*): ``conv1`` 7x7x7 stride 2 and a 3x3x3
max-pool of stride 2, then four layers of one basic block each. The network in
:mod:`lesionlib.models.resunet` is built from these numbers.
"""

from __future__ import annotations

MEDICALNET_WIDTHS: tuple[int, int, int, int, int] = (64, 64, 128, 256, 512)
"""Channels of the stem (``conv1``) and of ``layer1``..``layer4``."""

MEDICALNET_LAYER_STRIDES: tuple[int, int, int, int] = (1, 2, 1, 1)
"""Strides of ``layer1``..``layer4`` (output stride 8 with the stem's 2 and the max-pool's 2)."""

MEDICALNET_LAYER_DILATIONS: tuple[int, int, int, int] = (1, 1, 2, 4)
"""Dilations of ``layer1``..``layer4``."""
