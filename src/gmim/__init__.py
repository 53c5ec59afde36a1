"""GMIM: adaptive and hierarchical grid masked image modeling for 3D medical image segmentation.

The data flow: :mod:`gmim.pretraining.masking` (where and how much to mask) → :mod:`gmim.pretraining.encoder` (MONAI's Swin
UNETR encoder with masks inside) → :mod:`gmim.pretraining.model` (Siamese branches, heads, decoder) →
:mod:`gmim.pretraining.losses` → the engines and the command line (:mod:`gmim.cli`).
"""

__version__ = "0.1.0"
