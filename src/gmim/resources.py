"""What this process may use of the machine: cores and memory, as a cluster job or container limits them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cores_per_process", "memory_bytes", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a cluster job or container sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_per_process() -> int:
    """This process's share of the usable cores when torchrun starts several on the machine (at least 1)."""
    return max(1, usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or less where a cgroup (a container, a
    cluster job) limits it."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(physical, int(text))
    return physical
