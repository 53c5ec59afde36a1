"""``gmim export --format monai-bundle``: a fine-tuned run as a MONAI Bundle, which
``python -m monai.bundle run`` runs without gmim, writing what ``gmim predict`` writes.

- ``configs/metadata.json``: the bundle specification's metadata (versions, task, the network's
  input and output in ``network_data_format``) and gmim's record (``gmim``: version, command, patch
  merging);
- ``configs/inference.json``: the network (``SwinUNETR`` with the run's arguments), the run's
  preprocessing as MONAI transforms (those of :func:`gmim.data.transforms.load_transforms`),
  Gaussian-weighted sliding windows, and the postprocessing of
  :class:`gmim.segmentation.inference.Predictor`: probabilities taken back to the input's grid
  (``Invertd``) before the argmax or threshold, label values as ``gmim predict`` writes them;
- ``models/model.pt``: the network's state_dict (``torch.save``);
- ``scripts/legacy_merging.py``: for weights trained with MONAI < 1.5's patch merging, that merging
  (:mod:`gmim.swin.legacy_merging`, verbatim), which ``network_def`` imports from the bundle's root;
- ``configs/logging.conf`` (MONAI's log lines on the console), ``docs/README.md`` (the model card)
  and ``LICENSE``.

A bundle here is a segmentation model: a pre-training run's encoder has no task to run.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import monai
import numpy
import torch
from monai.utils.enums import IgniteInfo

from gmim import __version__
from gmim.data.transforms import Preprocessing
from gmim.errors import InputError
from gmim.export.card import model_card
from gmim.export.describe import intensity, merging_note
from gmim.export.source import RunModel
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.task import Task
from gmim.swin import legacy_merging
from gmim.swin.merging import LEGACY

__all__ = ["check_bundle", "inference_config", "metadata", "write_bundle"]

#: The schema of MONAI Bundle metadata that ``monai.bundle verify_metadata`` checks against: the one
#: with ``required_packages_version``, the name MONAI ≥ 1.5 reads (it renames the older
#: ``optional_packages_version``, with a warning on every run).
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
ARGUMENTS = "configs/inference.json's `network_def`"
SHIPPED = "scripts/legacy_merging.py"


def check_bundle(model: RunModel) -> None:
    """Refuse what a bundle cannot hold: a model without a task."""
    if not model.segmentation:
        raise InputError(
            f"{model.folder}: a gmim pretrain run (an encoder, no task): a MONAI bundle here is a segmentation model; "
            f"export the encoder with --format huggingface, or fine-tune it first (gmim finetune --pretrained {model.folder})"
        )


def write_bundle(model: RunModel, folder: Path) -> list[str]:
    """Write the bundle of ``model`` into the empty ``folder``; returns the paths written, relative to it."""
    check_bundle(model)
    written = {
        "configs/metadata.json": json.dumps(metadata(model), indent=4),
        "configs/inference.json": json.dumps(inference_config(model), indent=4),
        "configs/logging.conf": LOGGING,
        "docs/README.md": model_card(model, "models/model.pt", ARGUMENTS, SHIPPED, _usage_lines(model)),
        "LICENSE": LICENSE,
    }
    for name, text in written.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "models").mkdir()
    torch.save({name: tensor.detach().to("cpu") for name, tensor in model.tensors.items()}, folder / "models" / "model.pt")
    names = [*written, "models/model.pt"]
    if model.patch_merging == LEGACY:
        (folder / "scripts").mkdir()
        (folder / "scripts" / "__init__.py").write_text('"""Code this bundle imports from its root (``scripts.…``)."""\n')
        shutil.copyfile(inspect.getfile(legacy_merging), folder / SHIPPED)
        names += ["scripts/__init__.py", SHIPPED]
    return sorted(names)


def metadata(model: RunModel) -> dict[str, Any]:
    """configs/metadata.json: the bundle specification's keys, and gmim's record of the run."""
    config = _finetune(model)
    task, preprocessing = config.task, config.preprocessing
    scored = ", ".join(task.scored)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by gmim {__version__} from the {model.weights.name} of a gmim finetune run (step {model.step})"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": _required_packages(),
        "name": f"Swin UNETR {task.name} (gmim)",
        "task": f"Segmentation of {scored} in {preprocessing.modality.upper()} scans (task {task.name}, {task.kind})",
        "description": f"A MONAI Swin UNETR fine-tuned with gmim finetune (task {task.name}); docs/README.md states what its run recorded",
        "authors": "not recorded (a gmim run folder does not say who trained it)",
        "copyright": "not recorded",
        "data_type": "nibabel",
        "image_classes": _image_classes(config),
        "label_classes": _label_classes(task),
        "pred_classes": f"a label map on the input's grid: {_label_classes(task)}",
        "intended_use": "not recorded; not validated for diagnostic use",
        "references": [
            "Qi, Jiang, Shi, Qu, Feng. GMIM: Self-supervised pre-training for 3D medical image segmentation with adaptive "
            "and hierarchical masked image modeling. Computers in Biology and Medicine, 2024. doi:10.1016/j.compbiomed.2024.108547",
            "Hatamizadeh et al. Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI Images. "
            "BrainLes 2021. arXiv:2201.01266",
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if preprocessing.modality == "ct" else "magnitude",
                    "modality": "CT" if preprocessing.modality == "ct" else "MR",
                    "num_channels": config.model.in_channels,
                    "spatial_shape": list(config.model.roi),
                    "dtype": "float32",
                    "value_range": [0, 1] if preprocessing.modality == "ct" else [],
                    "is_patch_data": True,
                    "channel_def": {str(i): name for i, name in enumerate(task.channels or ["image"])},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": task.out_channels,
                    "spatial_shape": list(config.model.roi),
                    "dtype": "float32",
                    "value_range": [],  # logits
                    "is_patch_data": True,
                    "channel_def": {str(i): name for i, name in enumerate(task.output_names)},
                }
            },
        },
    }
    best = model.documents.best
    if best is not None and isinstance(best.get("dice"), dict) and model.weights.name == "best.pt":
        data["eval_metrics"] = {"val_mean_dice": best.get("mean_dice"), **{f"val_dice_{k}": v for k, v in best["dice"].items()}}
    notes = _notes(config, model.patch_merging)
    if notes:
        data["notes"] = notes
    data["gmim"] = model.record()
    return data


def inference_config(model: RunModel) -> dict[str, Any]:
    """configs/inference.json: every image file of ``dataset_dir`` segmented as ``gmim predict`` does."""
    config = _finetune(model)
    legacy = model.patch_merging == LEGACY
    network: dict[str, Any] = {"_target_": "SwinUNETR", **model.arguments}
    if legacy:  # imported when the network is built: by then monai.bundle run has put the bundle's root on sys.path
        network["downsample"] = "$importlib.import_module('scripts.legacy_merging').LegacyPatchMerging"
    amp = "$@device.type == 'cuda'" if config.train.mixed_precision else False
    return {
        "imports": ["$import glob", "$import os", *(["$import importlib"] if legacy else [])],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "dataset_dir": "$@bundle_root + '/images'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii')) + glob.glob(os.path.join(@dataset_dir, '*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_transforms(config.preprocessing)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 2},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(config.model.roi),
            "sw_batch_size": config.inference.sw_batch_size,
            "overlap": config.inference.overlap,
            "mode": "gaussian",
        },
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing_transforms(config.task)},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "@ckpt_path", "load_dict": {"model": "@network"}},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": amp,  # as gmim predict: bf16 where the GPU has it, else fp16; none on the CPU
            "amp_kwargs": {"dtype": "$torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16"},
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "finalize": ["$monai.utils.set_determinism(seed=None)"],  # cuDNN's settings back as they were
    }


def preprocessing_transforms(preprocessing: Preprocessing) -> list[dict[str, Any]]:
    """:func:`gmim.data.transforms.load_transforms` for an image, as bundle config: MONAI's readers
    (gmim's own DICOM series reader and its check for NaN voxels aside)."""
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": preprocessing.orientation, "labels": None},
    ]
    if preprocessing.spacing is not None:
        transforms.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(preprocessing.spacing), "mode": "bilinear"})
    if preprocessing.modality == "ct":
        low, high = preprocessing.window
        transforms.append(
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": low, "a_max": high, "b_min": 0.0, "b_max": 1.0, "clip": True}
        )
    else:
        transforms.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True})
    transforms.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": True})
    return transforms


