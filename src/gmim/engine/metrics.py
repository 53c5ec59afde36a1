"""``metrics.jsonl``: one JSON record per logged step, kept consistent with the checkpoint a run
resumes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gmim.atomic import atomic_path
from gmim.errors import InputError

__all__ = ["MetricsLog", "read_metrics"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line cut short by a kill is dropped; any other
    unreadable line is an error naming the file and the line."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise InputError(f"{path}: line {number} is not a JSON record ({error.msg})") from error
    return records


class MetricsLog:
    """Appends records on rank 0; on resume, drops the records after the step resumed from."""

    def __init__(self, path: Path, resumed_step: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if not enabled:
            return
        if path.is_file():
            self.records = [r for r in read_metrics(path) if r.get("step", 0) <= resumed_step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.records.append(record)
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
