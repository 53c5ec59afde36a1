"""The registry of methods: every registered method is complete, and a run's method is read from what
the run wrote, never guessed from the command that reads it."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from gmim.config import dump_config, preset_names
from gmim.methods import METHODS, canonical_name, method_of, run_method
from gmim.rules import Section
from gmim.swin.layouts import recognise


@pytest.mark.parametrize("name", METHODS)
def test_every_method_is_complete(name, tmp_path):
    spec = METHODS[name]
    config_class = spec.config_class()
    assert issubclass(config_class, Section) and dataclasses.fields(config_class)[0].name == "method"
    assert typing.get_args(typing.get_type_hints(config_class)["method"]) == (name,)  # config.yaml names its method
    assert callable(spec.run_function()) and callable(spec.card_sections())
    assert preset_names(spec.presets), f"{name}: no presets in gmim/presets/{spec.presets}"
    config = config_class()
    dump_config(config, tmp_path / "config.yaml")
    assert run_method(tmp_path / "config.yaml") is spec
    state = {"swinViT.patch_embed.proj.weight": torch.zeros(12, 1, 2, 2, 2)}
    checkpoint = {"method": name, "model": state} if spec.produces == "segmentation" else {"method": name, **state}
    assert recognise(checkpoint, "last.pt").layout.name == f"gmim run ({spec.title})"


def test_runs_written_before_the_registry_are_read_by_their_own_section():
    assert method_of({"masking": {}, "model": {}}) is METHODS["gmim"]
    assert method_of({"task": {}, "model": {}}) is METHODS["finetune"]
    assert method_of({"model": {}}) is None and method_of({"method": "swin-unknown"}) is None
    assert canonical_name("pretrain") == "gmim"  # checkpoints' method before the registry
    assert canonical_name("toy") == "toy"  # a method of the loop that is not registered keeps its name