def postprocessing_transforms(task: Task) -> list[dict[str, Any]]:
    """:class:`gmim.segmentation.inference.Predictor`'s output as bundle config: the probabilities
    back on the input's grid (linear interpolation), then :meth:`Task.to_label_map`, saved as
    ``<image>_seg.nii.gz``."""
    pred = "pred"
    transforms: list[dict[str, Any]] = [
        {"_target_": "Activationsd", "keys": pred, "softmax" if task.kind == "multiclass" else "sigmoid": True},
        {
            "_target_": "Invertd",
            "keys": pred,
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
    ]
    if task.kind == "multiclass":
        transforms.append({"_target_": "AsDiscreted", "keys": pred, "argmax": True})
        values = [task.labels[name] for name in task.output_names]
        if values != list(range(len(values))):
            transforms.append(
                {"_target_": "MapLabelValued", "keys": pred, "orig_labels": list(range(len(values))), "target_labels": values}
            )
    else:
        painted = "torch.zeros_like(x[[0]])"
        for channel, value in task.region_painting():  # later regions over earlier ones
            painted = f"torch.where(x[[{channel}]] > 0.5, {value}, {painted})"
        transforms.append({"_target_": "Lambdad", "keys": pred, "func": f"$lambda x: {painted}"})
    transforms.append(
        {
            "_target_": "SaveImaged",
            "keys": pred,
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "uint8" if max(task.label_values) < 256 else "int16",
            "separate_folder": False,
            "resample": False,
        }
    )
    return transforms


def _finetune(model: RunModel) -> FinetuneConfig:
    check_bundle(model)
    assert isinstance(model.config, FinetuneConfig)
    return model.config


def _required_packages() -> dict[str, str]:
    """The packages a bundle run needs besides MONAI, PyTorch and NumPy, at the versions installed
    here; pytorch-ignite, which gmim does not need, else at the least MONAI takes."""
    versions = {}
    for name in ("nibabel", "pytorch-ignite", "fire"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "pytorch-ignite":
                versions[name] = IgniteInfo.OPT_IMPORT_VERSION
    return versions


def _image_classes(config: FinetuneConfig) -> str:
    preprocessing = config.preprocessing
    channels = ", ".join(config.task.channels) if config.task.channels else "names not recorded"
    spacing = f"resampled to {' x '.join(f'{s:g}' for s in preprocessing.spacing)} mm" if preprocessing.spacing else "at its own spacing"
    return (
        f"{config.model.in_channels} channel(s) ({channels}), {preprocessing.modality.upper()}, reoriented to "
        f"{preprocessing.orientation}, {spacing}; {intensity(config)['description']}"
    )


def _label_classes(task: Task) -> str:
    if task.kind == "multiclass":
        return ", ".join(f"{value}: {name}" for name, value in sorted(task.labels.items(), key=lambda item: item[1]))
    regions = "; ".join(f"{name} = labels {values}" for name, values in task.regions.items())
    painting = ", ".join(f"{task.output_names[channel]} → {value}" for channel, value in task.region_painting())
    return f"overlapping regions ({regions}), painted in this order, later over earlier: {painting}"


def _notes(config: FinetuneConfig, merging: str) -> list[str]:
    notes = []
    note = merging_note(merging, "in network_def", f"{SHIPPED} (network_def imports it)")
    if note is not None:
        notes.append(note)
    if config.inference.flip_tta:
        notes.append("gmim predict averages this run's predictions over the 8 mirrorings (inference.flip_tta); this bundle does not")
    return notes


def _usage_lines(model: RunModel) -> list[str]:
    config = _finetune(model)
    channels = config.model.in_channels or 1
    files = "one file per image" + (f" holding its {channels} channels (4-D, channels last)" if channels > 1 else "")
    output = (
        "the label of the most probable class"
        if config.task.kind == "multiclass"
        else "the regions painted as configs/metadata.json's `label_classes` says"
    )
    return [
        "## Run it with MONAI",
        "",
        'MONAI ≥ 1.5 with pytorch-ignite, nibabel and fire (`pip install "monai[ignite,nibabel,fire]"`); gmim is not needed.',
        "From the bundle's folder:",
        "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root . --dataset_dir IMAGES --output_dir OUT",
        "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/inference.json",
        "```",
        "",
        f"`run` reads every `.nii` and `.nii.gz` file of IMAGES ({files}), prepares it as in training, segments it "
        "with Gaussian-weighted sliding windows of the roi and takes the probabilities back through the resampling and "
        "reorientation (`Invertd`) before the argmax or threshold: `OUT/<image>_seg.nii.gz` is a label map with the "
        f"shape and affine of the input, {output}, as `gmim predict` writes it. `verify_net_in_out` checks the network's "
        "input and output shapes against `configs/metadata.json`.",
        *(
            [
                "",
                "`network_def` imports `scripts.legacy_merging`: `monai.bundle run` puts the bundle's root on the Python path; "
                "for other commands, run them from the bundle's folder.",
            ]
            if model.patch_merging == LEGACY
            else []
        ),
    ]


#: Python's logging.config.fileConfig format, which ``monai.bundle run`` reads from configs/.
LOGGING = """\
[loggers]
keys=root

[handlers]
keys=console

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=console

[handler_console]
class=StreamHandler
level=INFO
formatter=plain
args=(sys.stdout,)

[formatter_plain]
format=%(asctime)s %(levelname)s %(name)s: %(message)s
"""

LICENSE = """\
The configuration files and scripts of this bundle were written by gmim export; gmim is licensed under
the Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0).

The weights (models/model.pt) were trained by gmim's user on their data. The terms under which they
may be used are theirs and their data's to set; the run folder they were exported from does not
record them.
"""
