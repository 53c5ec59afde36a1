"""Config loading: defaults, preset or file, --set overrides, refusal of unknown keys and bad types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from gmim.config import dump_config, load_config, preset_names
from gmim.engine.run_folder import check_run_folder
from gmim.errors import InputError


@dataclass
class Optim:
    lr: float = 1e-4
    warmup_steps: int = 10
    clip: float | None = 1.0


@dataclass
class Example:
    name: str = "x"
    roi: tuple[int, int, int] = (96, 96, 96)
    modality: Literal["ct", "mri"] = "mri"
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0})
    optim: Optim = field(default_factory=Optim)


def test_layers_apply_in_order_and_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 3\n  warmup_steps: 5\nroi: [64, 64, 32]\n")
    config = load_config(Example, path, ["optim.lr=2e-4", "labels={background: 0, brain: 1}", "optim.clip=null"])
    assert config.optim == Optim(lr=2e-4, warmup_steps=5, clip=None)
    assert config.roi == (64, 64, 32) and config.labels == {"background": 0, "brain": 1}
    assert isinstance(load_config(Example, path).optim.lr, float)
    dump_config(config, tmp_path / "out" / "config.yaml")
    assert load_config(Example, tmp_path / "out" / "config.yaml") == config


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("optim:\n  lrr: 1\n", [], r"run.yaml: unknown key 'optim.lrr'"),
        ("roi: [1, 2]\n", [], r"'roi' must have 3 values"),
        ("", ["optim.warmup_steps=1.5"], r"--set optim.warmup_steps=1.5: 'optim.warmup_steps' must be int"),
        ("", ["modality=pet"], r"'modality' must be one of"),
        ("", ["optim=3"], r"'optim' must be a mapping"),
        ("", ["name"], r"expected key.sub=value"),
        ("optim: [1\n", [], r"run.yaml: not valid YAML"),
        ("- 1\n", [], r"must be a mapping of keys"),
    ],
)
def test_bad_configs_name_key_and_source(tmp_path, text, overrides, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(Example, path, overrides)


def test_presets_are_found_by_name():
    assert {"amos2022", "brats2021"} <= set(preset_names("finetune"))
    with pytest.raises(InputError, match="neither a YAML file nor a finetune preset"):
        load_config(Example, "no-such-preset", presets="finetune")


def test_run_folder_guard(tmp_path):
    config = load_config(Example, None, ["optim.lr=0.1"])
    check_run_folder(config, tmp_path, resume=False)  # an empty folder: fine
    with pytest.raises(InputError, match="--resume: .*last.pt not found"):
        check_run_folder(config, tmp_path, resume=True)
    (tmp_path / "last.pt").write_bytes(b"")
    dump_config(config, tmp_path / "config.yaml")
    with pytest.raises(InputError, match="holds a run already"):
        check_run_folder(config, tmp_path, resume=False)
    check_run_folder(config, tmp_path, resume=True)
    changed = load_config(Example, None, ["optim.lr=0.2", "labels={background: 0, x: 1}"])
    with pytest.raises(InputError, match=r"--resume: labels.x is 1 now but None"):
        check_run_folder(changed, tmp_path, resume=True, may_change=("optim.lr",))
    check_run_folder(load_config(Example, None, ["optim.lr=0.2"]), tmp_path, resume=True, may_change=("optim.lr",))
    # a key that only the start reads (the initial weights) need not be repeated on resume, and stays recorded
    dump_config(load_config(Example, None, ["optim.lr=0.1", "optim.clip=null"]), tmp_path / "config.yaml")
    unset = load_config(Example, None, ["optim.lr=0.1", "optim.clip=null"])
    unset.optim.clip = None
    check_run_folder(unset, tmp_path, resume=True, inherit=("optim.clip",))
    assert unset.optim.clip is None
    dump_config(config, tmp_path / "config.yaml")
    unset = load_config(Example, None, ["optim.lr=0.1", "optim.clip=null"])
    check_run_folder(unset, tmp_path, resume=True, inherit=("optim.clip",))
    assert unset.optim.clip == 1.0
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, not a run folder"):
        check_run_folder(config, tmp_path / "file", resume=False)


def test_finetune_presets_follow_the_method():
    from gmim.segmentation.config import FinetuneConfig

    brats = load_config(FinetuneConfig, "brats2021", presets="finetune")
    brats.task.check()
    assert brats.task.kind == "regions" and brats.task.regions == {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
    assert brats.task.loss == "dice" and brats.task.channels == ["flair", "t1", "t1ce", "t2"]
    assert brats.preprocessing.modality == "mri" and brats.model.roi == (128, 128, 128) and brats.model.architecture().feature_size == 48
    amos = load_config(FinetuneConfig, "amos2022", presets="finetune")
    amos.task.check()
    assert amos.task.kind == "multiclass" and amos.task.out_channels == 16 and amos.task.loss == "dice_ce"
    assert amos.preprocessing.window == (-175.0, 250.0) and amos.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert amos.model.roi == (128, 128, 128) and amos.model.architecture().feature_size == 48 and amos.inference.overlap == 0.5
