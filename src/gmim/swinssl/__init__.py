"""Swin UNETR's own self-supervised pre-training (Tang et al., "Self-Supervised Pre-Training of Swin
Transformers for 3D Medical Image Analysis", CVPR 2022): the method behind MONAI's
``model_swinvit.pt``, as a second method of gmim's training loop (docs/swin-ssl.md).

``config`` (its settings) → ``data`` (crops from the prepared store that GMIM's runs share) →
``views`` (two turned and locally dropped views of each crop) → ``model`` (the Swin UNETR encoder and
the rotation, contrastive and reconstruction heads) → ``losses`` → ``method`` (the method of the
loop, and ``pretrain()``). Representation health is GMIM's (:mod:`gmim.pretraining.health`).
"""
