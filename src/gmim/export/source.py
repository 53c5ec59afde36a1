"""What an export takes from a run folder: the command that made it, its resolved configuration, the
weights, the MONAI ``SwinUNETR`` arguments that build their network, and the records the model card
quotes. Everything is checked here, before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

from gmim import __version__
from gmim.config import load_config
from gmim.engine.metrics import read_metrics
from gmim.errors import InputError
from gmim.methods import MethodSpec, run_method
from gmim.pretraining.config import PretrainConfig
from gmim.segmentation.config import FinetuneConfig
from gmim.swin.merging import MONAI_DOWNSAMPLE
from gmim.swinssl.config import SwinSSLConfig
from gmim.weights_only import load_checkpoint

__all__ = ["RunConfig", "RunDocuments", "RunModel", "monai_arguments", "read_run"]

#: The configuration of a run of any registered method (:mod:`gmim.methods`).
RunConfig = FinetuneConfig | PretrainConfig | SwinSSLConfig


class RunDocuments:
    """The records of a run folder that the card and config files quote; None where a file is missing or unreadable."""

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


@dataclass(frozen=True)
class RunModel:
    """A run's model as an export sees it."""

    folder: Path
    #: The method that made the run (:mod:`gmim.methods`): what its weights are, its card.
    method: MethodSpec
    config: RunConfig
    #: The file the tensors come from: best.pt, else last.pt; a pre-training's encoder.pt.
    weights: Path
    tensors: dict[str, torch.Tensor]
    #: The optimizer step the weights were saved at, where the file says.
    step: int | None
    #: ``monai.networks.nets.SwinUNETR(**arguments)`` builds their network (see :func:`monai_arguments`).
    arguments: dict[str, Any]
    documents: RunDocuments

    @property
    def segmentation(self) -> bool:
        return self.method.produces == "segmentation"

    def record(self) -> dict[str, Any]:
        """gmim's record in an export's config: what made the weights (the weight reader takes the
        patch merging back from it)."""
        return {
            "version": __version__,
            "command": self.command,
            "method": self.method.name,
            "patch_merging": self.patch_merging,
            "weights_from": self.weights.name,
            "step": self.step,
        }

    @property
    def command(self) -> str:
        """The command that made the run: ``gmim finetune``, ``gmim pretrain``."""
        return f"gmim {self.method.command}"

    @property
    def patch_merging(self) -> str:
        return self.config.model.architecture().patch_merging or "monai"


def read_run(run: Path) -> RunModel:
    """The model of the run folder ``run``; bad input raises :class:`InputError` naming the path."""
    method, config = _read_config(run)
    weights = _weights_path(run, method)
    tensors, step = _read_tensors(weights, method)
    arguments = monai_arguments(config)
    _check_fits(tensors, arguments, method, weights)
    return RunModel(run, method, config, weights, tensors, step, arguments, RunDocuments(run))


def monai_arguments(config: RunConfig) -> dict[str, Any]:
    """The arguments of ``monai.networks.nets.SwinUNETR`` that build the run's network (an encoder's:
    the Swin UNETR whose ``.swinViT`` it is, with 1 output channel, which the encoder does not use).
    The legacy patch merging has no name in MONAI ≥ 1.5: without ``downsample`` MONAI builds its own
    merging, and each format says how to pass the class (:mod:`gmim.export.describe`)."""
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
    if downsample is not None:
        arguments["downsample"] = downsample
    return arguments


def _read_config(run: Path) -> tuple[MethodSpec, RunConfig]:
    """The method that made ``run`` and its configuration."""
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder" if not run.exists() else f"{run}: a file, not a run folder")
    path = run / "config.yaml"
    if not path.is_file():
        raise InputError(f"{run}: not a gmim run folder (no config.yaml)")
    method = run_method(path)
    if method is None:
        raise InputError(f"{path}: not the config.yaml of a gmim run (it names no method gmim has)")
    config: RunConfig = load_config(method.config_class(), path)
    if isinstance(config, FinetuneConfig):
        config.task.require_complete(str(path))  # a resolved run's task has its labels
    if config.model.in_channels is None:
        raise InputError(f"{path}: model.in_channels is not recorded (not the resolved config.yaml of a run)")
    return method, config


def _weights_path(run: Path, method: MethodSpec) -> Path:
    """The weights a run's export holds: the first of its method's weights files that the run has."""
    found = next((run / name for name in method.weights if (run / name).is_file()), None)
    if found is None:
        raise InputError(f"{run}: a {method.title} run without weights (no {' or '.join(method.weights)}); has it saved a checkpoint yet?")
    return found


def _read_tensors(path: Path, method: MethodSpec) -> tuple[dict[str, torch.Tensor], int | None]:
    """(the state_dict to export, the step it was saved at where the file says): a segmentation run's
    checkpoint holds its network under ``model``; an encoder is saved as its state_dict."""
    checkpoint = load_checkpoint(path)  # truncated or foreign files: InputError naming the path
    if method.produces == "segmentation":
        state, step = checkpoint.get("model"), checkpoint.get("step")
        if not isinstance(state, dict):
            raise InputError(f"{path}: not a gmim fine-tuning checkpoint (no 'model')")
    else:
        state, step = checkpoint, None
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) != len(state) or not tensors:
        raise InputError(f"{path}: expected a state_dict of tensors only")
    return tensors, int(step) if isinstance(step, int) else None


def _check_fits(tensors: dict[str, torch.Tensor], arguments: dict[str, Any], method: MethodSpec, path: Path) -> None:
    """Refuse weights that MONAI's SwinUNETR, built with ``arguments``, would not load strictly (every
    patch merging has the same parameters: MONAI's default stands in for the legacy one)."""
    network = SwinUNETR(**arguments)
    target: torch.nn.Module = network if method.produces == "segmentation" else network.swinViT
    try:
        target.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        lines = str(error).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else str(error)
        raise InputError(f"{path}: weights do not fit the network of the run's config.yaml ({detail})") from error


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
