"""The folder nnU-Net searches for lesionlib's trainers (``nnUNet_extTrainer``).

An ordinary subpackage, so that it ships with lesionlib; nnU-Net scans the folder's modules
(pkgutil skips this ``__init__``) and imports ``lesionlib_short_trainers`` from it.
"""
