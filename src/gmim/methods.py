"""The methods gmim trains, by name: the one place that knows which method made a run.

A method is registered once, here, with what the rest of gmim asks of it: its configuration class,
its presets, the command that runs it and the function that does, the weights its run folders keep,
what those weights are (an encoder or a segmentation model) and its model card's sections. A run
records its method in ``config.yaml`` (the ``method`` field every method's configuration has) and in
its checkpoints (``method``); resume, ``gmim export``, ``gmim predict``, the weight reader and the
command line ask :data:`METHODS` or :func:`run_method`, never guess. The entries name their code by
import path, so that this module imports nothing heavy and sits below every package that asks it.

Adding a method: its own package (configuration with a ``method: Literal["name"]`` field, the loop's
``Method``, a ``run`` function, a card-sections function, presets in ``gmim/presets/<name>/``), then
one :class:`MethodSpec` in :data:`METHODS`. The tests that are parametrised over :data:`METHODS`
(every setting's rule, export, resume) then cover it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["METHODS", "MethodSpec", "canonical_name", "method_of", "run_method"]


def _load(path: str) -> Any:
    """The object that ``"module:name"`` names."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodSpec:
    """A method as the rest of gmim sees it."""

    #: Its name: config.yaml's ``method``, the checkpoints' ``method``, ``gmim pretrain --method NAME``.
    name: str
    #: The sub-command that runs it: ``gmim pretrain`` or ``gmim finetune``.
    command: Literal["pretrain", "finetune"]
    #: One line, for ``--help`` and the model card.
    description: str
    #: ``module:Class`` of its configuration (a :class:`gmim.rules.Section` with a ``method`` field).
    config: str
    #: ``module:function`` that runs it: ``(config, data, out, resume) -> RunSummary``.
    run: str
    #: ``module:function`` giving its model card's sections: ``(model, weights_file, merging_lines) -> lines``.
    card: str
    #: Its presets' folder under ``gmim/presets``.
    presets: str
    #: What its weights are: a Swin UNETR encoder (``SwinUNETR.swinViT``) or a whole segmentation network.
    produces: Literal["encoder", "segmentation"]
    #: The files of its run folder that hold those weights, the one to use first.
    weights: tuple[str, ...]
    #: Other names its run folders carry: checkpoints' ``method`` before the registry.
    aliases: tuple[str, ...] = ()
    #: A config section only its runs have, which names run folders written before config.yaml
    #: recorded its method.
    own_section: str | None = None

    def config_class(self) -> type:
        return _load(self.config)

    def run_function(self) -> Callable[..., Any]:
        return _load(self.run)

    def card_sections(self) -> Callable[..., list[str]]:
        return _load(self.card)

    @property
    def title(self) -> str:
        """How messages name it: ``gmim pretrain --method gmim``."""
        return f"gmim {self.command}" + (f" --method {self.name}" if self.command == "pretrain" else "")


#: Every method, by name.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="gmim",
            command="pretrain",
            description="GMIM: adaptive and hierarchical grid masked image modeling (Qi et al. 2024)",
            config="gmim.pretraining.config:PretrainConfig",
            run="gmim.pretraining.method:pretrain",
            card="gmim.export.pretrain_card:pretrain_sections",
            presets="pretrain",
            produces="encoder",
            weights=("encoder.pt",),
            aliases=("pretrain",),
            own_section="masking",
        ),
        MethodSpec(
            name="swin-ssl",
            command="pretrain",
            description="Swin UNETR's own self-supervision: rotation, contrastive coding, inpainting (Tang et al. 2022)",
            config="gmim.swinssl.config:SwinSSLConfig",
            run="gmim.swinssl.method:pretrain",
            card="gmim.export.swinssl_card:swinssl_sections",
            presets="swin-ssl",
            produces="encoder",
            weights=("encoder.pt",),
        ),
        MethodSpec(
            name="finetune",
            command="finetune",
            description="supervised fine-tuning of a Swin UNETR segmentation network",
            config="gmim.segmentation.config:FinetuneConfig",
            run="gmim.segmentation.method:finetune",
            card="gmim.export.finetune_card:finetune_sections",
            presets="finetune",
            produces="segmentation",
            weights=("best.pt", "last.pt"),
            own_section="task",
        ),
    )
}


def _find(name: str) -> MethodSpec | None:
    return METHODS.get(name) or next((spec for spec in METHODS.values() if name in spec.aliases), None)


def canonical_name(name: str) -> str:
    """A registered method's name for ``name`` (an alias: the name); any other name as it is (a
    method of the loop that is not registered, e.g. a user's own)."""
    found = _find(name)
    return found.name if found is not None else name


def method_of(sections: Mapping[str, Any]) -> MethodSpec | None:
    """The method of a run's configuration (config.yaml as a mapping): its ``method``, else, for a
    run written before it was recorded, the section only that method has. None: not a gmim run's."""
    name = sections.get("method")
    if isinstance(name, str):
        return _find(name)
    return next((spec for spec in METHODS.values() if spec.own_section is not None and spec.own_section in sections), None)


def run_method(config: Path) -> MethodSpec | None:
    """The method whose run folder (or export) holds ``config`` (its config.yaml); None when the file
    is unreadable or not a gmim run's."""
    try:
        sections = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return method_of(sections) if isinstance(sections, dict) else None
