"""Prediction with a fine-tuned run: preprocessing as in training, Gaussian-weighted sliding windows,
optional mirroring test-time augmentation, and the result back in the input file's own grid.

Reorientation and resampling are undone with MONAI's ``Invertd`` on the probabilities (linear
interpolation), before the argmax or threshold, so the label map has the input's shape and affine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Invertd

from gmim.atomic import atomic_path
from gmim.config import Override, load_config
from gmim.data.caching import describe_load_error
from gmim.data.checks import check_cases, read_grid
from gmim.data.sources import Case
from gmim.data.transforms import load_transforms
from gmim.engine.precision import MixedPrecision
from gmim.errors import InputError
from gmim.methods import run_method
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.network import build_network, load_run_weights

__all__ = ["Predictor", "find_run", "sliding_window", "sliding_window_count"]


def sliding_window(network: torch.nn.Module, image: torch.Tensor, config: FinetuneConfig, precision: MixedPrecision) -> torch.Tensor:
    """Logits of a whole volume (B, C, ...) from Gaussian-weighted overlapping ``roi`` windows."""
    with torch.no_grad(), precision.autocast():
        logits = sliding_window_inference(
            image, config.model.roi, config.inference.sw_batch_size, network, overlap=config.inference.overlap, mode="gaussian"
        )
    assert isinstance(logits, torch.Tensor), "the network returns one tensor, so the windows merge into one"
    return logits.float()


def sliding_window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows :func:`sliding_window` runs over a volume of ``shape`` (MONAI's scan: a
    stride of ``roi·(1 − overlap)``, the last window flush with the end)."""
    count = 1
    for size, window in zip(shape, roi):
        stride = max(1, int(window * (1 - overlap)))
        count *= 1 if size <= window else math.ceil((size - window) / stride) + 1
    return count


def find_run(model: Path) -> tuple[Path, Path]:
    """(config.yaml, weights) of a run folder (``best.pt``, else ``last.pt``), of an export of one
    (``gmim export``: ``model.safetensors``), or of a weights file in either."""
    if model.is_dir():
        weights = next((model / n for n in ("best.pt", "last.pt", "model.safetensors") if (model / n).is_file()), None)
        if weights is None:
            raise InputError(
                f"{model}: no best.pt or last.pt in this folder, nor a model.safetensors (a gmim finetune --out folder or its export?)"
            )
        folder = model
    elif model.is_file():
        weights, folder = model, model.parent
    else:
        raise InputError(f"{model}: no such model folder or file")
    config = folder / "config.yaml"
    if not config.is_file():
        raise InputError(f"{config}: not found; a model needs the config.yaml of its run beside it")
    method = run_method(config)
    if method is not None and method.produces != "segmentation":
        what = "an exported encoder" if weights.suffix == ".safetensors" else f"a {method.title} run"
        raise InputError(
            f"{model}: {what} ({method.produces}), not a segmentation model: predict needs a fine-tuned model; "
            f"fine-tune one from it: gmim finetune DATA --pretrained {folder} --out RUN"
        )
    return config, weights


