"""The run folder's guard: no run overwrites another, and a resumed run keeps the settings it
started with."""

from __future__ import annotations

import functools
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gmim.config import flatten, load_config, to_dict
from gmim.errors import InputError

__all__ = ["check_run_folder"]


def check_run_folder(config: Any, out: Path, resume: bool, may_change: Collection[str] = (),
                     inherit: Collection[str] = ()) -> None:
    """Refuse to start a run in a folder that holds one (``last.pt``) unless ``resume``, and to resume
    with settings other than the folder's ``config.yaml``, except the keys in ``may_change`` (how
    long and where a run goes on, not what it learns). Keys in ``inherit`` that are unset (null) now
    take the run's value, so that a resume need not repeat what only the start reads (the initial
    weights) and ``config.yaml`` keeps recording it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a run folder")
    if not resume:
        if (out / "last.pt").exists():
            raise InputError(f"--out {out}: holds a run already (last.pt); pass --resume to continue it, or choose another folder")
        return
    if not (out / "last.pt").is_file():
        raise InputError(f"--resume: {out / 'last.pt'} not found")
    saved = flatten(to_dict(load_config(type(config), out / "config.yaml")))
    for key in inherit:
        *sections, name = key.split(".")
        section = functools.reduce(getattr, sections, config)
        if getattr(section, name) is None:
            setattr(section, name, saved.get(key))
    now = flatten(to_dict(config))
    for key in sorted(saved.keys() | now.keys()):
        if key not in may_change and saved.get(key) != now.get(key):
            raise InputError(
                f"--resume: {key} is {now.get(key)!r} now but {saved.get(key)!r} in {out / 'config.yaml'}; resume with the run's settings"
            )
