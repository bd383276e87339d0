"""lesionlib — stroke lesion segmentation in adults and children.

A thin library behind the computational paper reproducing Lhermitte et al. (ISBI 2024),
*Validating stroke lesion segmentation methods using MRI in children: transferability of
deep learning models*. Where to find things:

========================  ==========================================================
``lesionlib.io``          NIfTI loading with validation, atomic writes
``lesionlib.bids``        file naming (ATLAS v2.0 layout, child BIDS, derivatives)
``lesionlib.data``        manifest, dataset discovery (``ImageRecord``), validation
``lesionlib.synth``       synthetic ATLAS-like adult and CAP-like child cohorts
``lesionlib.metrics``     Dice, Hausdorff, HD95, ASSD, lesion-wise F1, ...
``lesionlib.models``      model registry (``unet``, ``resunet``) and MedicalNet weights
``lesionlib.losses``      the training loss (Dice + cross-entropy)
``lesionlib.samplers``    ATLAS subset rule, patch sampling, few-shot child splits
``lesionlib.transforms``  preprocessing and augmentation pipelines
``lesionlib.train``       one training loop (checkpointing, resume, fine-tuning)
``lesionlib.predict``     sliding-window inference to NIfTI on the input grid
``lesionlib.nnunet``      nnU-Net v2 bridge (export, plan, train, predict)
``lesionlib.baselines``   LesionGnb (Gaussian naive Bayes) baseline
``lesionlib.register``    SimpleITK registration, session-to-session mask propagation
``lesionlib.reporting``   tables, figures, statistics and provenance for the book
========================  ==========================================================
"""

__version__ = "0.1.0"
