"""``gmim export``: a run's model as a folder that the field's tools read without gmim.

The folder follows the Hugging Face Hub layout of a model repository (nothing is uploaded):

- ``model.safetensors``: the weights, as plain tensors (no pickled code): a ``gmim finetune`` run's
  whole MONAI ``SwinUNETR`` state_dict, or a ``gmim pretrain`` run's encoder, the state_dict of
  ``SwinUNETR(...).swinViT`` (bare keys);
- ``config.json``: what to build (``monai.networks.nets.SwinUNETR(**monai_arguments)``) and how
  inputs are prepared (channels, modality, spacing, orientation, intensity), the task's labels, and
  gmim's own record (``gmim.patch_merging``, which :func:`gmim.swin.weights.read_weights` reads back);
- ``config.yaml``: the run's resolved gmim configuration, so that ``gmim predict`` and
  ``gmim finetune --pretrained`` take the folder as they take the run;
- ``README.md``: a model card that states what the run's files record, and "not recorded" elsewhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

from gmim import __version__
from gmim.atomic import atomic_path, write_json
from gmim.config import load_config
from gmim.engine.metrics import read_metrics
from gmim.engine.run_folder import written_by
from gmim.errors import InputError
from gmim.pretraining.config import PretrainConfig
from gmim.segmentation.config import FinetuneConfig
from gmim.swin.merging import MONAI_DOWNSAMPLE
from gmim.weights_only import load_checkpoint

__all__ = ["EXPORT_FILES", "export_run"]

#: What an export folder holds, in the order it is written (the card last: a folder with a card is complete).
EXPORT_FILES = ("model.safetensors", "config.yaml", "config.json", "README.md")
#: Files that mark a folder as a run's: an export into one would overwrite its config.yaml.
_RUN_FILES = ("best.pt", "last.pt", "encoder.pt")


def export_run(run: Path, out: Path) -> Path:
    """Write the export folder of the run folder ``run`` into ``out`` (see the module docstring);
    returns ``out``. Bad input raises :class:`InputError` naming the path."""
    run, out = Path(run), Path(out)
    command, config = _read_config(run)
    _check_out(run, out)
    weights = _weights_path(run, command)
    tensors, step = _read_tensors(weights, command)
    arguments = monai_arguments(config)
    _check_fits(tensors, arguments, command, weights)
    documents = _RunDocuments(run)
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(tensors, out / "model.safetensors")
    with atomic_path(out / "config.yaml") as tmp:
        shutil.copyfile(run / "config.yaml", tmp)
    write_json(out / "config.json", model_config(config, command, arguments, weights.name, step, documents))
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(model_card(config, command, arguments, weights.name, step, documents))
    return out


def _read_config(run: Path) -> tuple[str, FinetuneConfig | PretrainConfig]:
    """The command that made ``run`` and its configuration."""
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder" if not run.exists() else f"{run}: a file, not a run folder")
    path = run / "config.yaml"
    if not path.is_file():
        raise InputError(f"{run}: not a gmim run folder (no config.yaml)")
    command = written_by(path)
    config: FinetuneConfig | PretrainConfig
    if command == "gmim finetune":
        config = load_config(FinetuneConfig, path)
        config.task.require_complete(str(path))  # a resolved run's task has its labels
    elif command == "gmim pretrain":
        config = load_config(PretrainConfig, path)
    else:
        raise InputError(f"{path}: not the config.yaml of a gmim finetune or gmim pretrain run")
    if config.model.in_channels is None:
        raise InputError(f"{path}: model.in_channels is not recorded (not the resolved config.yaml of a run)")
    return command, config


def _weights_path(run: Path, command: str) -> Path:
    """The weights a run's export holds: a fine-tuning's best.pt, else last.pt; a pre-training's encoder.pt."""
    names = ("best.pt", "last.pt") if command == "gmim finetune" else ("encoder.pt",)
    found = next((run / name for name in names if (run / name).is_file()), None)
    if found is None:
        raise InputError(f"{run}: a {command} run without weights (no {' or '.join(names)}); has it saved a checkpoint yet?")
    return found


