"""The model card's sections on a pre-training run: the encoder, its input, data, the method's training
settings and the run's own representation health (:func:`encoder_sections`, any method); GMIM's own
lines (:func:`pretrain_sections`)."""

from __future__ import annotations

from typing import Any

from gmim.export.describe import architecture_line, initial_weights, input_lines, number, steps_line
from gmim.export.source import RunDocuments, RunModel
from gmim.pretraining.config import PretrainConfig
from gmim.segmentation.config import FinetuneConfig

__all__ = ["encoder_sections", "pretrain_sections"]


def pretrain_sections(model: RunModel, weights_file: str, merging: list[str]) -> list[str]:
    """GMIM's card body; ``weights_file`` names the format's weights, ``merging`` is its patch-merging paragraph."""
    config = model.config
    assert isinstance(config, PretrainConfig)
    loss, masking = config.loss, config.masking
    variance = f" + {loss.variance_weight:g} · L_var (variance of the final-stage tokens)" if loss.variance_weight else ""
    training = [
        f"- loss: L = {loss.alpha_rec:g} · L_rec + {loss.alpha_cc:g} · L_cc{variance} (loss.alpha_rec, loss.alpha_cc"
        f"{', loss.variance_weight' if loss.variance_weight else ''}); L_cc's off-diagonal weight λ {loss.off_diagonal_weight:g}; "
        f"reconstruction `{loss.reconstruction}`{' on the masked voxels only' if loss.masked_only else ' on all voxels'}",
        f"- masking: grids {list(masking.grids)}, base ratio {masking.base_ratio:g} ± {masking.scale:g} by entropy rank"
        f"{' (dynamic)' if masking.dynamic else ''}, hierarchical decay {masking.decay:g}, drop probability "
        f"{masking.drop_probability:g}, cells `{masking.cells}`",
    ]
    method = (
        "GMIM self-supervision: adaptive hierarchical grid masks on one view, reconstruction of the masked voxels, "
        "and a cross-correlation loss between its tokens and those of a second view"
    )
    return encoder_sections(model, weights_file, merging, method, training)


def encoder_sections(model: RunModel, weights_file: str, merging: list[str], method: str, training: list[str]) -> list[str]:
    """The card body of any pre-training method's encoder: ``method`` says in words how it learned,
    ``training`` are the method's own lines under Training (its loss and pretext tasks)."""
    config, documents = model.config, model.documents
    assert not isinstance(config, FinetuneConfig), "an encoder's run"
    train = config.train
    lines = [
        f"The encoder (`SwinUNETR(...).swinViT`) of a MONAI Swin UNETR ({architecture_line(config)}), pre-trained "
        f"with {method} by `{model.method.title}`. No decoder and no segmentation head: a starting point for "
        f"fine-tuning. `{weights_file}` holds the encoder's state_dict with bare keys (`patch_embed.…`, `layers1.…`), "
        f"from the run's `{model.weights.name}`.",
        *merging,
        "",
        "## Input",
        "",
        *input_lines(config),
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
    final_loss = f"; last recorded training loss {number(record.get('train/loss'))} at step {record.get('step')}" if record else ""
    lines += [
        "",
        "## Training",
        "",
        steps_line(documents) + final_loss,
        f"- batch size {train.batch_size} (global); learning rate {train.lr:g} (AdamW, weight decay {train.weight_decay:g}, "
        f"linear warm-up of {train.warmup_steps} steps, at most half the run, then cosine decay); crops (roi) {' × '.join(str(n) for n in config.model.roi)}",
        *training,
        f"- initial weights: {initial_weights(config)}",
        "",
        "## Results (the run's own representation health)",
        "",
        *_health_lines(documents),
    ]
    return lines


def _health_lines(documents: RunDocuments) -> list[str]:
    health = documents.summary.get("health") if documents.summary is not None else None
    if not isinstance(health, dict) or not isinstance(health.get("final"), dict):
        return ["Representation health: not recorded."]
    final, initial = health["final"], health.get("initial") or {}

    def row(values: Any) -> str:
        return " | ".join(number(v, 3) for v in values) if isinstance(values, list) else "not recorded"

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
        f"- final-stage variation relative to the initial encoder's: {number(health.get('final_stage_relative'), 3)}; "
        f"collapsed: {'yes' if health.get('collapsed') else 'no' if 'collapsed' in health else 'not recorded'}",
    ]
    validation = documents.summary.get("validation") if documents.summary is not None else None
    if isinstance(validation, dict) and "val/loss" in validation:
        lines.append(f"- last validation loss: {number(validation['val/loss'])} (summary.json)")
    return lines
