"""lesionlib — stroke lesion segmentation in adults and children.

A thin library behind the computational paper reproducing Lhermitte et al. (ISBI 2024),
*Validating stroke lesion segmentation methods using MRI in children: transferability of
deep learning models*. Where to find things:

=================================  ==========================================================
``lesionlib.profile``              the typed profiles of ``experiments.yaml`` and a researcher's own (``extends:``)
``lesionlib.rehearsal``            synthetic stand-ins laid out as the real datasets (``make rehearsal``)
``lesionlib.clone``                one clone, one code: the check that this clone's lesionlib is imported
``lesionlib.experiments``          the grid (cells of a profile) and the runner of its notebooks
``lesionlib.cells``                what one cell does: train or fine-tune, then evaluate
``lesionlib.splits``               ``make_splits``: training, validation and test images of every cell
``lesionlib.segmenters``           the methods (U-Net, Res-U-Net, nnU-Net, LesionGnb) behind one contract
``lesionlib.space``                voxel grids: the MNI grid, the template, ``same_grid``
``lesionlib.io``                   NIfTI loading with validation, atomic writes
``lesionlib.bids``                 file naming (ATLAS v2.0 layout, child BIDS, derivatives)
``lesionlib.data``                 manifest, dataset discovery (``ImageRecord``), validation
``lesionlib.synth``                synthetic ATLAS-like adult and CAP-like child cohorts
``lesionlib.metrics``              Dice, Hausdorff, HD95, ASSD, lesion-wise F1, ...
``lesionlib.models``               network registry (``unet``, ``resunet``) and MedicalNet weights
``lesionlib.losses``               the training loss (Dice + cross-entropy)
``lesionlib.training_settings``    optimisation and augmentation settings of the MONAI networks
``lesionlib.samplers``             ATLAS subset rule, patch sampling, few-shot child splits
``lesionlib.transforms``           preprocessing and augmentation pipelines
``lesionlib.train``                the MONAI networks' training loop (checkpointing, resume, fine-tuning)
``lesionlib.predict``              sliding-window inference to NIfTI on the input grid
``lesionlib.nnunet``               nnU-Net v2 bridge (export, plan, preprocess, train, predict)
``lesionlib.procs``                subprocesses that end with the process that started them (no orphans)
``lesionlib.baselines``            LesionGnb (Gaussian naive Bayes) baseline
``lesionlib.register``             SimpleITK registration, session-to-session mask propagation
``lesionlib.reporting``            findings, tables, figures, statistics and provenance for the book
=================================  ==========================================================
"""

__version__ = "0.1.0"

# One clone, one code (lesionlib.clone): stop here, naming both clones, when this copy of lesionlib is not the
# clone the process was started from ($LESIONLIB_CLONE, or the clone holding the current folder).
from lesionlib import clone as _clone  # noqa: E402

_clone.check(__file__)
