"""Per-video attempt accounting for the Ray executor: a worker crash is charged to the video that caused it.

Ray retries a task whose worker process died, and Ray Data retries its tasks forever by default, so a video
that kills its worker every time (a decoder segfault, an out-of-memory kill) would keep a run from ending.
Every stage task reports each video it starts and finishes to the run's ``AttemptLedger``, one actor pinned
to the driver's node. When a video starts again while an earlier attempt never finished, that attempt died
with its worker: if its node is still alive the death is charged to the video as a crash; if the node is gone
it was a node loss (Ray re-runs the tasks a dead node held), charged to no one. Ray may re-run a lost node's
task before it has noticed the node is gone, so a crash charged on a node that is dead by the end of the run
is turned back into a node loss in ``report``. Once a video has caused
``max_failures`` crashes its next attempt runs no stage: the task returns it rejected with reason
``quarantined`` and the crash history, so it is journaled in the same run, and the run ends. Ray's own task
retries are bounded as a backstop (``task_retries``). A crash in a batch of several videos (the LLM actor
pool takes 8 at a time) is charged to each of them: the ledger cannot tell which one caused it.

The ledger also records which nodes did stage work and how busy the stage tasks kept them (``report``), for
``run.json``.

Testing hook: ``FILMWEAVER_TESTING_CRASH_URI`` in the environment of the Ray workers makes a stage task
SIGKILL its own worker process when the video's uri contains that text (``testing_crash_hook``), standing in
for a decoder segfault or an out-of-memory kill. Nothing else reads it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from collections import Counter
from typing import Any

TESTING_CRASH_ENV = "FILMWEAVER_TESTING_CRASH_URI"
NODE_LOSS_RETRIES = 4  # task retries beyond max_failures, for attempts lost with their node


def task_retries(max_failures: int) -> int:
    """Ray ``max_retries`` of a stage task: the ledger quarantines after ``max_failures`` crashes, so this
    only ends a video's retries when its nodes keep dying (then it is retried in the next run)."""
    return max_failures + NODE_LOSS_RETRIES


def testing_crash_hook(uri: str) -> None:
    """Test-only: SIGKILL this process if ``$FILMWEAVER_TESTING_CRASH_URI`` is set and occurs in ``uri``."""
    marker = os.environ.get(TESTING_CRASH_ENV)
    if marker and marker in uri:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class _Attempt:
    group: str
    node_id: str
    node_ip: str
    pid: int
    started: float


class AttemptLedger:
    """Attempts of each video in one run (a Ray actor; see the module docstring). Holds the attempts in
    flight and counters, so its memory follows the tasks running, not the size of the archive.

    ``begin`` returns ``None`` to go ahead or the quarantine detail; ``end`` closes the attempts."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        self.running: dict[str, list[_Attempt]] = {}
        self.crashes: dict[str, list[str]] = {}
        self.charged: list[tuple[str, str, str]] = []  # (video, node, crash) charged while its node looked alive
        self.node_losses = 0
        self.quarantined: dict[str, str] = {}
        self.node_ips: dict[str, str] = {}
        self.started: Counter[str] = Counter()  # attempts per node
        self.busy: Counter[str] = Counter()  # seconds of closed attempts per node
        self.t0 = time.time()
        self.window = [math.inf, -math.inf]  # first start, last end

    def _alive(self) -> set[str]:
        import ray

        return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}

    def _close(self, a: _Attempt, now: float) -> None:
        self.busy[a.node_id] += now - a.started
        self.window[1] = max(self.window[1], now)

    def begin(self, video_id: str, group: str, node_id: str, node_ip: str, pid: int) -> str | None:
        now = time.time()
        unfinished = self.running.pop(video_id, [])
        alive = self._alive() if unfinished else set()
        for a in unfinished:
            self._close(a, now)
            if a.node_id in alive:
                crash = f"worker {a.pid} on node {a.node_ip} died in stages {a.group} after {now - a.started:.1f} s"
                self.crashes.setdefault(video_id, []).append(crash)
                self.charged.append((video_id, a.node_id, crash))
            else:
                self.node_losses += 1
        crashes = self.crashes.get(video_id, [])
        if len(crashes) >= self.max_failures:
            detail = (
                f"its worker process died in {len(crashes)} attempts (a crash or an out-of-memory kill; the "
                f"Ray logs of the nodes say which); not retried: {'; '.join(crashes[-3:])}"
            )
            self.quarantined[video_id] = detail
            return detail
        self.running.setdefault(video_id, []).append(_Attempt(group, node_id, node_ip, pid, now))
        self.node_ips[node_id] = node_ip
        self.started[node_id] += 1
        self.window[0] = min(self.window[0], now)
        return None

    def end(self, video_ids: list[str]) -> None:
        now = time.time()
        for vid in video_ids:
            for a in self.running.pop(vid, []):
                self._close(a, now)

    def report(self) -> dict[str, Any]:
        """Nodes that did stage work (attempts and busy seconds each), crashes, node losses, quarantines.

        A crash charged on a node that is no longer alive was the node's loss, seen before Ray noticed it (a
        quarantine it led to stands: it was decided in the run)."""
        now = time.time()
        alive = self._alive() if self.charged else set()
        for video_id, node_id, crash in self.charged:
            if node_id not in alive:
                self.crashes[video_id].remove(crash)
                self.node_losses += 1
        self.crashes = {v: c for v, c in self.crashes.items() if c}
        self.charged = [c for c in self.charged if c[1] in alive]
        busy = Counter(self.busy)
        for attempts in self.running.values():  # attempts still open at the end: lost with their task
            for a in attempts:
                busy[a.node_id] += now - a.started
        nodes = [
            {"node_id": n, "ip": self.node_ips[n], "stage_attempts": self.started[n], "stage_busy_s": round(busy[n], 3)}
            for n in sorted(self.started, key=lambda n: (self.node_ips[n], n))
        ]
        window = [min(self.window[0], now), self.window[1] if self.window[1] > -math.inf else now]
        return {
            "nodes_worked": nodes,
            "stage_busy_s": round(sum(busy.values()), 3),
            "seconds": round(now - self.t0, 3),
            "stage_window": [round(t, 3) for t in window],  # first stage start, last stage end (Unix time)
            "crashes": {v: c for v, c in sorted(self.crashes.items())},
            "node_losses": self.node_losses,
            "quarantined": sorted(self.quarantined),
        }


class AttemptGuard:
    """The worker side of the ledger: wraps a stage task's videos in ``begin`` / ``end`` calls."""

    def __init__(self, ledger: Any, group: str):
        import ray

        self.ledger, self.group = ledger, group
        ctx = ray.get_runtime_context()
        self.node = (ctx.get_node_id(), ray.util.get_node_ip_address(), os.getpid())

    def begin(self, video_id: str) -> str | None:
        """``None`` to process the video, else the reason it is quarantined."""
        import ray

        return ray.get(self.ledger.begin.remote(video_id, self.group, *self.node))

    def end(self, video_ids: list[str]) -> None:
        import ray

        ray.get(self.ledger.end.remote(video_ids))
