"""What a run shows and records: a tqdm progress bar (with the time left) and TensorBoard scalars,
on rank 0 only."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["Progress"]


class Progress:
    """A step progress bar showing the latest scalars, mirrored to TensorBoard under ``log_dir``."""

    def __init__(self, total: int, initial: int = 0, log_dir: Path | None = None, enabled: bool = True, desc: str = "") -> None:
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)
        self.writer = None
        if enabled and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def update(self) -> None:
        """One step done."""
        self.bar.update(1)

    def scalars(self, step: int, scalars: dict[str, float], show: bool = False) -> None:
        """Record ``scalars`` at ``step`` (and show them on the bar)."""
        if show:
            self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in scalars.items()}, refresh=False)
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)

    def write(self, message: str) -> None:
        """A line above the bar (rank 0 only)."""
        if self.enabled:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
