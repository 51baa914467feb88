"""Shard writing, the commit journal and its recovery, on hand-made scene units (no video decoding)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curation.finalize import finalize
from curation.journal import DatasetWriter, read_journal, recover
from curation.records import CaptionRecord, Reject, SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.samples import scene_sample, video_result
from curation.shard_writer import ShardWriter
from curation.stage import Keyframe, SceneUnit, StageStats, VideoUnit


def make_video(n: int, n_scenes: int = 2, shots_per_scene: int = 2, dim: int = 8) -> tuple[VideoUnit, list[SceneUnit]]:
    """A probed video unit with scenes, and its exported scene units (clips are stand-in bytes)."""
    vid = f"vtest{n:04d}"
    video = VideoRecord(vid, f"/data/{vid}.mp4", duration_s=10.0, fps_num=24, fps_den=1, width=64, height=48)
    rng = np.random.default_rng(n)
    unit = VideoUnit(video)
    scenes = []
    for c in range(n_scenes):
        shots = []
        for k in range(shots_per_scene):
            i = c * shots_per_scene + k
            s = ShotRecord(shot_id(vid, i), vid, i, i * 24, i * 24 + 24, i, i + 1.0, scene_id=scene_id(vid, c))
            s.keyframe_frames = [i * 24 + 12]
            shots.append(s)
        unit.shots += shots
        scene = SceneRecord(scene_id(vid, c), vid, c, [s.shot_id for s in shots], shots[0].start_s, shots[-1].end_s)
        unit.scenes.append(scene)
        caps = [CaptionRecord(s.shot_id, scene.scene_id, f"C1 walks ({s.index})", "{C1} walks", ["C1"]) for s in shots]
        scenes.append(
            SceneUnit(
                scene,
                video,
                shots,
                keyframes=[Keyframe.encode(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), 90) for _ in shots],
                embeddings=rng.standard_normal((len(shots), dim)).astype(np.float32),
                clips=[rng.bytes(3000) for _ in shots],
                captions=caps,
                annotation={"characters": [{"id": "C1", "description": "a man"}], "setting": "a kitchen"},
            )
        )
    return unit, scenes


def result_of(n: int, **kw) -> object:
    unit, scenes = make_video(n, **kw)
    return video_result(unit, scenes, [], rejected=False)


def test_sample_members_and_webdataset_roundtrip(tmp_path):
    _, scenes = make_video(0)
    writer = ShardWriter(str(tmp_path), "scenes", max_bytes=1)
    for s in scenes:
        writer.write(scene_sample(s))
        writer.roll_if_full()
    assert writer.close() is None  # both rolled already
    assert [i.url for i in writer.committed] == ["shards/scenes-000000.tar", "shards/scenes-000001.tar"]
    urls = [str(tmp_path / i.url) for i in writer.committed]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [s.scene.scene_id for s in scenes]
    first, unit = samples[0], scenes[0]
    members = sorted(k for k in first if not k.startswith("__"))
    assert members == ["000.jpg", "000.mp4", "001.jpg", "001.mp4", "clip.npy", "json"]
    assert first["000.mp4"] == unit.clips[0]
    meta = json.loads(first["json"])
    assert [s["shot_id"] for s in meta["shots"]] == [s.shot_id for s in unit.shots]
    assert meta["shots"][1]["caption"] == "C1 walks (1)" and meta["shots"][1]["characters"] == ["C1"]
    assert meta["video"]["fps"] == "24/1" and meta["characters"][0]["id"] == "C1" and meta["setting"] == "a kitchen"
    emb = np.load(io.BytesIO(first["clip.npy"]))
    assert emb.dtype == np.float16 and emb.shape == (2, 8)
    np.testing.assert_allclose(emb, unit.embeddings, atol=1e-2)
    assert first["001.jpg"] == unit.keyframes[1].jpeg  # written as held, not re-encoded
    assert Image.open(io.BytesIO(first["001.jpg"])).size == (64, 48)
    for info, url in zip(writer.committed, urls):
        data = Path(url).read_bytes()
        assert info.bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest() and info.nsamples == 1


def test_same_samples_same_bytes(tmp_path):
    shas = []
    for run in ("a", "b"):
        w = ShardWriter(str(tmp_path / run))
        for s in make_video(3)[1]:
            w.write(scene_sample(s))
        shas.append(w.close().sha256)
    assert shas[0] == shas[1]


def test_sample_rejects_mismatched_unit():
    _, scenes = make_video(1)
    scenes[0].clips.pop()
    with pytest.raises(ValueError, match="clips"):
        scene_sample(scenes[0])


def test_writer_journal_and_finalize(tmp_path):
    out = str(tmp_path)
    recover(out)
    w = DatasetWriter(out, "scenes", max_bytes=60_000)  # a video is ~41 kB: two per shard
    rejected = VideoResult_rejected("vbad0001")
    for n in range(3):
        w.add(result_of(n))
        w.add_stats({"probe": StageStats(items_in=1, items_out=1)}, {"embedder": {"kind": "fallback"}})
        if n == 0:
            w.add(rejected)
    w.close()
    journal = read_journal(out)
    assert journal.finished == {"vtest0000", "vtest0001", "vtest0002", "vbad0001"}
    run = finalize(out, {"engine": "test", "config": {"shards": {"max_bytes": 60_000}}})
    index = json.loads((tmp_path / "index.json").read_text())["shards"]
    assert [s["nsamples"] for s in index] == [4, 2]  # both at least half of max_bytes: not merged
    for s in index:
        data = (tmp_path / s["url"]).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest() and s["bytes"] == len(data)
    scenes = pq.read_table(tmp_path / "manifests/scenes.parquet").to_pylist()
    assert [s["scene_id"] for s in scenes] == sorted(s["scene_id"] for s in scenes)
    keys = {
        s["__key__"]: os.path.basename(u["url"])
        for u in index
        for s in wds.WebDataset(str(tmp_path / u["url"]), shardshuffle=False)
    }
    assert {s["scene_id"]: s["shard"] for s in scenes} == keys
    videos = {v["video_id"]: v["status"] for v in pq.read_table(tmp_path / "manifests/videos.parquet").to_pylist()}
    assert videos["vbad0001"] == "rejected" and videos["vtest0002"] == "ok"
    rejects = pq.read_table(tmp_path / "manifests/rejects.parquet").to_pylist()
    assert [(r["stage"], r["reason"]) for r in rejects] == [("probe", "corrupt")]
    assert run["stages"]["probe"]["items_in"] == 3 and run["models"]["embedder"] == {"kind": "fallback"}
    assert run["counts"]["samples"] == 6 and run["counts"]["videos_rejected"] == 1
    assert len(pq.read_table(tmp_path / "manifests/captions.parquet")) == 12


def VideoResult_rejected(vid: str):  # noqa: N802 - reads as the record it builds
    unit = VideoUnit(VideoRecord(vid, f"/data/{vid}.mp4"))
    return video_result(unit, [], [Reject(vid, unit.uri, "probe", "corrupt", "not a video")], rejected=True)


def test_recover_removes_half_written_state_and_numbering_continues(tmp_path):
    out = str(tmp_path)
    recover(out)
    w = DatasetWriter(out, "scenes", max_bytes=1)
    w.add(result_of(0))  # committed: shard 0
    w.add(result_of(1))  # committed: shard 1
    w.shards.max_bytes = 10**9
    w.add(result_of(2))  # left open, as if the process were killed
    assert os.path.exists(tmp_path / "shards/scenes-000002.tar.tmp")
    # a marker whose shard never got renamed, and a shard no marker names
    marker = json.loads((tmp_path / "manifests/parts/scenes-000001.json").read_text())
    os.rename(tmp_path / "shards/scenes-000001.tar", tmp_path / "shards/scenes-000001.tar.tmp")
    (tmp_path / "shards/scenes-000009.tar").write_bytes(b"orphan")
    journal = recover(out)
    assert journal.finished == {"vtest0000"}
    assert sorted(os.listdir(tmp_path / "shards")) == ["scenes-000000.tar"]
    assert not any(p.startswith(marker["part"]) for p in os.listdir(tmp_path / "manifests/parts"))
    w2 = DatasetWriter(out, "scenes", max_bytes=1)
    w2.add(result_of(1))
    w2.close()
    assert sorted(os.listdir(tmp_path / "shards")) == ["scenes-000000.tar", "scenes-000001.tar"]
    finalize(out)
    scenes = pq.read_table(tmp_path / "manifests/scenes.parquet").column("scene_id").to_pylist()
    assert len(scenes) == len(set(scenes)) == 4


def test_video_result_marks_scene_stage_rejects():
    unit, scenes = make_video(5, n_scenes=2, shots_per_scene=3)
    dropped_shot = scenes[1].shots.pop(1)
    scenes[1].clips.pop(1), scenes[1].keyframes.pop(1)
    scenes[1].embeddings = scenes[1].embeddings[[0, 2]]
    scenes[1].rejects.append(Reject(dropped_shot.shot_id, unit.uri, "verify", "wrong-caption"))
    scene_reject = Reject(scenes[0].scene.scene_id, unit.uri, "caption", "safety-block")
    result = video_result(unit, [scenes[1]], [scene_reject], rejected=False)
    by_id = {s.scene_id: s for s in result.scenes}
    assert not by_id[scenes[0].scene.scene_id].kept and by_id[scenes[0].scene.scene_id].reject_reason == "safety-block"
    assert by_id[scenes[1].scene.scene_id].shot_ids == [s.shot_id for s in scenes[1].shots]
    shot = next(s for s in result.shots if s.shot_id == dropped_shot.shot_id)
    assert not shot.kept and shot.reject_reason == "wrong-caption"
    assert [s["__key__"] for s in result.samples] == [scenes[1].scene.scene_id]
    assert result.video.n_scenes == 1 and result.video.status == "ok"


def write_videos(out: str, prefix: str, ns: list[int], **writer_kw) -> None:
    w = DatasetWriter(out, prefix, **{"max_bytes": 10**9, **writer_kw})
    for n in ns:
        w.add(result_of(n))
    w.close()


def shard_keys(out: Path) -> dict[str, list[str]]:
    """Shard name -> sample keys in it, from the index; fails on a key in two shards."""
    index = json.loads((out / "index.json").read_text())["shards"]
    found: dict[str, list[str]] = {}
    for s in index:
        found[Path(s["url"]).name] = [x["__key__"] for x in wds.WebDataset(str(out / s["url"]), shardshuffle=False)]
    keys = [k for ks in found.values() for k in ks]
    assert len(keys) == len(set(keys)), "a sample is in two shards"
    return found


def test_finalize_merges_small_shards_of_many_writers(tmp_path, dataset_view):
    """Eight writers (as eight Ray write tasks) with one small shard each: finalize rolls them into shards of
    max_bytes, the manifests name the new shards, the journal keeps one compacted part; a second finalize
    with nothing new rewrites nothing and appends to the run history."""
    out = tmp_path / "out"
    recover(str(out))
    for task in range(8):
        write_videos(str(out), f"scenes-run1-{task:05d}", [task])  # one video, ~41 kB per shard
    info = {"engine": "test", "config": {"shards": {"max_bytes": 100_000, "prefix": "scenes"}}}
    run = finalize(str(out), info)
    keys = shard_keys(out)
    assert len(keys) == 3 and sorted(len(k) for k in keys.values()) == [4, 6, 6]  # 3 videos (6 scenes) per shard
    assert all(name.startswith("scenes-m000001-") for name in keys)
    # members are copied as written: the same bytes as writing those samples afresh
    expected = ShardWriter(str(tmp_path / "expected"), "scenes-m000001", 100_000)
    for n in range(8):
        for sample in result_of(n).samples:
            expected.write(sample)
            expected.roll_if_full()
    expected.close()
    index = json.loads((out / "index.json").read_text())["shards"]
    assert [(s["url"], s["sha256"]) for s in index] == [(i.url, i.sha256) for i in expected.committed]
    assert run["counts"]["samples"] == 16 and run["counts"]["shards"] == 3
    parts = sorted(os.listdir(out / "manifests/parts"))
    assert parts == [
        f"compact-000001.{x}"
        for x in ("captions.parquet", "json", "rejects.parquet", "scenes.parquet", "shots.parquet", "videos.parquet")
    ]
    view = dataset_view(out)  # scenes.shard agrees with the shards, nothing left over
    assert len(view[1]) == 16 and len(view[0]["videos"]) == 8
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    run2 = finalize(str(out), {**info, "engine": "again"})
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert [h["engine"] for h in run2["history"]] == ["test", "again"] and run2["counts"] == run["counts"]
    assert dataset_view(out) == view


def test_a_video_journaled_again_replaces_its_rows_and_samples(tmp_path, dataset_view):
    """Reprocessing: the later commit of a video wins, its old samples leave their (rewritten) shard."""
    out = tmp_path / "out"
    info = {"engine": "test", "config": {"shards": {"max_bytes": 60_000, "prefix": "scenes"}}}
    write_videos(str(out), "scenes", [0, 1, 2], max_bytes=60_000)  # shards: videos 0+1, video 2
    finalize(str(out), info)
    unit, scenes = make_video(1)
    for scene in scenes:
        for c in scene.captions:
            c.caption = "C1 runs"
    redone = video_result(unit, scenes, [], rejected=False)
    w = DatasetWriter(str(out), "scenes", 60_000)
    w.add(redone)
    w.close()
    assert read_journal(str(out)).videos()["vtest0001"]["rejected"] is False
    finalize(str(out), info)
    m, samples = dataset_view(out)
    assert sorted(samples) == sorted(f"vtest000{n}-c000{c}" for n in range(3) for c in range(2))
    captions = {c["shot_id"]: c["caption"] for c in m["captions"]}
    assert len(m["captions"]) == 12 and captions["vtest0001-s00000"] == "C1 runs"
    assert captions["vtest0000-s00000"] == "C1 walks (0)"
    sample = next(
        s
        for u in json.loads((out / "index.json").read_text())["shards"]
        for s in wds.WebDataset(str(out / u["url"]), shardshuffle=False)
        if s["__key__"] == "vtest0001-c0000"
    )
    assert json.loads(sample["json"])["shots"][0]["caption"] == "C1 runs"
    assert sorted(v["video_id"] for v in m["videos"]) == ["vtest0000", "vtest0001", "vtest0002"]


@pytest.mark.parametrize("crash", ["before-marker", "mid-cleanup", "before-publish"])
def test_interrupted_finalize_recovers(crash, tmp_path, monkeypatch, dataset_view):
    """A finalize that dies at any step leaves a journal that recover + finalize turn into the clean result."""
    import curation.finalize as fin

    info = {"engine": "test", "config": {"shards": {"max_bytes": 100_000, "prefix": "scenes"}}}
    clean = tmp_path / "clean"
    for task in range(4):
        write_videos(str(clean), f"scenes-r-{task:05d}", [task])
    finalize(str(clean), info)

    out = tmp_path / "out"
    for task in range(4):
        write_videos(str(out), f"scenes-r-{task:05d}", [task])

    class Killed(Exception):
        pass

    def die(*_a, **_k):
        raise Killed

    if crash == "before-marker":
        monkeypatch.setattr(fin, "write_marker", die)
    elif crash == "before-publish":
        monkeypatch.setattr(fin, "_publish_table", die)
    else:
        real_remove, calls = os.remove, []

        def remove(path):
            calls.append(path)
            if len(calls) == 3:  # one part's marker and a table gone, the rest not
                raise Killed
            real_remove(path)

        monkeypatch.setattr(fin.os, "remove", remove)
    with pytest.raises(Killed):
        finalize(str(out), info)
    monkeypatch.undo()
    journal = recover(str(out))
    assert journal.finished == {f"vtest000{n}" for n in range(4)}
    finalize(str(out), info)
    assert dataset_view(out)[1] == dataset_view(clean)[1]
    assert dataset_view(out)[0] == dataset_view(clean)[0]


def test_a_writer_reads_only_its_own_parts(tmp_path):
    out = str(tmp_path)
    write_videos(out, "scenes-run-00001", [0, 1], commit_videos=1)
    write_videos(out, "scenes-run-00002", [2])
    assert read_journal(out, "scenes-run-00001").finished == {"vtest0000", "vtest0001"}
    assert read_journal(out, "scenes-run-00002").finished == {"vtest0002"}
    assert read_journal(out).finished == {"vtest0000", "vtest0001", "vtest0002"}
    # numbering continues after the writer's own files: a retried task never overwrites its earlier commits
    w = DatasetWriter(out, "scenes-run-00001", 10**9)
    w.add(result_of(3))
    w.close()
    assert w.parts == ["scenes-run-00001-000002"]


def test_commits_every_n_videos(tmp_path):
    out = str(tmp_path)
    w = DatasetWriter(out, "scenes", 10**9, commit_videos=2)
    for n in range(5):
        w.add(result_of(n))
        assert len(read_journal(out).finished) == (n + 1) // 2 * 2
    w.close()
    assert len(w.parts) == 3 and len(read_journal(out).finished) == 5
