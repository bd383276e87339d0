"""Baseline segmentation methods that need no deep learning: LesionGnb (Griffis et al. 2016)."""

from lesionlib.baselines.gnb import LesionGnb

__all__ = ["LesionGnb"]
