"""Reading a PyTorch checkpoint that may come from anywhere, without running code.

``torch.load(..., weights_only=True)`` unpickles tensors, containers and plain values only; a file
that holds anything else is refused, naming what it holds. Every command reads weights through
:func:`load_checkpoint`, its own checkpoints included, so that a checkpoint swapped into a run
folder cannot run code either.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from gmim.errors import InputError

__all__ = ["load_checkpoint"]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict read with ``weights_only=True``; unreadable or foreign files → InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # PyTorch's message advises weights_only=False: not here
        refused = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(error), re.IGNORECASE)
        if refused is None:
            raise InputError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from error
        raise InputError(
            f"{path}: refused: it holds {refused.group(1)}, not only tensors and plain values; "
            "gmim loads weights only, so that no checkpoint can run code"
        ) from error
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from error
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: expected a checkpoint dictionary, got {type(checkpoint).__name__}")
    return checkpoint
