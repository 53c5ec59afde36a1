"""Atomic file writes: a reader, or an interrupted run, never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The process's umask, read once (reading it means setting it): files written atomically get the
# mode a plain open() would give them, not mkstemp's 0600.
_UMASK = os.umask(0)
os.umask(_UMASK)
#: How atomic_path names its temporaries: ``.<name>.<random>.tmp<suffixes>``.
TEMPORARY_PATTERN = ".*.*.tmp*"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Whatever stood at ``path`` before stays intact if the writer fails or is interrupted. The
    temporary name keeps the suffixes (``.nii.gz``), so writers that look at them still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` in one rename.

    ``path`` must not exist or be an empty folder. If the writer fails or is interrupted, the
    temporary folder is removed and nothing is left at ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if target.is_dir():
            target.rmdir()  # an empty folder gives way; one with something in it raises and stays
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than: float = 0.0) -> list[Path]:
    """Delete the temporaries that killed writes left in ``folder``: all of them while no writer runs
    there (e.g. holding the run lock), or those older than ``older_than`` seconds where writers may
    be at work (no write takes that long); returns what was deleted."""
    now = time.time()
    stale = []
    for path in Path(folder).glob(TEMPORARY_PATTERN):
        try:
            if path.is_file() and now - path.stat().st_mtime >= older_than:
                path.unlink()
                stale.append(path)
        except FileNotFoundError:  # its writer finished or another cleaner was first
            continue
    return stale


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
