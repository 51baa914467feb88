"""Thread counts and thread pools of the stages: how many CPUs this process should use, torch's intra-op
threads for a block, and pools that follow a changing size (a Ray worker runs tasks of different CPU counts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any


class SizedPool:
    """A thread pool made on first use with the size asked for, and made again when a later call asks for
    another size (the CPUs of a Ray task can differ from the last one's)."""

    def __init__(self, name: str):
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._size = 0

    def map(self, fn: Any, items: list[Any], size: int) -> list[Any]:
        """``[fn(x) for x in items]``, ``size`` at once."""
        if self._pool is None or self._size != size:
            self.close()
            self._pool, self._size = ThreadPoolExecutor(size, thread_name_prefix=self.name), size
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        """Stop the threads (a later ``map`` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def cpu_threads() -> int:
    """CPU threads this process should use: ``OMP_NUM_THREADS`` when set (Ray sets it to a worker's CPUs), else the
    CPUs it may run on."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch intra-op CPU threads set to ``n`` for the block and restored after; ``n=0`` leaves them as they are."""
    if n <= 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
