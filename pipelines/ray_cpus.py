"""CPUs per video in the Ray engine: what each video's stage tasks ask Ray for, and the threads they then run.

Ray gives a task the CPUs it asks for, and the stages size their thread pools from them: TransNetV2 and MTCNN
run on torch's threads, text detection on ``OMP_NUM_THREADS`` (``curation.threads.cpu_threads``). Ray sets
``OMP_NUM_THREADS`` only when it starts a worker process, from the first task the worker runs, and reuses
workers for tasks of other sizes; ``task_threads`` sets both from the running task's own CPUs instead.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator


def video_cpus(node_cpus: list[float], videos: int) -> int:
    """CPUs each stage task of a video asks for: the largest ``k`` such that the nodes hold a ``k``-CPU slot
    for every one of the run's ``videos`` at once (``sum(floor(cpus / k)) >= videos``), at least 1.

    With as many videos as CPUs or more this is 1: every core busy with its own video. With fewer, a video
    gets the cores that would otherwise sit idle, so one long video on a laptop no longer runs its models
    on one core. Counting slots per node keeps every task placeable: 3 videos on nodes of 2 and 64 CPUs ask
    for 21 each (all on the big node), not 22, of which only two would fit."""
    nodes = [int(c) for c in node_cpus if c >= 1]
    if not nodes or videos < 1:
        return 1
    for k in range(min(max(nodes), sum(nodes) // videos), 1, -1):
        if sum(n // k for n in nodes) >= videos:
            return k
    return 1


@contextlib.contextmanager
def task_threads() -> Iterator[int | None]:
    """Inside a Ray task: ``OMP_NUM_THREADS`` and torch's threads (when the stages imported torch) set to the
    task's CPUs (floor, at least 1) for the block, then restored; yields that count, or None outside a Ray
    worker (a local run), where nothing changes."""
    import ray

    cpus = None
    if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if not cpus:
        yield None
        return
    n = max(1, math.floor(cpus))
    torch = sys.modules.get("torch")
    before_torch, before_env = torch.get_num_threads() if torch else None, os.environ.get("OMP_NUM_THREADS")
    if torch:
        torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield n
    finally:
        if torch:
            torch.set_num_threads(before_torch)
        if before_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before_env
