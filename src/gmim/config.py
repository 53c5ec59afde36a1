"""Run configurations: nested dataclasses filled from a shipped preset or a YAML file, then ``--set``.

Each command defines its own dataclasses (defaults = the method's defaults) and calls::

    config = load_config(FinetuneConfig, "brats2021", ["train.lr=2e-4", "model.roi=[96,96,96]"],
                         presets="finetune")
    dump_config(config, run_dir / "config.yaml")

Layers apply in order: the dataclass defaults, the preset or file (``source``: a name shipped in
``gmim/presets/<presets>/<name>.yaml`` or a path to a ``.yaml`` file), then the overrides
``key.sub=value`` whose values are parsed as YAML (``3``, ``1e-4``, ``true``, ``[96, 96, 64]``,
``null``). An unknown key, a value of the wrong type or one against its field's rule
(:mod:`gmim.rules`) is refused with an :class:`~gmim.errors.InputError` that names the key and the
file or option it came from, before any data is read.

The command line's ``--config``, ``--set`` and direct flags feed it (:mod:`gmim.cli.arguments`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gmim.atomic import atomic_path
from gmim.errors import InputError
from gmim.rules import SettingError, plain

__all__ = [
    "Override",
    "dump_config",
    "flatten",
    "load_config",
    "preset_names",
    "to_dict",
]

T = TypeVar("T")


def preset_names(presets: str) -> list[str]:
    """Names of the presets shipped in ``gmim/presets/<presets>/``."""
    folder = resources.files("gmim.presets") / presets
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_source(source: str | Path, presets: str) -> tuple[dict[str, Any], str]:
    """The mapping in a preset or YAML file, with the name used in error messages."""
    path = Path(source).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        where = str(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise InputError(f"{where}: cannot read config ({error.strerror or error})") from error
    else:
        resource = resources.files("gmim.presets") / presets / f"{source}.yaml"
        if not resource.is_file():
            names = ", ".join(preset_names(presets)) or "none"
            raise InputError(f"--config {source}: neither a YAML file nor a {presets} preset ({names})")
        where, text = f"preset {source}", resource.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from error
    if data is None:
        return {}, where
    if not isinstance(data, dict):
        raise InputError(f"{where}: a config must be a mapping of keys to values")
    return data, where


@dataclasses.dataclass(frozen=True)
class Override:
    """One ``key.sub=value`` applied over the loaded layers, and the option the user wrote it as
    (``--set key.sub=value``, or a direct flag such as ``--roi 64``), which errors name."""

    item: str
    given_as: str = ""

    @property
    def where(self) -> str:
        """The option, in one line (a value may hold line breaks)."""
        return self.given_as or "--set " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.item)


def load_config(cls: type[T], source: str | Path | None = None, overrides: Sequence[str | Override] = (), presets: str = "") -> T:
    """The configuration of class ``cls``: defaults, then ``source``, then ``overrides``; each
    section checked against its rules (:mod:`gmim.rules`)."""
    data = to_dict(cls())
    origins: dict[str, str] = {}
    if source is not None:
        layer, where = _read_source(source, presets)
        data = _merge(cls, data, layer, where, "", origins)
    for override in overrides:
        data = _apply_override(cls, data, override if isinstance(override, Override) else Override(override), origins)
    try:
        return _build(cls, data)
    except SettingError as error:
        keys = (error.key, *error.related)
        where = next((origins[k] for k in keys if k in origins), f"the {'preset' if source else 'default'} value")
        raise InputError(f"{where}: {error}") from None


def _apply_override(cls: type, data: dict[str, Any], override: Override, origins: dict[str, str]) -> dict[str, Any]:
    """``data`` with ``override`` applied (its value parsed as YAML)."""
    key, sep, text = override.item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{override.where}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise InputError(f"{override.where}: value is not valid YAML") from error
    layer: Any = value
    for part in reversed(key.strip().split(".")):
        layer = {part: layer}
    return _merge(cls, data, layer, override.where, "", origins)


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML-friendly data (tuples become lists)."""
    return plain(dataclasses.asdict(config))


def dump_config(config: Any, path: str | Path) -> None:
    """Write a resolved config as YAML, atomically: it can be loaded back with :func:`load_config`."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls`` from checked data, sections first; a :class:`SettingError` names its key from the top."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(typing.cast(Any, cls)):  # T is always a dataclass type here
        value = data[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            try:
                value = _build(hints[field.name], value)
            except SettingError as error:
                raise error.within(field.name) from None
        kwargs[field.name] = value
    return cls(**kwargs)


def _merge(cls: type, base: dict[str, Any], layer: Any, where: str, prefix: str, origins: dict[str, str]) -> dict[str, Any]:
    """``base`` with the values of ``layer`` (from ``where``), each type-checked; ``origins`` learns
    where each key it sets came from."""
    if not isinstance(layer, dict):
        raise InputError(f"{where}: '{prefix.rstrip('.') or 'config'}' must be a mapping, got {layer!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = dict(base)
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise InputError(f"{where}: unknown key '{full}' (known here: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            out[key] = _merge(typing.cast(type, hint), base[key], value, where, f"{full}.", origins)
        else:
            out[key] = _coerce(hint, value, full, where)
            origins[full] = where
    return out


def _type_name(hint: Any) -> str:
    """The type in words: ``one of 'monai', 'monai-v2' or null`` rather than ``Optional``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(hint: Any, value: Any, key: str, where: str) -> Any:
    """``value`` checked against the type ``hint`` (ints become floats where floats are expected)."""

    def fail() -> typing.NoReturn:
        raise InputError(f"{where}: '{key}' must be {_type_name(hint)}, got {value!r}")

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key, where)
            except InputError:
                continue
        fail()
    if origin is typing.Literal:
        if value in args:
            return value
        raise InputError(f"{where}: '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{where}: '{key}' must have {len(args)} values, got {value!r}")
            return tuple(_coerce(a, v, key, where) for a, v in zip(args, value))
        item = args[0] if args else Any
        items = [_coerce(item, v, key, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            fail()
        key_type, value_type = args or (Any, Any)
        return {_coerce(key_type, k, key, where): _coerce(value_type, v, key, where) for k, v in value.items()}
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            fail()
        return value
    raise TypeError(f"config type {hint!r} of '{key}' is not supported")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return out