class Predictor:
    """A fine-tuned network with its run's task, preprocessing and inference settings."""

    def __init__(self, model: Path, device: torch.device, flip_tta: bool | None = None, overlap: float | None = None) -> None:
        config_path, weights = find_run(Path(model))
        options = [Override(f"inference.flip_tta={str(flip_tta).lower()}", "--tta")] if flip_tta is not None else []
        if overlap is not None:
            options.append(Override(f"inference.overlap={overlap}", f"--overlap {overlap}"))
        self.config = load_config(FinetuneConfig, config_path, options)
        self.task = self.config.task
        self.device = device
        self.network = build_network(self.config.model, self.task.out_channels)
        load_run_weights(self.network, weights)
        self.network.to(device).eval()
        self.precision = MixedPrecision(device, self.config.train.mixed_precision)
        self.transform = Compose(load_transforms(self.config.preprocessing, label=False))
        self.invert = Invertd("pred", transform=self.transform, orig_keys="image", nearest_interp=False)

    def check(self, case: Case) -> None:
        """Raise InputError when ``case`` cannot be predicted (unreadable, off-grid, wrong channels)."""
        expected = self.config.model.in_channels
        if len(case.images) != expected:
            names = ", ".join(self.task.channels)
            raise InputError(f"{case.images[0]}: case {case.id} has {len(case.images)} channel(s), the model takes {expected} ({names})")
        check_cases([case], workers=1)

    def probabilities(self, case: Case) -> torch.Tensor:
        """Class or region probabilities (C, ...) on the grid of the case's first channel file."""
        try:
            data = self.transform(case.as_dict())
        except Exception as error:  # a reader raises what it raises; MONAI wraps it in RuntimeError
            raise describe_load_error(case, error) from error
        image = data["image"].as_tensor()[None].to(self.device)  # no MetaTensor bookkeeping in the network
        axes = [(), *(c for n in (1, 2, 3) for c in itertools.combinations((2, 3, 4), n))] if self.config.inference.flip_tta else [()]
        total = torch.zeros((), device=self.device)
        for flip in axes:
            flipped = image.flip(flip) if flip else image
            probabilities = self.task.probabilities(sliding_window(self.network, flipped, self.config, self.precision))
            total = total + (probabilities.flip(flip) if flip else probabilities)
        return self.to_input_grid(data, (total / len(axes))[0].cpu())

    def to_input_grid(self, data: dict, values: torch.Tensor) -> torch.Tensor:
        """``values`` (C, ...) on the preprocessed grid of ``data["image"]`` → on the input file's grid,
        undoing resampling and reorientation with linear interpolation."""
        data = {**data, "pred": MetaTensor(values, meta=data["image"].meta, applied_operations=data["image"].applied_operations)}
        return self.invert(data)["pred"].as_tensor()

    def predict(self, case: Case, out: Path, save_probabilities: bool = False, dicom_seg: bool = False) -> Path:
        """Write ``out/<id>.nii.gz`` (a label map; with ``save_probabilities`` also
        ``out/probabilities/<id>.nii.gz``) in the grid of the case's first channel file; with
        ``dicom_seg`` also ``out/<id>_seg.dcm``, a DICOM SEG over that channel's DICOM series, one
        segment per class or region of the task."""
        self.check(case)
        probabilities = self.probabilities(case)
        shape, affine = read_grid(case.images[0])
        if tuple(probabilities.shape[1:]) != shape:
            raise RuntimeError(f"{case.id}: inverted prediction has shape {tuple(probabilities.shape[1:])}, input {shape}")
        labels = self.task.to_label_map(probabilities).numpy()
        dtype = np.uint8 if max(self.task.label_values) < 256 else np.int16
        target = out / f"{case.id}.nii.gz"
        _save(labels.astype(dtype), affine, case.images[0], target)
        if save_probabilities:
            _save(
                np.moveaxis(probabilities.numpy(), 0, -1).astype(np.float32),
                affine,
                case.images[0],
                out / "probabilities" / f"{case.id}.nii.gz",
            )
        if dicom_seg:
            from gmim.segmentation.dicom_seg import write_segmentation

            masks = self.task.masks(torch.as_tensor(labels)).numpy()
            write_segmentation(masks, list(self.task.scored), case.images[0], out / f"{case.id}_seg.dcm", f"gmim {self.task.name}")
        return target


def _save(array: np.ndarray, affine: np.ndarray, like: Path, path: Path) -> None:
    """A NIfTI with ``affine``; the input's header (orientation codes) is kept when it is a NIfTI."""
    header = None
    if like.name.lower().endswith((".nii", ".nii.gz")):
        header = nib.load(like).header.copy()
    image = nib.Nifti1Image(array, affine, header=header)
    image.set_data_dtype(array.dtype)
    image.header.set_slope_inter(1, 0)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
