"""The run folder's guard: no run overwrites another or runs beside it, and a resumed run keeps the
settings it started with."""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gmim.config import flatten, load_config, to_dict
from gmim.errors import InputError
from gmim.methods import run_method

__all__ = ["RunLock", "check_run_folder"]

LOCK_NAME = ".gmim.lock"


def _require_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a run folder")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``<run folder>/.gmim.lock`` for a run's life: a second run into the same folder is refused,
    naming the process that holds it. A lock left by a killed process (on this host) is taken over."""

    def __init__(self, folder: Path, command: str) -> None:
        self.path, self.command = folder / LOCK_NAME, command
        self.held = False

    def acquire(self) -> None:
        _require_folder(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(holder, file)
            self.held = True
            return
        raise InputError(f"--out {self.path.parent}: could not lock the run folder ({self.path})")

    def _take_over_if_stale(self) -> None:
        try:
            other = json.loads(self.path.read_text())
            pid, host = int(other["pid"]), str(other["host"])
        except (OSError, ValueError, KeyError, TypeError):
            other, pid, host = {}, -1, socket.gethostname()  # unreadable: written by a process killed mid-write
        if pid > 0 and (host != socket.gethostname() or _alive(pid)):
            raise InputError(
                f"--out {self.path.parent}: in use by gmim {other.get('command', '?')} (process {pid} on {host}, "
                f"since {other.get('since', '?')}); wait for it to end or choose another folder"
            )
        print(f"note: {self.path} was left by a process that has ended; taking it over", file=sys.stderr)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def check_run_folder(config: Any, out: Path, resume: bool, may_change: Collection[str] = (), inherit: Collection[str] = ()) -> None:
    """Refuse to start a run in a folder that holds one (``last.pt``) unless ``resume``, and to resume
    with settings other than the folder's ``config.yaml``, except the keys in ``may_change`` (how
    long and where a run goes on, not what it learns). Keys in ``inherit`` that are unset (null) now
    take the run's value, so that a resume need not repeat what only the start reads (the initial
    weights) and ``config.yaml`` keeps recording it."""
    _require_folder(out)
    if not resume:
        if (out / "last.pt").exists():
            raise InputError(f"--out {out}: holds a run already (last.pt); pass --resume to continue it, or choose another folder")
        return
    if not (out / "last.pt").is_file():
        raise InputError(f"--resume: {out / 'last.pt'} not found")
    saved_method, method = run_method(out / "config.yaml"), getattr(config, "method", None)
    if saved_method is not None and method is not None and saved_method.name != method:
        raise InputError(f"--resume: {out} holds a {saved_method.title} run; resume it with {saved_method.title}")
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
