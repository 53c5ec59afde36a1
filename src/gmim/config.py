"""Run configurations: nested dataclasses filled from a shipped preset or a YAML file, then ``--set``.

Each command defines its own dataclasses (defaults = the method's defaults) and calls::

    config = load_config(FinetuneConfig, "brats2021", ["train.lr=2e-4", "model.roi=[96,96,96]"],
                         presets="finetune")
    dump_config(config, run_dir / "config.yaml")

Layers apply in order: the dataclass defaults, the preset or file (``source``: a name shipped in
``gmim/presets/<presets>/<name>.yaml`` or a path to a ``.yaml`` file), then the overrides
``key.sub=value`` whose values are parsed as YAML (``3``, ``1e-4``, ``true``, ``[96, 96, 64]``,
``null``). An unknown key or a value of the wrong type is refused with an
:class:`~gmim.errors.InputError` that names the key and the file or option it came from.

Commands share the options: :func:`add_config_arguments` adds ``--config`` and ``--set``;
:func:`flag_overrides` turns direct flags (``--lr 2e-4``) into overrides applied before ``--set``;
:func:`check_run_folder` guards a run folder against overwriting and against resuming with settings
that change what the run learns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gmim.atomic import atomic_path
from gmim.errors import InputError

__all__ = [
    "add_config_arguments",
    "check_run_folder",
    "dump_config",
    "flag_overrides",
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


def add_config_arguments(parser: argparse.ArgumentParser, presets: str) -> None:
    """``--config PRESET|FILE.yaml`` and repeatable ``--set key.sub=value``."""
    names = ", ".join(preset_names(presets)) or "none"
    parser.add_argument("--config", metavar="PRESET|FILE.yaml", help=f"a shipped preset ({names}) or a YAML file")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override a config value, e.g. --set train.lr=2e-4 (repeatable; applied last)",
    )


def add_roi_argument(parser: argparse.ArgumentParser) -> None:
    """``--roi N`` or ``--roi D H W``, read back as three sizes by :func:`flag_overrides`."""
    parser.add_argument("--roi", type=int, nargs="+", metavar="N", help="crop size: one size or three (D H W), multiples of 32")


def flag_overrides(args: argparse.Namespace, flags: Mapping[str, str]) -> list[str]:
    """``key=value`` overrides for the direct flags given on the command line (flag dest → config key)."""
    roi = getattr(args, "roi", None)
    if roi is not None:
        if len(roi) not in (1, 3):
            raise InputError(f"--roi takes one size or three, got {len(roi)}")
        args.roi = roi * 3 if len(roi) == 1 else roi
    return [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in flags.items() if getattr(args, dest, None) is not None]


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


def load_config(
    cls: type[T], source: str | Path | None = None, overrides: Sequence[str] = (), presets: str = ""
) -> T:
    """The configuration of class ``cls``: defaults, then ``source``, then ``overrides``."""
    data = to_dict(cls())
    if source is not None:
        layer, where = _read_source(source, presets)
        data = _merge(cls, data, layer, where, "")
    data = _apply_overrides(cls, data, overrides)
    return _build(cls, data)


def _apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with each ``key.sub=value`` of ``overrides`` applied (values parsed as YAML)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        where = f"--set {item}"
        if not sep or not key.strip():
            raise InputError(f"{where}: expected key.sub=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise InputError(f"{where}: value is not valid YAML") from error
        layer: Any = value
        for part in reversed(key.strip().split(".")):
            layer = {part: layer}
        data = _merge(cls, data, layer, where, "")
    return data


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML-friendly data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Any, path: str | Path) -> None:
    """Write a resolved config as YAML, atomically: it can be loaded back with :func:`load_config`."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = data[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            value = _build(hints[field.name], value)
        kwargs[field.name] = value
    return cls(**kwargs)


def _merge(cls: type, base: dict[str, Any], layer: Any, where: str, prefix: str) -> dict[str, Any]:
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
            out[key] = _merge(hint, base[key], value, where, f"{full}.")
        else:
            out[key] = _coerce(hint, value, full, where)
    return out


def _type_name(hint: Any) -> str:
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


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return out


def check_run_folder(config: Any, out: Path, resume: bool, may_change: Collection[str] = ()) -> None:
    """Refuse to start a run in a folder that holds one (``last.pt``) unless ``resume``, and to resume
    with settings other than the folder's ``config.yaml``, except the keys in ``may_change`` (how
    long and where a run goes on, not what it learns)."""
    if not resume:
        if (out / "last.pt").exists():
            raise InputError(f"--out {out}: holds a run already (last.pt); pass --resume to continue it, or choose another folder")
        return
    if not (out / "last.pt").is_file():
        raise InputError(f"--resume: {out / 'last.pt'} not found")
    saved = _flat(to_dict(load_config(type(config), out / "config.yaml")))
    now = _flat(to_dict(config))
    for key in sorted(saved.keys() | now.keys()):
        if key not in may_change and saved.get(key) != now.get(key):
            raise InputError(
                f"--resume: {key} is {now.get(key)!r} now but {saved.get(key)!r} in {out / 'config.yaml'}; resume with the run's settings"
            )
