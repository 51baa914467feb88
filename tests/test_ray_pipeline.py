"""The Ray executor against the local executor on tiny synthetic films (one local Ray session, 2 CPUs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from curation.config import load_config
from curation.synthetic import make_film
from pipelines.curate import plan_groups, run_ray
from pipelines.local import run_local
from pipelines.output import DatasetOutput


@pytest.fixture(scope="module")
def settings(small_settings) -> list[str]:
    return [*small_settings, "shards.max_bytes=60000"]  # several shards per run


@pytest.fixture(scope="module")
def config(settings):
    return load_config(None, settings)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    paths = []
    for seed in (1, 2, 3):
        path = str(d / f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
        paths.append(path)
    (d / "broken.mp4").write_bytes(os.urandom(5000))  # a bad input becomes a reject row, not a failure
    return [*paths, str(d / "broken.mp4")]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_out(inputs, config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run_local(inputs, str(out), config)
    return out


@pytest.fixture(scope="module")
def ray_out(inputs, config, ray_session, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("ray")
    return out, run_ray(inputs, str(out), config, videos_per_write=2)


def test_ray_matches_local(local_out, ray_out, dataset_view):
    out, summary = ray_out
    assert summary.videos == 4 and summary.videos_rejected == 1 and summary.scenes_written >= 3
    assert dataset_view(out) == dataset_view(local_out)
    run, local_run = (json.loads((o / "run.json").read_text()) for o in (out, local_out))
    assert run["engine"] == "ray" and run["ray"]["cluster_resources"]["CPU"] == 2
    assert run["counts"] == local_run["counts"]

    # the same stages saw the same items, in the same order; only timings differ
    def counters(r: dict) -> dict:
        return {k: {f: v[f] for f in ("items_in", "items_out", "rejects", "counts")} for k, v in r["stages"].items()}

    assert list(run["stages"]) == list(local_run["stages"]) and counters(run) == counters(local_run)
    assert run["stages"]["probe"]["seconds"] > 0


def test_rerun_skips_finished_videos(inputs, config, ray_out, dataset_view):
    out, _ = ray_out
    before = dataset_view(out)
    shards = sorted(p.name for p in (out / "shards").iterdir())
    summary = run_ray(inputs, str(out), config)
    assert summary.skipped == 4 and summary.videos == 0  # the broken file was journaled as rejected
    assert dataset_view(out) == before
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards


def test_model_stages_in_actor_pools(inputs, settings, config, ray_session, local_out, dataset_view, tmp_path):
    groups = plan_groups(config, gpus=False, actors=True)
    assert [g.names for g in groups if g.actors] == [("embed",)]
    assert plan_groups(config, gpus=False) == [
        g for g in plan_groups(config, gpus=False) if not g.actors
    ]  # CPU-only cluster: everything in fused tasks
    gpu = {g.names: g.num_gpus for g in plan_groups(load_config(None, [*settings, "filters.faces=true"]), True)}
    assert gpu[("embed",)] == 0.5 and gpu[("scene_filter",)] == 0.25
    run_ray(inputs, str(tmp_path), config, actors=True)
    assert dataset_view(tmp_path) == dataset_view(local_out)


def test_repeated_failures_are_quarantined(inputs, config, ray_session, dataset_view, tmp_path):
    from curation.video import content_id

    vid = content_id(inputs[0])
    state = {vid: {"uri": inputs[0], "failures": 3, "reasons": ["x"]}}
    DatasetOutput(str(tmp_path)).write_state("failures.json", state)
    summary = run_ray(inputs[:2], str(tmp_path), config, max_failures=3)
    assert summary.rejects["ray/quarantined"] == 1 and summary.videos == 2
    m, samples = dataset_view(tmp_path)
    assert {r["item_id"] for r in m["rejects"] if r["reason"] == "quarantined"} == {vid}
    assert {v["video_id"]: v["status"] for v in m["videos"]}[vid] == "rejected"
    assert not any(k.startswith(vid) for k in samples)
