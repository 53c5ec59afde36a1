"""The model card's sections on a ``gmim finetune`` run: what it segments, its input and output, data,
training and the run's own validation."""

from __future__ import annotations

from gmim.export.describe import architecture_line, initial_weights, input_lines, number, steps_line
from gmim.export.source import RunDocuments, RunModel
from gmim.segmentation.config import FinetuneConfig

__all__ = ["finetune_sections"]


def finetune_sections(model: RunModel, weights_file: str, merging: list[str]) -> list[str]:
    """The card's body; ``weights_file`` names the format's weights, ``merging`` is its patch-merging paragraph."""
    config = model.config
    assert isinstance(config, FinetuneConfig)
    task, train, weights = config.task, config.train, model.weights.name
    scored = ", ".join(f"`{name}`" for name in task.scored)
    if task.kind == "multiclass":
        outputs = ", ".join(f"{i}: `{name}` (label {task.labels[name]})" for i, name in enumerate(task.output_names))
        head = f"softmax over {task.out_channels} classes, argmax → label value. Output channels: {outputs}"
    else:
        outputs = ", ".join(f"{i}: `{name}` (labels {task.regions[name]})" for i, name in enumerate(task.output_names))
        head = f"one sigmoid per region, > 0.5 → in the region (regions may overlap). Output channels: {outputs}"
    chosen = (
        f"`{weights}` (the weights with the best mean validation Dice)"
        if weights == "best.pt"
        else f"`{weights}` (the last weights saved; the run kept no best.pt)"
    )
    lines = [
        f"A MONAI Swin UNETR ({architecture_line(config)}) fine-tuned with `gmim finetune` to segment {scored} "
        f"(task `{task.name}`, {task.kind}). `{weights_file}` holds the whole network's state_dict, from the run's "
        f"{chosen}, saved at step {number(model.step)}.",
        *merging,
        "",
        "## Input and output",
        "",
        *input_lines(config),
        f"- output: {head}",
        f"- inference as in training: sliding windows of the roi, overlap {config.inference.overlap:g}, Gaussian weighting"
        f"{', averaged over the 8 mirrorings' if config.inference.flip_tta else ''}",
        "",
        "## Data",
        "",
    ]
    splits = model.documents.splits
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
        steps_line(model.documents),
        f"- batch size {train.batch_size} (global), {train.samples_per_volume} crop(s) per volume; learning rate {train.lr:g} "
        f"(AdamW, weight decay {train.weight_decay:g}; linear warm-up of {train.warmup_steps} steps, at most half the run, then cosine decay)",
        f"- loss: {loss} on the {activation} outputs (task.loss `{task.loss}`)",
        f"- encoder: {'frozen' if train.freeze_encoder else f'learning rate × {train.encoder_lr_multiplier:g}'}; "
        f"initial weights: {initial_weights(config)}",
        "",
        "## Results (the run's own validation)",
        "",
        *_dice_lines(model.documents, task.scored, weights == "best.pt"),
    ]
    return lines


def _dice_lines(documents: RunDocuments, scored: dict[str, list[int]], exported_best: bool) -> list[str]:
    """Validation Dice per class or region: of the best weights (best.json), and of the last validation (summary.json)."""
    lines = []
    best = documents.best
    if best is not None and isinstance(best.get("dice"), dict):
        whose = "the exported weights" if exported_best else "the run's best weights (not those exported: the run kept no best.pt)"
        lines += [
            f"Dice of {whose} on the validation cases, at step {number(best.get('step'))} (best.json):",
            "",
            "| class or region | Dice |",
            "|---|---|",
            *(f"| {name} | {number(best['dice'].get(name))} |" for name in scored),
            f"| **mean** | {number(best.get('mean_dice'))} |",
            "",
        ]
    last = documents.summary.get("validation") if documents.summary is not None else None
    if isinstance(last, dict) and "val/mean_dice" in last:
        per = ", ".join(f"{name} {number(last.get(f'val/dice_{name}'))}" for name in scored)
        lines.append(f"Last validation (summary.json): mean Dice {number(last['val/mean_dice'])} ({per}).")
    return lines or ["Validation Dice: not recorded (the run had no validation, or its files do not say)."]
