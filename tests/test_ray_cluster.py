"""A two-node Ray cluster on loopback: node loss, a video that kills its worker, a local output not shared.

One cluster serves the module: ``ray start --head`` on 127.0.0.2 and a second ``ray start --address`` on
127.0.0.3, each with one CPU and its own temp dir, stopped by process id. Jobs are ``python -m
pipelines.curate --address`` drivers in subprocesses. The node-kill test runs last: it kills the worker node.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curation.config import load_config
from curation.video import content_id
from filmweaver_testing.films import make_film
from pipelines.local import run_local
from pipelines.ray_attempts import TESTING_CRASH_ENV
from pipelines.ray_nodes import TESTING_UNSHARED_ENV
from pipelines.ray_procs import ray_processes, stop_processes

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
POISON = "poison-"  # inputs whose name holds this SIGKILL their worker (testing hook, set on both nodes)
HEAD, WORKER = "127.0.0.2", "127.0.0.3"


def _start(args: list[str], env: dict[str, str], temp: str) -> None:
    cmd = [RAY, "start", f"--temp-dir={temp}", "--num-cpus=1", "--object-store-memory=150000000", *args]
    cmd += ["--disable-usage-stats"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head and worker node; the worker node sees paths under ``unshared`` as absent (testing hook)."""
    unshared = tmp_path_factory.mktemp("unshared")
    temps = [tempfile.mkdtemp(prefix=p, dir="/tmp") for p in ("fwh-", "fww-")]  # short: socket path limit
    with socket.socket() as s:
        s.bind((HEAD, 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # token auth guards clusters reachable from a network: these are loopback
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(ROOT),  # workers import this checkout's pipelines and curation
        TESTING_CRASH_ENV: POISON,
        # a dead node is noticed in ~2 s instead of ~15 s
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "500",
        "RAY_health_check_failure_threshold": "3",
    }
    try:
        _start(["--head", f"--port={port}", f"--node-ip-address={HEAD}", "--include-dashboard=false"], env, temps[0])
        worker_env = {**env, TESTING_UNSHARED_ENV: str(unshared)}
        _start([f"--address={HEAD}:{port}", f"--node-ip-address={WORKER}"], worker_env, temps[1])
        yield {"address": f"{HEAD}:{port}", "env": env, "worker_temp": temps[1], "unshared": unshared}
    finally:
        for temp in reversed(temps):
            stop_processes(ray_processes(temp))
            shutil.rmtree(temp, ignore_errors=True)
    assert not any(ray_processes(t) for t in temps)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    paths = []
    for seed in (1, 2, 3, 4):
        path = str(d / f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.2))
        paths.append(path)
    return paths


def curate(cluster, inputs: list[str], out: Path, settings: list[str], *extra: str) -> subprocess.Popen:
    """A ``python -m pipelines.curate`` driver joining the cluster, started in the background."""
    cmd = [sys.executable, "-m", "pipelines.curate", *inputs, "--out", str(out), "--address", cluster["address"]]
    cmd += [a for s in settings for a in ("--set", s)] + list(extra)
    return subprocess.Popen(
        cmd, env=cluster["env"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_local_output_not_seen_by_every_node_is_refused(cluster, films, small_settings):
    """Both nodes share this machine's disk; a testing hook makes the worker node treat paths under
    ``unshared`` as absent. This shows that the probe runs on every node, that a node which cannot see the
    output folder or an input is named, and that the run is refused before anything is written. It does
    not exercise a real unshared disk."""
    out = cluster["unshared"] / "out"
    hidden_input = cluster["unshared"] / "film.mp4"
    shutil.copyfile(films[0], hidden_input)
    rc, log = finish(curate(cluster, [str(hidden_input), films[1]], out, small_settings))
    assert rc == 2, log[-3000:]
    assert "filmweaver: error: a local path is not shared by every node" in log
    assert f"node {WORKER}" in log and f"cannot see the output folder {out}" in log
    assert "cannot see 1 of the 2 local inputs checked" in log and f"node {HEAD}" not in log
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing written


def test_video_that_kills_its_worker_is_quarantined_on_the_cluster(cluster, films, small_settings, tmp_path):
    poison = tmp_path / f"{POISON}film.mp4"
    make_film(poison, seed=11, n_scenes=1, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.0))
    out = tmp_path / "out"
    rc, log = finish(curate(cluster, [str(poison), films[0]], out, small_settings, "--max-failures", "2"))
    assert rc == 0, log[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["videos_ok"] == 1 and run["ray"]["quarantined_videos"] == 1
    assert run["ray"]["worker_crashes"] == 2 and run["ray"]["failed_videos"] == 0
    rejects = {r["item_id"]: r for r in _rows(out / "manifests" / "rejects.parquet")}
    assert rejects[content_id(str(poison))]["reason"] == "quarantined"


def test_worker_node_killed_mid_run_output_equals_local(cluster, films, small_settings, dataset_view, tmp_path):
    local = tmp_path / "local"
    run_local(films, str(local), load_config(None, small_settings))
    out = tmp_path / "ray"
    proc = curate(cluster, films, out, [*small_settings, "shards.max_bytes=60000"], "--videos-per-write", "1")
    try:
        busy = _wait_for_stage_task(cluster["worker_temp"], films, timeout=180)
        stop_processes(ray_processes(cluster["worker_temp"]), grace_s=0)  # SIGKILL the whole worker node
        rc, log = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert busy, "the worker node never ran a stage task"
    assert rc == 0, log[-3000:]
    assert dataset_view(out) == dataset_view(local)
    ray_info = json.loads((out / "run.json").read_text())["ray"]
    assert {n["ip"] for n in ray_info["nodes_worked"]} == {HEAD, WORKER}  # the lost node is still named
    # the killed node's in-flight attempts count as node losses, never as crashes charged to a video (whether an
    # attempt was in flight at the kill depends on timing, so node_losses itself is not asserted)
    assert ray_info["nodes"] == 1
    assert ray_info["worker_crashes"] == ray_info["quarantined_videos"] == ray_info["failed_videos"] == 0


def _wait_for_stage_task(temp: str, inputs: list[str], timeout: float) -> bool:
    """Wait until a process of the node started with ``temp`` has one of ``inputs`` open: a stage task is
    decoding it (stage tasks tell the run's ledger of a video before they open it)."""
    wanted = {os.path.realpath(p) for p in inputs}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in ray_processes(temp):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return True
                except OSError:
                    continue
        time.sleep(0.05)
    return False


def _rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
