"""GMIM: adaptive and hierarchical grid masked image modeling for 3D medical image segmentation.

The layers: :mod:`gmim.data` (cases, checks, preprocessing, the prepared store, caching) → :mod:`gmim.pretraining`
(the GMIM method: masking → encoder → model → losses) → :mod:`gmim.engine` (the one training loop)
→ :mod:`gmim.segmentation` (fine-tuning, inference, evaluation downstream) → :mod:`gmim.cli`; the Swin
UNETR encoder both build on (its geometry, patch merging, attention and foreign weights) in :mod:`gmim.swin`.
"""

__version__ = "0.1.0"
