"""``gmim export --format huggingface`` (the default): a folder in the Hugging Face Hub layout of a
model repository (nothing is uploaded).

- ``model.safetensors``: the weights, as plain tensors (no pickled code): a ``gmim finetune`` run's
  whole MONAI ``SwinUNETR`` state_dict, or a ``gmim pretrain`` run's encoder, the state_dict of
  ``SwinUNETR(...).swinViT`` (bare keys);
- ``config.json``: what to build (``monai.networks.nets.SwinUNETR(**monai_arguments)``) and how
  inputs are prepared (channels, modality, spacing, orientation, intensity), the task's labels, and
  gmim's own record (``gmim.patch_merging``, which :func:`gmim.swin.weights.read_weights` reads back);
- ``config.yaml``: the run's resolved gmim configuration, so that ``gmim predict`` and
  ``gmim finetune --pretrained`` take the folder as they take the run;
- ``legacy_merging.py``: for weights trained with MONAI < 1.5's patch merging, that merging as a
  class MONAI ≥ 1.5 takes (:mod:`gmim.swin.legacy_merging`, verbatim);
- ``README.md``: the model card, with the Hub's front matter.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from gmim.export.card import model_card
from gmim.export.describe import intensity, merging_note
from gmim.export.source import RunModel
from gmim.segmentation.config import FinetuneConfig
from gmim.swin import legacy_merging
from gmim.swin.merging import LEGACY

__all__ = ["model_config", "write_huggingface"]

ARGUMENTS = "config.json's `monai_arguments`"
SHIPPED = "legacy_merging.py"


def write_huggingface(model: RunModel, folder: Path) -> list[str]:
    """Write the export of ``model`` into the empty ``folder``; returns the names of the files written."""
    from safetensors.torch import save_file

    # safetensors refuses tensors that share storage or are not contiguous: each gets memory of its own
    plain = {name: tensor.detach().to("cpu").clone().contiguous() for name, tensor in model.tensors.items()}
    save_file(plain, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(model.folder / "config.yaml", folder / "config.yaml")
    (folder / "config.json").write_text(json.dumps(model_config(model), indent=2))
    written = ["model.safetensors", "config.yaml", "config.json"]
    if model.patch_merging == LEGACY:
        shutil.copyfile(inspect.getfile(legacy_merging), folder / SHIPPED)
        written.append(SHIPPED)
    front = _front_matter(model.segmentation)
    (folder / "README.md").write_text(front + model_card(model, "model.safetensors", ARGUMENTS, SHIPPED, _usage_lines(model)))
    return [*written, "README.md"]


def model_config(model: RunModel) -> dict[str, Any]:
    """config.json: what to build, how inputs are prepared, and gmim's record of the run."""
    config = model.config
    preprocessing = config.preprocessing
    channels = list(config.task.channels) if isinstance(config, FinetuneConfig) and config.task.channels else None
    data: dict[str, Any] = {
        "library_name": "monai",
        "model_type": "swin_unetr",
        "kind": "segmentation" if model.segmentation else "encoder",
        "monai_class": "monai.networks.nets.SwinUNETR",
        "monai_arguments": model.arguments,
        "weights": "model.safetensors",
        "state_dict_of": "SwinUNETR" if model.segmentation else "SwinUNETR.swinViT",
        "input": {
            "channels": channels,
            "modality": preprocessing.modality,
            "spacing": list(preprocessing.spacing) if preprocessing.spacing is not None else None,
            "orientation": preprocessing.orientation,
            "intensity": intensity(config),
        },
        "roi": list(config.model.roi),
    }
    if isinstance(config, FinetuneConfig):
        task = config.task
        data["task"] = {
            "name": task.name,
            "kind": task.kind,
            "labels": dict(task.labels),
            "regions": {name: list(values) for name, values in task.regions.items()},
            "activation": "softmax" if task.kind == "multiclass" else "sigmoid",
            "output_channels": task.output_names,
        }
        data["inference"] = {
            "overlap": config.inference.overlap,
            "sw_batch_size": config.inference.sw_batch_size,
            "flip_tta": config.inference.flip_tta,
            "mode": "gaussian",
        }
    notes = []
    if not model.segmentation:
        notes.append(
            "out_channels 1 is a placeholder: the weights are the encoder (SwinUNETR.swinViT) alone, which out_channels "
            "does not change; build SwinUNETR with your task's out_channels and load them into model.swinViT"
        )
    merging = merging_note(model.patch_merging, "in monai_arguments", f"{SHIPPED}, beside this file")
    if merging is not None:
        notes.append(merging)
    if notes:
        data["notes"] = notes
    data["gmim"] = model.record()
    return data


def _front_matter(segmentation: bool) -> str:
    tags = ["medical-imaging", "3d", "segmentation" if segmentation else "self-supervised", "swin-unetr", "gmim"]
    return "---\nlibrary_name: monai\ntags:\n" + "".join(f"- {tag}\n" for tag in tags) + "---\n"


def _usage_lines(model: RunModel) -> list[str]:
    legacy = model.patch_merging == LEGACY
    build = 'SwinUNETR(**config["monai_arguments"], downsample=LegacyPatchMerging)' if legacy else 'SwinUNETR(**config["monai_arguments"])'
    if model.segmentation:
        load = [f"model = {build}", 'model.load_state_dict(load_file("model.safetensors"))  # strict']
    else:
        load = [
            'config["monai_arguments"]["out_channels"] = 3  # your task\'s classes',
            f"model = {build}",
            'model.swinViT.load_state_dict(load_file("model.safetensors"))  # strict: the whole encoder',
        ]
    lines = [
        "## Load it without gmim",
        "",
        "MONAI and safetensors are all it takes (`pip install monai safetensors`):",
        "",
        "```python",
        "import json",
        "",
        "from monai.networks.nets import SwinUNETR",
        "from safetensors.torch import load_file",
        *(["", "from legacy_merging import LegacyPatchMerging  # beside this card: MONAI < 1.5's patch merging"] if legacy else []),
        "",
        'config = json.load(open("config.json"))',
        *load,
    ]
    if model.segmentation:
        lines += [
            "",
            '# an image prepared as config.json\'s "input" says: (1, channels, D, H, W)',
            "from monai.inferers import sliding_window_inference",
            "",
            "model.eval()",
            'logits = sliding_window_inference(image, config["roi"], config["inference"]["sw_batch_size"], model,',
            '                                  overlap=config["inference"]["overlap"], mode="gaussian")',
        ]
    lines += ["```", ""]
    if not model.segmentation:
        lines += ["`out_channels` 1 in config.json is a placeholder: the encoder does not depend on it.", ""]
    lines += [
        "## With gmim",
        "",
        "```bash",
        "gmim predict MODEL_DIR scans/ --out predictions/   # inputs prepared and outputs put back on each input's grid"
        if model.segmentation
        else "gmim finetune DATA --pretrained MODEL_DIR --out runs/finetuned",
        "```",
        "",
        "`config.yaml` is the run's resolved gmim configuration.",
    ]
    return lines
