"""SIGKILL a curation run at four moments, run again: the dataset equals an uninterrupted run's.

Local engine (fast, and the kill moments are exact: a wrapper process SIGKILLs itself from inside the shard
writer); then the Ray engine's driver and its whole local Ray are killed once a shard has been committed,
and a Ray run resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from curation.config import load_config
from curation.journal import read_journal
from filmweaver_testing.films import make_film
from pipelines.local import run_local
from pipelines.ray_procs import ray_processes, stop_processes

# Runs the CLI with the shard writer patched to SIGKILL this process at one moment.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from curation import finalize, shard_writer

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    moment = sys.argv[1]
    if moment == "after-first-commit":
        commit = shard_writer.ShardWriter.commit
        def patched(self):
            info = commit(self)
            if info is not None:
                die()
            return info
        shard_writer.ShardWriter.commit = patched
    elif moment == "mid-shard":  # a sample into the second shard, before it is complete
        write = shard_writer.ShardWriter.write
        def patched(self, sample):
            name = write(self, sample)
            if self.committed:
                die()
            return name
        shard_writer.ShardWriter.write = patched
    elif moment == "every-n-videos":  # shards never fill up: only the commits every video keep the work
        from curation import journal
        add = journal.DatasetWriter.add
        def patched(self, result):
            add(self, result)
            if len(self.parts) == 2:
                die()
        journal.DatasetWriter.add = patched
    elif moment == "finalize":  # manifests merged, index.json and run.json not yet written
        write_json = finalize._write_json
        def patched(path, obj):
            if path.endswith("index.json"):
                die()
            write_json(path, obj)
        finalize._write_json = patched
    from pipelines.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.fixture(scope="module")
def settings(small_settings) -> list[str]:
    return [*small_settings, "shards.max_bytes=60000"]  # several shards per run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    for seed in (5, 6, 7, 8):
        make_film(d / f"film{seed}.mp4", seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
    return sorted(str(p) for p in d.glob("*.mp4"))


@pytest.fixture(scope="module")
def reference(inputs, settings, dataset_view, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_local(inputs, str(out), load_config(None, settings))
    view = dataset_view(out)
    assert len(view[1]) >= 4 and len(json.loads((out / "index.json").read_text())["shards"]) >= 3
    return view


def curate_args(inputs: list[str], out: Path, engine: str, settings: list[str]) -> list[str]:
    return ["curate", *inputs, "--out", str(out), "--engine", engine, *[a for s in settings for a in ("--set", s)]]


@pytest.mark.parametrize("moment", ["after-first-commit", "mid-shard", "every-n-videos", "finalize"])
def test_local_kill_and_resume(moment, inputs, settings, reference, dataset_view, tmp_path):
    out = tmp_path / "out"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    if moment == "every-n-videos":
        settings = [*settings, "shards.max_bytes=1000000000", "shards.commit_videos=1"]
    proc = subprocess.run(
        [sys.executable, str(killer), moment, *curate_args(inputs, out, "local", settings)],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    finished = read_journal(str(out)).finished
    if moment == "finalize":
        assert len(finished) == len(inputs) and not (out / "index.json").exists()
    elif moment == "every-n-videos":
        assert len(finished) == 2 and not list((out / "shards").glob("*.tmp"))  # what it committed, kept
    else:
        assert 0 < len(finished) < len(inputs)
        if moment == "mid-shard":
            assert list((out / "shards").glob("*.tar.tmp"))  # a partial shard was left behind
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *curate_args(inputs, out, "local", settings)], timeout=300
    )
    assert proc.returncode == 0
    assert dataset_view(out) == reference


def test_ray_kill_and_resume(inputs, settings, reference, dataset_view, tmp_path):
    """Kill the Ray driver and its whole local Ray once a shard is committed; a Ray run resumes."""
    out = tmp_path / "out"
    ray_tmp = Path(f"/tmp/fwk-{os.getpid()}")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "pipelines.curate", *curate_args(inputs, out, "ray", settings)[1:]]
    cmd = [c for c in cmd if c not in ("--engine", "ray")] + ["--num-cpus", "2", "--videos-per-write", "1"]
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while not list((out / "shards").glob("*.tar")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        stop_processes({proc.pid} | ray_processes(str(ray_tmp)), grace_s=0)  # the driver and every process of its Ray
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert 0 < len(read_journal(str(out)).finished) < len(inputs)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "already done" in proc.stdout
    finally:
        stop_processes(ray_processes(str(ray_tmp)))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert dataset_view(out) == reference
