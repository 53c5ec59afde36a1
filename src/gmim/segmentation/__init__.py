"""Segmentation downstream of pre-training: task definitions, fine-tuning, inference and metrics.

- :mod:`.task`: classes (softmax) or overlapping regions (sigmoid), and label-map conversions.
- :mod:`.config`: the fine-tuning configuration (what a run folder's ``config.yaml`` holds).
- :mod:`.network`: the MONAI Swin UNETR of a configuration.
- :mod:`.splits`: k folds, validation sets and label fractions.
- :mod:`.train`: the fine-tuning loop.
- :mod:`.inference`: sliding-window prediction back in each input's own grid.
- :mod:`.metrics`: Dice and HD95 per class or region.
"""
