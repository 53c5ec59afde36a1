"""Data parallel training started by ``torchrun``: one process per device, gloo on CPU, NCCL on CUDA.

Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a single-process
no-op, so that loops call the same functions either way. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gmim.engine.device import resolve_device

__all__ = ["DistributedContext", "all_reduce_mean", "gather_objects", "init_distributed", "unwrap", "wrap_ddp"]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job and the device it owns."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


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
    return DistributedContext(device, dist.get_rank(), world_size, local_rank)


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


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not context.is_distributed:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out
