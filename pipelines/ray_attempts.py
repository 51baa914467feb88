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
retries are bounded as a backstop (``task_retries``).

A task may hold several videos at once (the LLM actor pool takes 8 per call). When such a task's worker dies,
the ledger cannot tell which video caused it, so it charges none: the batch's videos become suspects, and
from then on each suspect runs alone (``begin`` defers it, and the runner starts it again by itself after
the others of its batch), so the next crash is charged to the video that caused it and only that one can
be quarantined; the innocent videos of the batch finish in the same run.

The ledger also records which nodes did stage work and how busy the stage tasks kept them (``report``), for
``run.json``.

Testing hook: ``FILMWEAVER_TESTING_CRASH_URI`` in the environment of the Ray workers makes a stage task
SIGKILL its own worker process when the video's uri contains one of its texts, optionally only in one stage
group (``testing_crash_hook``), standing in for a decoder segfault or an out-of-memory kill. Nothing else
reads it.
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
    """Ray ``max_retries`` of a stage task: the ledger quarantines after ``max_failures`` crashes (one more
    attempt for a batch crash, which charges no one), so this only ends a video's retries when its nodes keep
    dying (then it is retried in the next run)."""
    return max_failures + 1 + NODE_LOSS_RETRIES


def testing_crash_hook(uri: str, group: str) -> None:
    """Test-only: SIGKILL this process if a marker of ``$FILMWEAVER_TESTING_CRASH_URI`` (comma-separated) occurs
    in ``uri``; a marker ``TEXT@STAGE`` does so only in the stage groups whose name contains ``STAGE``."""
    for marker in filter(None, os.environ.get(TESTING_CRASH_ENV, "").split(",")):
        text, _, stage = marker.partition("@")
        if text in uri and stage in group:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class _Attempt:
    group: str
    node_id: str
    node_ip: str
    pid: int
    started: float
    shared: bool  # begun together with other videos in one task


class AttemptLedger:
    """Attempts of each video in one run (a Ray actor; see the module docstring). Holds the attempts in
    flight and counters, so its memory follows the tasks running, not the size of the archive.

    ``begin`` starts the attempts of a task's videos, or says which are quarantined or must run alone; ``end``
    closes the attempts."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        self.running: dict[str, list[_Attempt]] = {}
        self.crashes: dict[str, list[str]] = {}
        self.charged: list[tuple[str, str, str]] = []  # (video, node, crash) charged while its node looked alive
        self.suspects: set[str] = set()  # videos of a batch whose worker died: they run alone from then on
        self.batch_crashes: dict[tuple[str, int, float], int] = {}  # (node, pid, start) of a batch -> its videos
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

    def begin(self, video_ids: list[str], group: str, node_id: str, node_ip: str, pid: int) -> dict[str, Any]:
        """Start the attempts of the videos one task holds. An earlier attempt of one of them that never ended
        died: charged to the video as a crash when it ran alone on a node still alive, charged to no one when
        it shared its task (the videos become suspects) or its node is gone.

        Returns ``started`` (video ids that go ahead, together), ``alone`` (suspects deferred: to be begun one
        by one after the others) and ``quarantined`` (video id -> the crash history of a video that caused
        ``max_failures`` crashes: it runs no stage)."""
        now = time.time()
        unfinished = {vid: self.running.pop(vid, []) for vid in video_ids}
        alive = self._alive() if any(unfinished.values()) else set()
        for vid, attempts in unfinished.items():
            for a in attempts:
                self._close(a, now)
                if a.node_id not in alive:
                    self.node_losses += 1
                elif a.shared:
                    self.suspects.add(vid)
                    key = (a.node_id, a.pid, a.started)
                    self.batch_crashes[key] = self.batch_crashes.get(key, 0) + 1
                else:
                    crash = f"worker {a.pid} on node {a.node_ip} died in stages {a.group} after {now - a.started:.1f} s"
                    self.crashes.setdefault(vid, []).append(crash)
                    self.charged.append((vid, a.node_id, crash))
        quarantined = {}
        for vid in video_ids:
            crashes = self.crashes.get(vid, [])
            if len(crashes) >= self.max_failures:
                quarantined[vid] = (
                    f"its worker process died in {len(crashes)} attempts (a crash or an out-of-memory kill; the "
                    f"Ray logs of the nodes say which); not retried: {'; '.join(crashes[-3:])}"
                )
        self.quarantined.update(quarantined)
        rest = [vid for vid in video_ids if vid not in quarantined]
        alone = [vid for vid in rest if vid in self.suspects] if len(rest) > 1 else []
        started = [vid for vid in rest if vid not in alone]
        for vid in started:
            self.running.setdefault(vid, []).append(_Attempt(group, node_id, node_ip, pid, now, len(started) > 1))
        if started:
            self.node_ips[node_id] = node_ip
            self.started[node_id] += len(started)
            self.window[0] = min(self.window[0], now)
        return {"started": started, "alone": alone, "quarantined": quarantined}

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
        alive = self._alive() if self.charged or self.batch_crashes else set()
        for video_id, node_id, crash in self.charged:
            if node_id not in alive:
                self.crashes[video_id].remove(crash)
                self.node_losses += 1
        lost = {key: videos for key, videos in self.batch_crashes.items() if key[0] not in alive}  # with its node
        self.node_losses += sum(lost.values())
        self.batch_crashes = {key: videos for key, videos in self.batch_crashes.items() if key not in lost}
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
            "batch_crashes": len(self.batch_crashes),  # deaths of a worker holding several videos, charged to none
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

    def begin(self, video_ids: list[str]) -> dict[str, Any]:
        """``AttemptLedger.begin`` of these videos, from this worker."""
        import ray

        return ray.get(self.ledger.begin.remote(video_ids, self.group, *self.node))

    def end(self, video_ids: list[str]) -> None:
        import ray

        ray.get(self.ledger.end.remote(video_ids))
