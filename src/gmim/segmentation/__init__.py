"""Segmentation downstream of pre-training: task definitions, fine-tuning, inference and metrics.

- :mod:`.task`: classes (softmax) or overlapping regions (sigmoid), and label-map conversions.
- :mod:`.config`: the fine-tuning configuration (what a run folder's ``config.yaml`` holds).
- :mod:`.network`: the MONAI Swin UNETR of a configuration.
- :mod:`.splits`: k folds, validation sets and label fractions.
- :mod:`.method`: fine-tuning as a method of the training loop, and ``finetune``.
- :mod:`.inference`: sliding-window prediction back in each input's own grid.
- :mod:`.metrics`: Dice and HD95 per class or region.
"""
