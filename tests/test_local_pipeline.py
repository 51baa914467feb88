"""End to end with the local executor on tiny synthetic films: shards, manifests, determinism, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from curation.config import load_config
from filmweaver_testing.films import make_film
from pipelines.local import run_local


@pytest.fixture(scope="module")
def config(small_settings):
    return load_config(None, small_settings)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    paths = []
    for seed in (1, 2):
        path = str(d / f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5), gradual_ratio=0.3)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def curated(films, config, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("out")
    return out, run_local(films, str(out), config)


def file_digests(out: Path) -> dict[str, str]:
    files = [p for d in ("shards", "manifests") for p in sorted((out / d).glob("*")) if p.is_file()]
    files.append(out / "index.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_shards_match_manifests(curated, manifests):
    out, summary = curated
    m = manifests(out)
    assert summary.videos == 2 and summary.videos_rejected == 0 and summary.scenes_written >= 2
    index = json.loads((out / "index.json").read_text())["shards"]
    for s in index:
        data = (out / s["url"]).read_bytes()
        assert s["bytes"] == len(data) and s["sha256"] == hashlib.sha256(data).hexdigest()
    samples = list(wds.WebDataset([str(out / s["url"]) for s in index], shardshuffle=False))
    assert sum(s["nsamples"] for s in index) == len(samples) == summary.scenes_written

    written = {s["scene_id"]: s for s in m["scenes"] if s["shard"]}
    assert all(s["kept"] for s in written.values())
    assert {s["__key__"] for s in samples} == set(written)
    shots = {s["shot_id"]: s for s in m["shots"]}
    for sample in samples:
        meta = json.loads(sample["json"])
        scene = written[sample["__key__"]]
        assert [s["shot_id"] for s in meta["shots"]] == scene["shot_ids"]
        n = len(scene["shot_ids"])
        assert {k for k in sample if not k.startswith("__")} == {
            "json",
            "clip.npy",
            *(f"{i:03d}.mp4" for i in range(n)),
            *(f"{i:03d}.jpg" for i in range(n)),
        }
        assert np.load(io.BytesIO(sample["clip.npy"])).shape[0] == n
        for s in meta["shots"]:
            row = shots[s["shot_id"]]
            assert (s["start_frame"], s["end_frame"]) == (row["start_frame"], row["end_frame"])
            assert row["kept"] and row["scene_id"] == scene["scene_id"]
        assert sample["000.mp4"][4:8] == b"ftyp"
    videos = {v["video_id"]: v for v in m["videos"]}
    assert all(v["status"] == "ok" and v["n_scenes"] >= 1 for v in videos.values())
    assert m["captions"] == []  # caption.backend 'none': scenes are marked skipped, no caption rows
    assert {s["caption_status"] for s in written.values()} == {"skipped: no captioner configured"}
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == "local" and run["models"]["embedder"]["kind"] == "fallback"
    assert run["stages"]["probe"]["items_in"] == 2 and run["counts"]["samples"] == len(samples)
    assert run["config"]["embed"]["backend"] == "fallback" and "numpy" in run["versions"]


def test_rerun_into_fresh_dir_is_identical(curated, films, config, tmp_path, manifests):
    out, _ = curated
    run_local(films, str(tmp_path), config)
    assert file_digests(tmp_path) == file_digests(out)


def test_ids_survive_moves(curated, films, config, manifests, tmp_path):
    out, _ = curated
    moved = tmp_path / "elsewhere" / "renamed.mp4"
    moved.parent.mkdir()
    shutil.copyfile(films[0], moved)
    run_local([str(moved)], str(tmp_path / "out"), config)
    before, after = manifests(out), manifests(tmp_path / "out")
    vid = after["videos"][0]["video_id"]
    assert after["videos"][0]["uri"] == str(moved)
    for name, key in (("shots", "shot_id"), ("scenes", "scene_id")):
        assert [r[key] for r in after[name]] == [r[key] for r in before[name] if r["video_id"] == vid]


def test_resume_skips_finished_and_changes_nothing(curated, films, config):
    out, _ = curated
    before = file_digests(out)
    (out / "shards" / "scenes-000007.tar.tmp").write_bytes(b"half a shard from a killed run")
    summary = run_local(films, str(out), config)
    assert summary.skipped == 2 and summary.videos == 0
    assert not (out / "shards" / "scenes-000007.tar.tmp").exists()
    assert file_digests(out) == before


def test_resume_after_partial_run_equals_full_run(curated, films, config, tmp_path, manifests):
    out, _ = curated
    run_local(films[:1], str(tmp_path), config)
    summary = run_local(films, str(tmp_path), config)
    assert (summary.skipped, summary.videos) == (1, 1)
    full, resumed = manifests(out), manifests(tmp_path)
    for rows in (*full.values(), *resumed.values()):
        for r in rows:
            r.pop("shard", None)  # the partial run closed its own shard
    assert resumed == full
    assert len(os.listdir(tmp_path / "shards")) == 1  # finalize merged the two runs' small shards
