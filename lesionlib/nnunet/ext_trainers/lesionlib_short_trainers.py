"""Entry point for nnU-Net's ``nnUNet_extTrainer`` search (see lesionlib.nnunet.trainers).

nnU-Net imports every module of this folder as a top-level module and asks it for the trainer
class by name; this one answers for every ``nnUNetTrainer_lesionlib_E*_I*_V*`` name by
delegating to :mod:`lesionlib.nnunet.trainers`, where the classes live.
"""

from lesionlib.nnunet.trainers import __getattr__  # noqa: F401  (PEP 562 module hook)
