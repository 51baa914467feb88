"""A real Ray head on loopback and ``ray job submit`` of a small curation job; the cluster-launcher config."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from filmweaver_testing.films import make_film
from pipelines.ray_procs import ray_processes, stop_processes

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head`` on 127.0.0.1 with its own temp dir; every process it started is stopped after."""
    temp = tempfile.mkdtemp(prefix="fwray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = free_port(), free_port()
    # token auth guards clusters reachable from a network; this head listens on loopback only
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [RAY, "start", "--head", f"--temp-dir={temp}", f"--port={port}", "--node-ip-address=127.0.0.1"]
    cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2"]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        stop_processes(ray_processes(temp))
        shutil.rmtree(temp, ignore_errors=True)
    assert not ray_processes(temp)


def test_job_submit_curates(ray_head, tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    make_film(films / "a.mp4", seed=4, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.2))
    workdir = tmp_path / "job"  # the job ships only the code it runs
    for pkg in ("curation", "pipelines"):
        shutil.copytree(ROOT / pkg, workdir / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    sets = ["embed.backend=fallback", "video.analysis_short_side=96", "export.short_side=96", "filters.faces=false"]
    job = [sys.executable, "-m", "pipelines.curate", str(films), "--out", str(out)]
    job += [a for s in sets for a in ("--set", s)]
    submit = [RAY, "job", "submit", "--address", ray_head["address"], "--working-dir", str(workdir), "--", *job]
    proc = subprocess.run(submit, env=ray_head["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "curated with the ray engine" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == "ray" and run["ray"]["address"] != "local" and run["counts"]["videos_ok"] == 1
    scenes = pq.read_table(out / "manifests" / "scenes.parquet").to_pylist()
    index = json.loads((out / "index.json").read_text())["shards"]
    assert run["counts"]["samples"] == sum(s["shard"] is not None for s in scenes) == sum(s["nsamples"] for s in index)
    assert run["counts"]["samples"] >= 1
    assert all((out / s["url"]).is_file() for s in index)


def test_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "pipelines" / "configs" / "cluster.yaml").read_text()))
    validate_config(config)
    types = config["available_node_types"]
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    assert any("pip install" in c and "filmweaver" in c for c in config["setup_commands"])
