"""Ctrl-C and SIGTERM end a run cleanly: the step in flight finishes, a checkpoint is written, and
the run can go on with ``--resume``. A second signal stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "StopRequest", "stop_requests"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run ended by a signal after saving its state; the command exits with 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """The first SIGINT or SIGTERM received, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Within the block, a first Ctrl-C or SIGTERM only sets the yielded request, which the loop
    honours at the end of the step; a second one raises :class:`KeyboardInterrupt` at once."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
