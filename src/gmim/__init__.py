"""GMIM: adaptive and hierarchical grid masked image modeling for 3D medical image segmentation.

The data flow: :mod:`gmim.masking` (where and how much to mask) → :mod:`gmim.encoder` (MONAI's Swin
UNETR encoder with masks inside) → :mod:`gmim.model` (Siamese branches, heads, decoder) →
:mod:`gmim.losses` → the engines and the command line (:mod:`gmim.cli`).
"""

__version__ = "0.1.0"
