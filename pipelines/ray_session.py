"""Starting or joining Ray for the ``curate``, ``precompute`` and ``train`` jobs, detached from the terminal.

Ray's processes (GCS, raylet, workers) inherit the driver's stdin, and workers run outside the terminal's
foreground process group. A child of a worker that reads stdin from the terminal, such as the ``ffmpeg -v
quiet`` PySceneDetect runs at import to look for ffmpeg, is stopped by SIGTTIN and the job never ends.
``detach_stdin`` points fd 0 at ``/dev/null`` before Ray starts, so nothing Ray starts can read the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from curation.errors import ConfigError


def detach_stdin() -> None:
    """Replace a terminal on fd 0 by ``/dev/null`` (inherited by every process started later); no-op otherwise.
    Ctrl-C still works: SIGINT comes from the terminal's foreground process group, not from stdin."""
    try:
        if not os.isatty(0):
            return
    except OSError:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


@contextlib.contextmanager
def interrupt_kept() -> Iterator[None]:
    """Ctrl-C inside the block ends it as interrupted, even where Ray drops the ``KeyboardInterrupt``.

    SIGINT raises ``KeyboardInterrupt`` in the driver's main thread wherever it is; raised inside some of Ray's
    Cython callbacks it is printed as "Exception ignored" and dropped, and a Ray Data job runs on to its end
    as if nothing had been typed (ray-project/ray#7734; seen here as a ``curate`` typed Ctrl-C at that moment
    ending with status 0). The handler also records the interrupt, and the block raises ``KeyboardInterrupt``
    when it ends, so the exit status and message still say the run was interrupted (a rerun resumes from
    what was committed). Outside the main thread (where handlers cannot be set) a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    typed = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        typed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if typed.is_set():
        raise KeyboardInterrupt


def start_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Join the cluster at ``address`` / ``RAY_ADDRESS``, else start a local Ray (``init_kwargs`` go to
    ``ray.init``); a no-op when Ray is already initialised. Stdin is detached first (see the module)."""
    import ray

    if ray.is_initialized():
        return
    detach_stdin()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **init_kwargs)
        return
    init_kwargs.setdefault("logging_level", logging.WARNING)
    ray.init(**init_kwargs)


def require_resources(what: str, cpus: float = 0, gpus: float = 0, address: str | None = None) -> None:
    """Raise ``ConfigError`` when the Ray cluster ``start_ray(address)`` would use has fewer CPUs or GPUs in
    total than ``what`` needs (Ray would wait for them forever). Checked without starting Ray: the running
    cluster's resources, else this machine's (a local Ray takes all of them). A cluster joined by address
    may scale up, so it is not checked."""
    import ray

    if ray.is_initialized():
        have = ray.cluster_resources()
    elif address or os.environ.get("RAY_ADDRESS"):
        return
    else:
        import torch

        try:  # what ray.init counts: the CPUs this process may use, within a container's CPU quota
            from ray._private.utils import get_num_cpus
        except ImportError:
            get_num_cpus = os.cpu_count
        have = {"CPU": get_num_cpus(), "GPU": torch.cuda.device_count()}
    for name, need in (("CPU", cpus), ("GPU", gpus)):
        if need > have.get(name, 0):
            raise ConfigError(
                f"{what} needs {need:g} {name}s but this Ray cluster has {have.get(name, 0):g}; ask for fewer "
                f"(or join a larger cluster with RAY_ADDRESS)"
            )
