"""Data parallel training started by ``torchrun``: one process per device, gloo on CPU, NCCL on CUDA.

Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a single-process
no-op, so that loops call the same functions either way. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gmim.engine.device import resolve_device

#: Seconds each process waits after tearing down its process group, before it may exit.
_TEARDOWN_GRACE_S = 0.1

__all__ = ["DistributedContext", "all_reduce_mean", "any_process", "gather_objects", "init_distributed", "unwrap", "wrap_ddp"]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job and the device it owns."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: A gloo process group for host-side agreement (stop requests) without a device synchronisation
    #: (None: the default group, gloo already).
    control: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def shutdown(self, clean: bool = True) -> None:
        """Leave the job; ``clean``: together. A process that exits while a peer is still tearing
        its gloo group down can abort that peer ("terminate called without an active exception",
        about one 2-process job in five on a 2-core machine), so after a clean run all reach the
        end first and each lingers a moment after its own teardown. After an error in one process
        the others may never reach a barrier: leave at once."""
        if self.is_distributed and dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()
            if clean:
                time.sleep(_TEARDOWN_GRACE_S)


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """The context from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    device = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if device.type == "cuda" else None  # None: the default (gloo) group
    return DistributedContext(device, dist.get_rank(), world_size, local_rank, control)


def wrap_ddp(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """``model`` on the context's device, wrapped in DDP when there are several processes."""
    model = model.to(context.device)
    if not context.is_distributed:
        return model
    ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (its state_dict has no ``module.`` prefix)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself when there is one)."""
    if not context.is_distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / context.world_size


def any_process(flag: bool, context: DistributedContext) -> bool:
    """Whether ``flag`` is set in any process: a host-side all-reduce on the gloo group, so that
    asking at every step costs no device synchronisation."""
    if not context.is_distributed:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=context.control)
    return bool(value.item())


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not context.is_distributed:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out
