"""Shipped configuration presets, one folder per command (``finetune/brats2021.yaml`` …)."""
