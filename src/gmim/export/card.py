"""The model card of an export: the run's model in words, stating only what its files record (and
"not recorded" elsewhere), then how to use it in the format at hand."""

from __future__ import annotations

from gmim import __version__
from gmim.export.describe import merging_card_lines
from gmim.export.source import RunModel
from gmim.segmentation.config import FinetuneConfig

__all__ = ["model_card"]


def model_card(model: RunModel, weights_file: str, arguments: str, shipped: str, usage: list[str]) -> str:
    """The card's Markdown. ``weights_file`` names the format's weights, ``arguments`` where its
    SwinUNETR arguments are written, ``shipped`` its copy of the legacy patch merging; ``usage`` is
    the format's own section on loading or running the model."""
    config = model.config
    merging = merging_card_lines(model.patch_merging, arguments, shipped)
    if isinstance(config, FinetuneConfig):
        title = "# Swin UNETR segmentation model" + (f" ({config.task.name})" if config.task.name != "segmentation" else "")
    else:
        title = f"# Swin UNETR encoder pre-trained with {model.method.name}"
    body = model.method.card_sections()(model, weights_file, merging)
    lines = [title, "", *body, "", *usage, "", f"Exported by gmim {__version__} (`gmim export`) from a `{model.command}` run."]
    return "\n".join(lines) + "\n"
