"""``gmim export``: a run's model as a folder that the field's tools read without gmim.

One module per format (``--format``):

- ``huggingface`` (the default; :mod:`.huggingface`): the Hugging Face Hub layout of a model
  repository: ``model.safetensors``, ``config.json``, the run's ``config.yaml`` and a model card;
  ``gmim predict`` and ``gmim finetune --pretrained`` take it as they take the run;
- ``monai-bundle`` (:mod:`.bundle`): a MONAI Bundle that ``python -m monai.bundle run`` runs,
  writing what ``gmim predict`` writes (fine-tuned models only).

Both read the run the same way (:mod:`.source`) and describe it in the same model card
(:mod:`.card`). The folder is built beside ``out`` and renamed into place: an export that fails
leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gmim.atomic import atomic_folder
from gmim.errors import InputError
from gmim.export.bundle import check_bundle, write_bundle
from gmim.export.huggingface import write_huggingface
from gmim.export.source import RunModel, monai_arguments, read_run

__all__ = ["FORMATS", "Format", "export_run", "monai_arguments"]


def _takes_any(model: RunModel) -> None:
    """A format that holds every run's model."""


@dataclass(frozen=True)
class Format:
    #: Writes the export into an empty folder; returns the paths written, relative to it.
    write: Callable[[RunModel, Path], list[str]]
    #: Refuses, before anything is written, a model the format cannot hold.
    check: Callable[[RunModel], None] = _takes_any


#: ``--format``.
FORMATS = {"huggingface": Format(write_huggingface), "monai-bundle": Format(write_bundle, check_bundle)}


def export_run(run: Path, out: Path, format: str = "huggingface") -> list[str]:
    """Write the export of the run folder ``run`` in ``format`` into ``out``, a new or empty folder;
    returns the paths written, relative to ``out``. Bad input raises :class:`InputError` naming the
    option or path, before anything is written."""
    run, out = Path(run), Path(out)
    if format not in FORMATS:
        raise InputError(f"--format {format}: unknown; one of {', '.join(FORMATS)}")
    _check_out(run, out)
    model = read_run(run)
    FORMATS[format].check(model)
    with atomic_folder(out) as folder:
        return FORMATS[format].write(model, folder)


def _check_out(run: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    if out.resolve() == run.resolve():
        raise InputError(f"--out {out}: is the run folder; export into another folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"--out {out}: exists and is not empty; export into a new or empty folder")
