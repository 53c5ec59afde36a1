"""The training settings every method shares (``train.*`` in each command's configuration).

One meaning for both commands: ``batch_size`` is the global batch (volumes per optimizer step over
all processes), the length is ``steps`` or ``epochs`` (passes over the training volumes), and every
``*_every`` interval counts optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from gmim.resources import cores_per_process
from gmim.rules import (
    Section,
    SettingError,
    at_least,
    between,
    matches,
    positive,
    setting,
)

__all__ = ["DEVICE", "MAX_DEFAULT_WORKERS", "LoopConfig"]

#: Loader workers by default at most: 8 keep a GPU's 150 ms step fed (docs/results.md, "The loader").
MAX_DEFAULT_WORKERS = 8

#: The devices a run may name; whether this machine has it is asked when the run starts.
DEVICE = matches(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps", outside=("", "gpu", "cuda:-1"))


@dataclass
class LoopConfig(Section):
    #: Length of training: ``steps`` (optimizer steps) or ``epochs`` (passes over the training
    #: volumes), exactly one of them.
    steps: int | None = setting(None, at_least(1))
    epochs: int | None = setting(None, at_least(1))
    #: Volumes per optimizer step over all processes (a multiple of the number of processes).
    batch_size: int = setting(2, at_least(1))
    lr: float = setting(1e-4, positive())
    weight_decay: float = setting(1e-5, at_least(0))
    #: Linear warm-up steps before the cosine decay (at most half the run).
    warmup_steps: int = setting(50, at_least(0))
    #: Clip the gradient norm to this (null: no clipping).
    grad_clip: float | None = setting(None, positive())
    mixed_precision: bool = True
    #: Compile the trained module with ``torch.compile`` (the first steps then take minutes); the
    #: weights, checkpoints and exports are those of the module itself.
    compile: bool = False
    #: Validate every this many steps and at the end; 0: only at the end; null: every twentieth of
    #: the run, or less often where a validation would cost more than 5 % of the training compute.
    validate_every: int | None = setting(None, at_least(0))
    #: Save the resumable ``last.pt`` every this many steps (and at the end; 0: only at the end).
    checkpoint_every: int = setting(500, at_least(0))
    #: Record the training scalars (means over the steps since the last record) every this many steps.
    log_every: int = setting(10, at_least(1))
    #: Stop (with ``last.pt`` saved) after this step, to go on later with ``--resume``: for jobs with
    #: a time limit. The schedule still runs to the full length.
    stop_after: int | None = setting(None, at_least(1))
    #: Seeds PyTorch, NumPy and the loader's workers (which take 32-bit seeds).
    seed: int = setting(0, between(0, 2**32 - 1))
    #: Deterministic kernels, so that reruns and resumed runs repeat bit for bit: true, false, or
    #: null for "on the CPU only" (cheap there; on a GPU some kernels slow down).
    deterministic: bool | None = None
    device: str = setting("auto", DEVICE)
    #: Data-loading worker processes (0: load in the training process; null: the cores this process
    #: may use, shared among the processes of a machine, at most :data:`MAX_DEFAULT_WORKERS`).
    workers: int | None = setting(None, at_least(0))

    def check(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise SettingError(
                "steps",
                self.steps,
                "must be set when train.epochs is null and null when it is set (one length: --steps or --epochs)",
                related=["epochs"],
            )

    def loader_workers(self) -> int:
        """``workers``, or its default: never more processes than the machine has cores."""
        if self.workers is not None:
            return self.workers
        return min(MAX_DEFAULT_WORKERS, cores_per_process())