def _read_tensors(path: Path, command: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """(the state_dict to export, the step it was saved at where the file says)."""
    checkpoint = load_checkpoint(path)  # truncated or foreign files: InputError naming the path
    if command == "gmim finetune":
        state, step = checkpoint.get("model"), checkpoint.get("step")
        if not isinstance(state, dict):
            raise InputError(f"{path}: not a gmim fine-tuning checkpoint (no 'model')")
    else:
        state, step = checkpoint, None
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) != len(state) or not tensors:
        raise InputError(f"{path}: expected a state_dict of tensors only")
    return tensors, int(step) if isinstance(step, int) else None


def _check_out(run: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    if out.resolve() == run.resolve():
        raise InputError(f"--out {out}: is the run folder; export into another folder")
    taken = next((out / name for name in _RUN_FILES if (out / name).exists()), None)
    if taken is not None:
        raise InputError(f"--out {out}: holds a run ({taken.name}); export into another folder")


def monai_arguments(config: FinetuneConfig | PretrainConfig) -> dict[str, Any]:
    """The arguments of ``monai.networks.nets.SwinUNETR`` that build the run's network (an encoder's:
    the Swin UNETR whose ``.swinViT`` it is, with 1 output channel, which the encoder does not use)."""
    architecture = config.model.architecture()
    out_channels = config.task.out_channels if isinstance(config, FinetuneConfig) else 1
    arguments: dict[str, Any] = {
        "in_channels": config.model.in_channels,
        "out_channels": out_channels,
        "feature_size": architecture.feature_size,
        "depths": list(architecture.depths),
        "num_heads": list(architecture.num_heads),
        "use_v2": architecture.use_v2,
        "spatial_dims": 3,
    }
    downsample = MONAI_DOWNSAMPLE.get(architecture.patch_merging or "monai")
    if downsample is not None:  # the prototype's merging has none: MONAI's default then loads, computing another function
        arguments["downsample"] = downsample
    return arguments


def _check_fits(tensors: dict[str, torch.Tensor], arguments: dict[str, Any], command: str, path: Path) -> None:
    """Refuse weights that plain MONAI, built as config.json says, would not load strictly."""
    network = SwinUNETR(**arguments)
    target: torch.nn.Module = network if command == "gmim finetune" else network.swinViT
    try:
        target.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        lines = str(error).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else str(error)
        raise InputError(f"{path}: weights do not fit the network of the run's config.yaml ({detail})") from error


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``tensors`` as a safetensors file, written atomically. Each is copied into memory of its
    own: safetensors refuses tensors that share storage or are not contiguous."""
    from safetensors.torch import save_file

    plain = {name: tensor.detach().to("cpu").clone().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata={"format": "pt"})


class _RunDocuments:
    """The records of a run folder that the card and config.json quote; None where a file is missing or unreadable."""

    def __init__(self, run: Path) -> None:
        self.summary = _read_json(run / "summary.json")
        self.best = _read_json(run / "best.json")
        self.splits = _read_json(run / "splits.json")
        self.invocation = _read_json(run / "run.json")
        self.metrics = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []

    def steps(self) -> tuple[int | None, int | None]:
        """(optimizer steps done, steps planned): from summary.json, else the last metrics.jsonl record."""
        if self.summary is not None and isinstance(self.summary.get("steps"), int):
            total = self.summary.get("total_steps")
            return self.summary["steps"], total if isinstance(total, int) else None
        steps = [r["step"] for r in self.metrics if isinstance(r.get("step"), int)]
        return (max(steps), None) if steps else (None, None)

    def last_training_record(self) -> dict[str, Any] | None:
        return next((r for r in reversed(self.metrics) if any(k.startswith("train/") for k in r)), None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _intensity(config: FinetuneConfig | PretrainConfig) -> dict[str, Any]:
    """The intensity normalisation in words and numbers, and as the MONAI transform that does it."""
    preprocessing = config.preprocessing
    if preprocessing.modality == "ct":
        low, high = preprocessing.window
        return {
            "description": f"CT: Hounsfield units in the window [{low:g}, {high:g}] mapped linearly to [0, 1] and clipped to it",
            "window": [low, high],
            "range": [0.0, 1.0],
            "clip": True,
            "monai_transform": f"ScaleIntensityRanged(a_min={low:g}, a_max={high:g}, b_min=0.0, b_max=1.0, clip=True)",
        }
    return {
        "description": "MRI: z-score per channel over the non-zero voxels (each channel minus the mean of its non-zero "
        "voxels, divided by their standard deviation); zero voxels stay 0",
        "nonzero": True,
        "channel_wise": True,
        "monai_transform": "NormalizeIntensityd(nonzero=True, channel_wise=True)",
    }


def _notes(config: FinetuneConfig | PretrainConfig, command: str) -> list[str]:
    """What a user of plain MONAI must know beyond monai_arguments."""
    notes = []
    if command == "gmim pretrain":
        notes.append(
            "out_channels 1 is a placeholder: the weights are the encoder (SwinUNETR.swinViT) alone, which out_channels "
            "does not change; build SwinUNETR with your task's out_channels and load them into model.swinViT"
        )
    merging = config.model.architecture().patch_merging or "monai"
    if merging == "monai-v2":
        notes.append(
            "patch merging: gmim's 'monai-v2' is MONAI's downsample='mergingv2' (in monai_arguments); without it MONAI builds another function"
        )
    elif merging == "prototype":
        notes.append(
            "WARNING: patch merging 'prototype' (the GMIM authors' prototype's) has no MONAI equivalent; MONAI's SwinUNETR "
            "loads these weights (same tensors) but computes another function with them. Use gmim (model.patch_merging=prototype)"
        )
    return notes


def model_config(
    config: FinetuneConfig | PretrainConfig,
    command: str,
    arguments: dict[str, Any],
    weights: str,
    step: int | None,
    documents: _RunDocuments,
) -> dict[str, Any]:
    """config.json: what to build, how inputs are prepared, and gmim's record of the run."""
    segmentation = isinstance(config, FinetuneConfig)
    preprocessing = config.preprocessing
    channels = list(config.task.channels) if isinstance(config, FinetuneConfig) and config.task.channels else None
    data: dict[str, Any] = {
        "library_name": "monai",
        "model_type": "swin_unetr",
        "kind": "segmentation" if segmentation else "encoder",
        "monai_class": "monai.networks.nets.SwinUNETR",
        "monai_arguments": arguments,
        "weights": "model.safetensors",
        "state_dict_of": "SwinUNETR" if segmentation else "SwinUNETR.swinViT",
        "input": {
            "channels": channels,
            "modality": preprocessing.modality,
            "spacing": list(preprocessing.spacing) if preprocessing.spacing is not None else None,
            "orientation": preprocessing.orientation,
            "intensity": _intensity(config),
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
            "output_channels": config.task.output_names,
        }
        data["inference"] = {
            "overlap": config.inference.overlap,
            "sw_batch_size": config.inference.sw_batch_size,
            "flip_tta": config.inference.flip_tta,
            "mode": "gaussian",
        }
    notes = _notes(config, command)
    if notes:
        data["notes"] = notes
    data["gmim"] = {
        "version": __version__,
        "command": command,
        "patch_merging": config.model.architecture().patch_merging or "monai",
        "weights_from": weights,
        "step": step,
    }
    return data


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("not recorded" if value is None else str(value))


def _front_matter(segmentation: bool) -> str:
    tags = ["medical-imaging", "3d", "segmentation" if segmentation else "self-supervised", "swin-unetr", "gmim"]
    return "---\nlibrary_name: monai\ntags:\n" + "".join(f"- {tag}\n" for tag in tags) + "---\n"


def _input_lines(config: FinetuneConfig | PretrainConfig) -> list[str]:
    preprocessing = config.preprocessing
    channels = config.task.channels if isinstance(config, FinetuneConfig) else []
    named = ", ".join(f"`{c}`" for c in channels) if channels else "names not recorded"
    spacing = f"{' × '.join(f'{s:g}' for s in preprocessing.spacing)} mm" if preprocessing.spacing else "each scan's own (not resampled)"
    return [
        f"- channels: {config.model.in_channels} ({named}), {preprocessing.modality.upper()}",
        f"- orientation: {preprocessing.orientation}; voxel spacing: {spacing}",
        f"- intensity: {_intensity(config)['description']}",
        f"- training crops (roi): {' × '.join(str(n) for n in config.model.roi)} voxels",
    ]


def _architecture_line(config: FinetuneConfig | PretrainConfig) -> str:
    a = config.model.architecture()
    return (
        f"feature size {a.feature_size}, depths {list(a.depths)}, heads {list(a.num_heads)}"
        f"{', v2' if a.use_v2 else ''}, patch merging `{a.patch_merging or 'monai'}`"
    )


def _merging_lines(config: FinetuneConfig | PretrainConfig) -> list[str]:
    merging = config.model.architecture().patch_merging or "monai"
    if merging == "monai-v2":
        return [
            "",
            "Patch merging is MONAI's `mergingv2`: build `SwinUNETR(..., downsample=\"mergingv2\")` (config.json's `monai_arguments` say so).",
        ]
    if merging == "prototype":
        return [
            "",
            "> **Warning**: these weights were trained with the GMIM authors' prototype patch merging, which has no MONAI "
            "equivalent. MONAI's `SwinUNETR` loads them (the tensors are the same) but computes another function with "
            "them. Use them with gmim (`model.patch_merging: prototype`, recorded in config.yaml).",
        ]
    return []


def _initial_weights(config: FinetuneConfig | PretrainConfig) -> str:
    init = config.model.init
    return f"`{Path(init).name}` (model.init)" if init else "none: trained from a random initialisation"


def _steps_line(documents: _RunDocuments) -> str:
    done, total = documents.steps()
    if done is None:
        return "- steps: not recorded"
    planned = f" of {total}" if total is not None else ""
    complete = ""
    if documents.summary is not None and "completed" in documents.summary:
        complete = " (completed)" if documents.summary["completed"] else " (stopped early; the run may be resumed)"
    return f"- optimizer steps done: {done}{planned}{complete}"


def _finetune_sections(config: FinetuneConfig, weights: str, step: int | None, documents: _RunDocuments) -> list[str]:
    task, train = config.task, config.train
    scored = ", ".join(f"`{name}`" for name in task.scored)
    if task.kind == "multiclass":
        outputs = ", ".join(f"{i}: `{name}` (label {task.labels[name]})" for i, name in enumerate(config.task.output_names))
        head = f"softmax over {task.out_channels} classes, argmax → label value. Output channels: {outputs}"
    else:
        outputs = ", ".join(f"{i}: `{name}` (labels {task.regions[name]})" for i, name in enumerate(config.task.output_names))
        head = f"one sigmoid per region, > 0.5 → in the region (regions may overlap). Output channels: {outputs}"
    chosen = (
        f"`{weights}` (the weights with the best mean validation Dice)"
        if weights == "best.pt"
        else f"`{weights}` (the last weights saved; the run kept no best.pt)"
    )
    lines = [
        f"A MONAI Swin UNETR ({_architecture_line(config)}) fine-tuned with `gmim finetune` to segment {scored} "
        f"(task `{task.name}`, {task.kind}). `model.safetensors` holds the whole network's state_dict, from the run's "
        f"{chosen}, saved at step {_number(step)}.",
        *_merging_lines(config),
        "",
        "## Input and output",
        "",
        *_input_lines(config),
        f"- output: {head}",
        f"- inference as in training: sliding windows of the roi, overlap {config.inference.overlap:g}, Gaussian weighting"
        f"{', averaged over the 8 mirrorings' if config.inference.flip_tta else ''}",
        "",
        "## Data",
        "",
    ]
    splits = documents.splits
    if splits is not None and isinstance(splits.get("training"), list) and isinstance(splits.get("validation"), list):
        lines.append(f"- training cases: {len(splits['training'])}; validation cases: {len(splits['validation'])} (splits.json)")
    else:
        lines.append("- training and validation cases: not recorded")
    fold = config.data.fold
    if fold == "all":
        lines.append("- validation: none; trained on every case (data.fold all)")
    else:
        lines.append(f"- validation fold: {fold if fold is not None else 'the datalist validation section, else fold 0'} (data.fold)")
    if config.data.labelled_cases is not None:
        lines.append(f"- labelled training cases used: {config.data.labelled_cases} (data.labelled_cases)")
    elif config.data.label_fraction < 1:
        lines.append(f"- fraction of the training cases used: {config.data.label_fraction:g} (data.label_fraction)")
    activation = "softmax" if task.kind == "multiclass" else "sigmoid"
    loss = f"Dice + {'cross-entropy' if task.kind == 'multiclass' else 'binary cross-entropy'}" if task.loss == "dice_ce" else "Dice"
    lines += [
        "",
        "## Training",
        "",
        _steps_line(documents),
        f"- batch size {train.batch_size} (global), {train.samples_per_volume} crop(s) per volume; learning rate {train.lr:g} "
        f"(AdamW, weight decay {train.weight_decay:g}; linear warm-up of {train.warmup_steps} steps, at most half the run, then cosine decay)",
        f"- loss: {loss} on the {activation} outputs (task.loss `{task.loss}`)",
        f"- encoder: {'frozen' if train.freeze_encoder else f'learning rate × {train.encoder_lr_multiplier:g}'}; "
        f"initial weights: {_initial_weights(config)}",
        "",
        "## Results (the run's own validation)",
        "",
        *_dice_lines(documents, task.scored, weights == "best.pt"),
    ]
    return lines


def _dice_lines(documents: _RunDocuments, scored: dict[str, list[int]], exported_best: bool) -> list[str]:
    """Validation Dice per class or region: of the best weights (best.json), and of the last validation (summary.json)."""
    lines = []
    best = documents.best
    if best is not None and isinstance(best.get("dice"), dict):
        whose = "the exported weights" if exported_best else "the run's best weights (not those exported: the run kept no best.pt)"
        lines += [
            f"Dice of {whose} on the validation cases, at step {_number(best.get('step'))} (best.json):",
            "",
            "| class or region | Dice |",
            "|---|---|",
            *(f"| {name} | {_number(best['dice'].get(name))} |" for name in scored),
            f"| **mean** | {_number(best.get('mean_dice'))} |",
            "",
        ]
    last = documents.summary.get("validation") if documents.summary is not None else None
    if isinstance(last, dict) and "val/mean_dice" in last:
        per = ", ".join(f"{name} {_number(last.get(f'val/dice_{name}'))}" for name in scored)
        lines.append(f"Last validation (summary.json): mean Dice {_number(last['val/mean_dice'])} ({per}).")
    return lines or ["Validation Dice: not recorded (the run had no validation, or its files do not say)."]


def _pretrain_sections(config: PretrainConfig, documents: _RunDocuments) -> list[str]:
    loss, masking, train = config.loss, config.masking, config.train
    lines = [
        f"The encoder (`SwinUNETR(...).swinViT`) of a MONAI Swin UNETR ({_architecture_line(config)}), pre-trained "
        "with GMIM self-supervision by `gmim pretrain`: adaptive hierarchical grid masks on one view, reconstruction of "
        "the masked voxels, and a cross-correlation loss between its tokens and those of a second view. No decoder and no "
        "segmentation head: a starting point for fine-tuning. `model.safetensors` holds the encoder's state_dict with "
        "bare keys (`patch_embed.…`, `layers1.…`), from the run's `encoder.pt`.",
        *_merging_lines(config),
        "",
        "## Input",
        "",
        *_input_lines(config),
        "",
        "## Data",
        "",
        "- number of training volumes: not recorded in the run folder",
        f"- validation volumes held out: data.validation_volumes {config.data.validation_volumes} (a datalist's own "
        "validation section, where the data had one, is held out instead)",
        f"- prepared stores: {config.data.store or 'the default folder ($XDG_CACHE_HOME/gmim/stores)'} (data.store)",
    ]
    if documents.invocation is not None and documents.invocation.get("command"):
        lines.append(f"- command line (run.json): `{documents.invocation['command']}`")
    record = documents.last_training_record()
    final_loss = f"; last recorded training loss {_number(record.get('train/loss'))} at step {record.get('step')}" if record else ""
    variance = f" + {loss.variance_weight:g} · L_var (variance of the final-stage tokens)" if loss.variance_weight else ""
    lines += [
        "",
        "## Training",
        "",
        _steps_line(documents) + final_loss,
        f"- batch size {train.batch_size} (global); learning rate {train.lr:g} (AdamW, weight decay {train.weight_decay:g}, "
        f"linear warm-up of {train.warmup_steps} steps, at most half the run, then cosine decay); crops (roi) {' × '.join(str(n) for n in config.model.roi)}",
        f"- loss: L = {loss.alpha_rec:g} · L_rec + {loss.alpha_cc:g} · L_cc{variance} (loss.alpha_rec, loss.alpha_cc"
        f"{', loss.variance_weight' if loss.variance_weight else ''}); L_cc's off-diagonal weight λ {loss.off_diagonal_weight:g}; "
        f"reconstruction `{loss.reconstruction}`{' on the masked voxels only' if loss.masked_only else ' on all voxels'}",
        f"- masking: grids {list(masking.grids)}, base ratio {masking.base_ratio:g} ± {masking.scale:g} by entropy rank"
        f"{' (dynamic)' if masking.dynamic else ''}, hierarchical decay {masking.decay:g}, drop probability "
        f"{masking.drop_probability:g}, cells `{masking.cells}`",
        f"- initial weights: {_initial_weights(config)}",
        "",
        "## Results (the run's own representation health)",
        "",
        *_health_lines(documents),
    ]
    return lines


def _health_lines(documents: _RunDocuments) -> list[str]:
    health = documents.summary.get("health") if documents.summary is not None else None
    if not isinstance(health, dict) or not isinstance(health.get("final"), dict):
        return ["Representation health: not recorded."]
    final, initial = health["final"], health.get("initial") or {}

    def row(values: Any) -> str:
        return " | ".join(_number(v, 3) for v in values) if isinstance(values, list) else "not recorded"

    stages = len(final.get("variation") or [])
    lines = [
        "Token variation and effective rank of the encoder's features on held-out (or, without them, training) views, "
        "by stage, of the initial and the final encoder (summary.json):",
        "",
        "| | " + " | ".join(f"stage {i}" for i in range(stages)) + " |",
        "|---" * (stages + 1) + "|",
        f"| variation, initial | {row(initial.get('variation'))} |",
        f"| variation, final | {row(final.get('variation'))} |",
        f"| effective rank, final | {row(final.get('effective_rank'))} |",
        "",
        f"- final-stage variation relative to the initial encoder's: {_number(health.get('final_stage_relative'), 3)}; "
        f"collapsed: {'yes' if health.get('collapsed') else 'no' if 'collapsed' in health else 'not recorded'}",
    ]
    validation = documents.summary.get("validation") if documents.summary is not None else None
    if isinstance(validation, dict) and "val/loss" in validation:
        lines.append(f"- last validation loss: {_number(validation['val/loss'])} (summary.json)")
    return lines


def _loading_lines(config: FinetuneConfig | PretrainConfig, arguments: dict[str, Any]) -> list[str]:
    segmentation = isinstance(config, FinetuneConfig)
    load = (
        ['model = SwinUNETR(**config["monai_arguments"])', 'model.load_state_dict(load_file("model.safetensors"))  # strict']
        if segmentation
        else [
            'arguments = {**config["monai_arguments"], "out_channels": 3}  # your task\'s classes',
            "model = SwinUNETR(**arguments)",
            'model.swinViT.load_state_dict(load_file("model.safetensors"))  # strict: the whole encoder',
        ]
    )
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
        "",
        'config = json.load(open("config.json"))',
        *load,
    ]
    if segmentation:
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
    if not segmentation:
        lines += ["`out_channels` 1 in config.json is a placeholder: the encoder does not depend on it.", ""]
    lines += [
        "## With gmim",
        "",
        "```bash",
        "gmim predict MODEL_DIR scans/ --out predictions/   # inputs prepared and outputs put back on each input's grid"
        if segmentation
        else "gmim finetune DATA --pretrained MODEL_DIR --out runs/finetuned",
        "```",
        "",
        "`config.yaml` is the run's resolved gmim configuration.",
    ]
    return lines


def model_card(
    config: FinetuneConfig | PretrainConfig,
    command: str,
    arguments: dict[str, Any],
    weights: str,
    step: int | None,
    documents: _RunDocuments,
) -> str:
    """README.md: the Hub's model card, stating only what the run's files record."""
    segmentation = isinstance(config, FinetuneConfig)
    title = (
        ("# Swin UNETR segmentation model" + (f" ({config.task.name})" if config.task.name != "segmentation" else ""))
        if isinstance(config, FinetuneConfig)
        else "# GMIM pre-trained Swin UNETR encoder"
    )
    body = (
        _finetune_sections(config, weights, step, documents)
        if isinstance(config, FinetuneConfig)
        else _pretrain_sections(config, documents)
    )
    lines = [
        _front_matter(segmentation),
        title,
        "",
        *body,
        "",
        *_loading_lines(config, arguments),
        "",
        f"Exported by gmim {__version__} (`gmim export`) from a `{command}` run.",
    ]
    return "\n".join(lines) + "\n"
