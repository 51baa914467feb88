"""Finding and stopping the processes of one local Ray instance by its temp dir (never by a broad name).

``ray stop`` stops every Ray on the machine; these stop only the head started with ``--temp-dir=DIR`` (or
``RAY_TMPDIR=DIR``): the processes whose command line names DIR, and their descendants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def ray_processes(temp_dir: str) -> set[int]:
    """Ids of the processes whose command line names ``temp_dir``, and of all their descendants (Linux)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    mine = {p for p in pids if temp_dir in _cmdline(p)}
    parents = {p: _parent(p) for p in pids}
    grew = True
    while grew:
        children = {p for p in pids if p not in mine and parents[p] in mine}
        mine |= children
        grew = bool(children)
    return mine


def stop_processes(pids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace_s`` (``grace_s=0``: SIGKILL at once)."""
    for sig in (signal.SIGTERM, signal.SIGKILL) if grace_s else (signal.SIGKILL,):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + max(grace_s, 5.0)
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
