"""Every setting of every command owns a rule: a wrong value of any field, given on the command line,
ends in one line naming the key and exit status 2, before any data is read.

The fields are enumerated from the command's configuration dataclasses, so that a field added later
without a rule fails here (unless it declares :data:`gmim.rules.ANY_VALUE`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmim.cli import main
from gmim.config import load_config
from gmim.errors import InputError
from gmim.methods import METHODS
from gmim.pretraining.config import MaskingConfig, PretrainConfig
from gmim.rules import ANY_VALUE, Rule, Section, SettingError, plain, rule_of
from gmim.segmentation.config import FinetuneConfig

#: Each way the command line reads a configuration: every method of the registry (its command, with
#: ``--method`` for pre-training) and ``gmim prepare``, with the configuration's class.
COMMANDS: dict[str, tuple[list[str], type]] = {
    **{
        spec.name: ([spec.command, *(["--method", spec.name] if spec.command == "pretrain" else [])], spec.config_class())
        for spec in METHODS.values()
    },
    "prepare": (["prepare"], PretrainConfig),
}

#: Wrong for every field: not a number, infinite, a mapping or a list nested where none belongs.
WRONG_EVERYWHERE = [".nan", ".inf", "-.inf", "{x: {y: 1}}", "[[[]]]"]


@dataclasses.dataclass(frozen=True)
class Leaf:
    key: str
    hint: Any
    rule: Rule | None

    @property
    def options(self) -> tuple[Any, ...]:
        """The type's options, ``None`` included for an optional field."""
        origin = typing.get_origin(self.hint)
        return typing.get_args(self.hint) if origin in (typing.Union, types.UnionType) else (self.hint,)

    @property
    def is_choice(self) -> bool:
        """A bool or Literal field: its type is the whole rule."""
        return all(o in (bool, type(None)) or typing.get_origin(o) is typing.Literal for o in self.options)


def leaves(cls: type, prefix: str = "") -> Iterator[Leaf]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from leaves(hint, f"{prefix}{field.name}.")
        else:
            yield Leaf(f"{prefix}{field.name}", hint, rule_of(cls, field.name))


def as_yaml(value: Any) -> str:
    """``value`` as a user types it after ``--set key=``."""
    return yaml.safe_dump(plain(value), default_flow_style=True, width=math.inf).removesuffix("...\n").strip()


def wrong_values(leaf: Leaf) -> list[str]:
    """What must be refused for ``leaf``: the values wrong everywhere, its rule's own out-of-range
    examples, an empty text, list and mapping (unless its rule gives empty a meaning), and null
    where the type has no null."""
    values = [*WRONG_EVERYWHERE, *(as_yaml(v) for v in (leaf.rule.outside if leaf.rule else ()))]
    if not (leaf.rule and leaf.rule.empty_allowed):
        values += ["''", "[]", "{}"]
    if type(None) not in leaf.options:
        values.append("null")
    return values


@pytest.mark.parametrize("cls", sorted({cls for _, cls in COMMANDS.values()}, key=lambda c: c.__name__))
def test_every_field_declares_its_rule(cls):
    for leaf in leaves(cls):
        assert leaf.is_choice or leaf.rule is not None, f"{leaf.key} declares no rule (gmim.rules.setting)"
        if leaf.rule is not None and leaf.rule is not ANY_VALUE:
            assert leaf.rule.outside, f"{leaf.key}: its rule gives no value it refuses"
        assert issubclass(cls, Section)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_wrong_value_of_every_setting_is_one_line_naming_its_key(command, tmp_path, capsys):
    """Through the command line, before any data is read: DATA does not even exist, so a wrong value
    that got through would be reported as that missing path instead."""
    refused = 0
    argv, cls = COMMANDS[command]
    for leaf in leaves(cls):
        for value in wrong_values(leaf):
            item = f"{leaf.key}={value}"
            code = main([*argv, str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), "--set", item])
            err = capsys.readouterr().err
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and "Traceback" not in err, (item, err)
            assert lines[0].startswith(f"gmim {argv[0]}: error: --set {item}: ") and f"'{leaf.key}'" in lines[0], (item, err)
            refused += 1
    assert refused > 300
    assert not (tmp_path / "out").exists()


def test_flags_are_named_as_the_user_wrote_them(tmp_path, capsys):
    for argv, expected in (
        (["--roi", "48"], "--roi 48: 'model.roi' must be a Swin UNETR crop"),
        (["--steps", "0"], "--steps 0: 'train.steps' must be >= 1, got 0"),
        (["--lr", "-1"], "--lr -1.0: 'train.lr' must be positive and finite, got -1.0"),
    ):
        assert main(["pretrain", str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), *argv]) == 2
        assert capsys.readouterr().err.startswith(f"gmim pretrain: error: {expected}")


def test_a_yaml_file_names_itself_and_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("masking:\n  base_ratio: 1.5\n")
    with pytest.raises(InputError, match=r"^.*run.yaml: 'masking.base_ratio' must be in \(0, 1\], got 1.5$"):
        load_config(PretrainConfig, path)


def test_rules_between_fields_name_the_key_the_user_set(tmp_path):
    with pytest.raises(
        InputError, match=r"^--set masking.grids=\[4, 128\]: 'masking.grids' must be no finer than the crop model.roi \[64, 64, 64\]"
    ):
        load_config(PretrainConfig, None, ["masking.grids=[4, 128]", "model.roi=[64, 64, 64]"])
    with pytest.raises(InputError, match=r"^--set task.kind=regions: 'task.regions' must be given"):
        load_config(FinetuneConfig, None, ["task.kind=regions"])
    with pytest.raises(SettingError, match=r"^'base_ratio' must be in \(0, 1\], got 2$"):  # a Python caller
        MaskingConfig(base_ratio=2)


_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8
)
_settings = [(cls, leaf.key) for cls in sorted({cls for _, cls in COMMANDS.values()}, key=lambda c: c.__name__) for leaf in leaves(cls)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setting=st.sampled_from(_settings), value=_values)
def test_any_value_of_any_setting_loads_or_is_one_named_refusal(setting, value):
    """Whatever the value: the configuration loads, or an InputError names the option and the key;
    never another exception."""
    cls, key = setting
    item = f"{key}={as_yaml(value)}"
    try:
        load_config(cls, None, [item])
    except InputError as error:
        message = str(error)
        assert message.startswith("--set ") and key in message and len(message.splitlines()) == 1, message
