"""Real-world video files that break other tools: one archive folder of each kind (``real_world_kinds``),
curated by both engines; per kind, the manifests hold the decoded truth (frame count, duration, rate,
shots, stream, reason) and every clip in the shards holds exactly its shot's frames (``clip_invariant``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tests.real_world_kinds as kinds
from curation.config import load_config
from curation.export import clip_frame, cut_clips, verify_clip
from curation.video import FrameDecoder, demuxed_duration, probe
from filmweaver_testing.films import make_film
from pipelines.commands import curate, dry_run
from pipelines.inputs import InputNotFound, expand_inputs
from tests.clip_invariant import check_clips
from tests.conftest import read_manifests

ENGINES = ["local", "ray"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict:
    """A folder of one file per kind, plus files a folder scan must pass over; and a cover-art-only song."""
    d = tmp_path_factory.mktemp("archive")
    files: dict[str, Path] = {}
    truth: dict[str, kinds.Truth] = {}

    def add(kind: str, name: str, build) -> None:
        files[kind] = d / name
        truth[kind] = build(d / name)

    add("ts_concat", "joined.ts", kinds.ts_concat)
    add("cover_first", "tagged.mp4", kinds.cover_first)
    add("edit_list", "trimmed.mp4", kinds.edit_list)
    add("annexb", "camera.h264", kinds.annexb)
    add("two_streams", "preview.mkv", kinds.two_video_streams)
    files["glob_name"], truth["glob_name"] = kinds.glob_name(d)
    add("low_fps", "timelapse.mp4", kinds.low_fps)
    add("webm_pipe", "recording.webm", kinds.webm_pipe)
    add("swapped_pts", "xvid_like.mp4", kinds.swapped_timestamps)
    add("still_track", "with_cover.mkv", kinds.still_track)
    files["copy"] = d / "copy of a.mp4"
    truth["duplicate"] = kinds.duplicate(d / "a.mp4", files["copy"])
    files["duplicate"] = d / "a.mp4"
    add("damaged", "damaged.mkv", kinds.damaged_midway)
    kinds.unsupported_codec(d / "unknown_codec.mkv")
    files["unsupported"] = d / "unknown_codec.mkv"
    files["film"] = d / "film.mp4"
    make_film(files["film"], seed=5, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.3))  # + film.json
    (d / "notes.txt").write_text("not a video\n")
    (d / "poster.jpg").write_bytes(b"\xff\xd8\xff")
    song_dir = tmp_path_factory.mktemp("music")
    files["cover_only"] = song_dir / "song.m4a"
    kinds.cover_only(files["cover_only"])
    return {"dir": d, "files": files, "truth": truth, "skipped": ["film.json", "notes.txt", "poster.jpg"]}


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def config(small_settings):
    # one scene per video, every shot a clip; the testsrc2 pictures carry burnt-in counters, which the text-overlay
    # filter would rightly drop: off here, these tests are about decoding
    return load_config(None, [*small_settings, "scenes.threshold=-1", "filters.max_text_area=null"])


def _inputs(archive) -> list[str]:
    return [str(archive["dir"]), str(archive["files"]["cover_only"])]


@pytest.fixture(scope="module", params=ENGINES)
def curated(request, archive, config, tmp_path_factory) -> dict:
    """The archive folder and the song, curated by one engine: manifests, run.json and the summary."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    out = tmp_path_factory.mktemp(f"out_{request.param}")
    summary = curate(_inputs(archive), str(out), config, request.param)
    m = read_manifests(out)
    videos = {}
    for v in m["videos"]:
        videos.setdefault(v["uri"], v)
    return {
        "out": out,
        "m": m,
        "videos": videos,
        "run": json.loads((out / "run.json").read_text()),
        "summary": summary,
        "engine": request.param,
    }


def _video(curated, archive, kind: str) -> dict:
    return curated["videos"][str(archive["files"][kind])]


def _shots(curated, video: dict) -> list[dict]:
    return sorted((s for s in curated["m"]["shots"] if s["video_id"] == video["video_id"]), key=lambda s: s["index"])


def _rejects(curated, archive, kind: str) -> list[tuple[str, str]]:
    uri = str(archive["files"][kind])
    return [(r["stage"], r["reason"]) for r in curated["m"]["rejects"] if r["uri"] == uri]


DECODED = [
    *("ts_concat", "cover_first", "edit_list", "annexb", "two_streams", "glob_name", "low_fps", "webm_pipe"),
    *("swapped_pts", "still_track"),
]


@pytest.mark.parametrize("kind", DECODED)
def test_counts_and_shots_are_the_decoded_truth(curated, archive, kind):
    truth = archive["truth"][kind]
    video = _video(curated, archive, kind)
    assert video["status"] == "ok" and not video["partial"], video
    assert video["n_frames"] == truth.n_frames
    assert video["fps"] == pytest.approx(truth.fps, rel=1e-3)
    assert video["duration_s"] == pytest.approx(truth.duration_s, abs=0.02)
    assert (video["width"], video["height"]) == (truth.width, truth.height)
    assert video["stream_index"] == (truth.stream_index or 0)
    shots = _shots(curated, video)
    assert [s["start_frame"] for s in shots] == [0, *truth.cuts]
    assert shots[-1]["end_frame"] == truth.n_frames
    assert all(s["end_s"] > s["start_s"] for s in shots)  # times follow frames, whatever the timestamps do
    assert all(a["end_s"] == pytest.approx(b["start_s"]) for a, b in zip(shots, shots[1:]))
    assert _rejects(curated, archive, kind) == []  # every shot kept and written


def test_container_claims_are_kept_beside_the_truth(curated, archive):
    ts = _video(curated, archive, "ts_concat")
    assert ts["container_duration_s"] == pytest.approx(3.2, abs=0.05)  # the first encode's timestamps only
    edit = _video(curated, archive, "edit_list")
    assert edit["container_n_frames"] == 150 and edit["n_frames"] == 127  # 23 lead-in frames hidden
    for kind in ("annexb", "webm_pipe"):  # no duration in the container: the decode tells
        video = _video(curated, archive, kind)
        assert video["container_duration_s"] is None and video["duration_s"] == pytest.approx(4.8, abs=0.02)
    assert _video(curated, archive, "low_fps")["container_fps"] == 2.0


def test_dry_run_measures_what_the_container_does_not_claim(archive, config):
    """A raw stream and a piped WebM claim no duration: --dry-run measures them from their packets (it priced
    them at 0 s), equal to a file of the same length that claims one; files the probe rejects are named."""
    files = archive["files"]
    for kind in ("annexb", "webm_pipe"):  # 4.8 s each; the decode agrees (test above)
        assert probe(str(files[kind])).duration_s == 0.0
        assert demuxed_duration(probe(str(files[kind]))) == pytest.approx(4.8, abs=0.02)
    claimed = dry_run(config, [str(files["duplicate"])])  # an MP4 of the same 4.8 s
    assert "2 shots, 5 s of video" in claimed
    assert dry_run(config, [str(files["annexb"])]) == dry_run(config, [str(files["webm_pipe"])]) == claimed
    text = dry_run(config, [str(files[k]) for k in ("annexb", "unsupported", "cover_only")])
    estimate, warning = text.split("\n")
    assert estimate == claimed
    assert warning.startswith("warning: 2 of 3 inputs would be rejected by the probe stage and are not counted")
    assert f"{files['unsupported']} (unsupported-codec)" in warning and str(files["cover_only"]) in warning


def test_summary_hours_come_from_the_decode(curated, archive):
    ok = [v for v in curated["m"]["videos"] if v["status"] == "ok"]
    assert all(v["duration_s"] > 1 for v in ok)
    assert curated["run"]["counts"]["hours"] == pytest.approx(sum(v["duration_s"] for v in ok) / 3600, abs=1e-4)


def test_every_clip_holds_its_shots_frames(curated, archive):
    checked = check_clips(curated["out"])
    written = {s["video_id"] for s in curated["m"]["scenes"] if s["shard"]}
    uris = {v["video_id"]: v["uri"] for v in curated["m"]["videos"] if v["status"] == "ok"}
    assert {str(archive["files"][k]) for k in [*DECODED, "film", "damaged", "duplicate"]} <= {uris[v] for v in written}
    assert checked == sum(s["kept"] for s in curated["m"]["shots"]) >= 30
    assert not [r for r in curated["m"]["rejects"] if r["reason"] == "clip-check-failed"]


def test_damaged_file_keeps_complete_shots_before_the_damage(curated, archive):
    video = _video(curated, archive, "damaged")
    assert video["status"] == "ok" and video["partial"] and video["partial_reason"]
    assert video["container_duration_s"] == pytest.approx(8.0, abs=0.05)
    assert 80 < video["n_frames"] < 200
    shots = _shots(curated, video)
    assert [s["start_frame"] for s in shots[:3]] == [0, 40, 80]
    assert [s["kept"] for s in shots] == [True, True, False] and shots[-1]["reject_reason"] == "damaged"
    assert ("shots", "damaged") in _rejects(curated, archive, "damaged")
    assert curated["run"]["counts"]["videos_partial"] == 1


@pytest.mark.parametrize(
    "kind, stage, reason",
    [("cover_only", "probe", "cover-art-only"), ("unsupported", "probe", "unsupported-codec")],
)
def test_truthful_reasons(curated, archive, kind, stage, reason):
    assert _rejects(curated, archive, kind) == [(stage, reason)]
    video = _video(curated, archive, kind)
    assert video["status"] == "rejected"
    detail = next(r["detail"] for r in curated["m"]["rejects"] if r["uri"] == str(archive["files"][kind]))
    assert ("audio with cover art" if kind == "cover_only" else "this FFmpeg build can decode") in detail


def test_every_input_is_accounted_for(curated, archive):
    files = archive["files"]
    original, copy = _video(curated, archive, "duplicate"), curated["videos"][str(files["copy"])]
    # the folder scan sorts 'a.mp4' before 'copy of a.mp4'
    assert original["status"] == "ok" and copy["status"] == "duplicate"
    assert copy["duplicate_of"] == str(files["duplicate"]) and copy["video_id"] == original["video_id"]
    counts = curated["run"]["counts"]
    assert len({v["uri"] for v in curated["m"]["videos"]}) == len(curated["m"]["videos"]) == len(files)
    assert counts["videos_duplicate"] == 1
    assert counts["videos"] == counts["videos_ok"] + counts["videos_rejected"] + counts["videos_duplicate"]
    skipped = curated["run"]["skipped_files"]
    assert skipped["count"] == 3 and sorted(Path(p).name for p in skipped["examples"]) == archive["skipped"]
    summary = curated["summary"]
    assert summary.duplicates == 1 and summary.skipped_files == 3
    assert "1 duplicate content, 3 non-video files skipped" in summary.format()


def test_resume_adds_no_row_twice(curated, archive, config):
    before = read_manifests(curated["out"])
    summary = curate(_inputs(archive), str(curated["out"]), config, curated["engine"])
    assert summary.duplicates == 0 and summary.videos == 0 and summary.skipped == len(archive["files"])
    after = read_manifests(curated["out"])
    assert after["videos"] == before["videos"] and after["shots"] == before["shots"]


# ------------------------------------------------------------------------------------- unit level


def test_glob_characters_in_a_real_name(archive):
    path = archive["files"]["glob_name"]
    assert expand_inputs([str(path)]) == [str(path.resolve())]
    assert str(path.resolve()) in expand_inputs([str(path.parent / "clip*.mp4")])  # a pattern still matches
    with pytest.raises(InputNotFound):
        expand_inputs([str(path.parent / "nothing [x].mp4")])


def test_low_frame_rate_splits_by_seconds(archive):
    from curation.config import CurateConfig
    from curation.shots import ShotSplitter, min_shot_frames
    from curation.stage import VideoUnit

    config = CurateConfig()
    assert min_shot_frames(config.shots, 2) == 2 and min_shot_frames(config.shots, 25) == 8
    assert min_shot_frames(config.shots, 120) == 39
    unit = ShotSplitter(config).process(VideoUnit(probe(str(archive["files"]["low_fps"]))))
    assert [s.start_frame for s in unit.shots] == [0, 6, 12, 18]
    assert [s.duration_s for s in unit.shots] == pytest.approx([3.0] * 4)


def test_decoder_times_are_monotonic_over_a_timestamp_restart(archive):
    decoder = FrameDecoder(str(archive["files"]["ts_concat"]))
    times = np.array([f.time_s for f in decoder])
    assert len(times) == 160 and decoder.report.timestamp_jumps == 1 and decoder.report.damage is None
    np.testing.assert_allclose(np.diff(times), 0.04, atol=1e-6)


def test_verification_rejects_wrong_clips(archive):
    path = str(archive["files"]["duplicate"])
    video = probe(path)
    (right,) = cut_clips(path, video, [(40, 60)], 96, 23, "veryfast")
    (shifted,) = cut_clips(path, video, [(41, 61)], 96, 23, "veryfast")
    assert right.data and shifted.data and right.failure is None
    ends = {}  # the clip's frames as cut_clips checks them: its encoder's input, as RGB
    decoder = FrameDecoder(path, (170, 96))
    for index, _, raw in decoder.decoded():
        if index in (39, 40, 41, 58, 59, 60):
            ends[index] = clip_frame(decoder, raw, (170, 96)).to_ndarray(format="rgb24")
    checks = {"first": (ends[40], [ends[39], ends[41]]), "last": (ends[59], [ends[58], ends[60]])}
    assert verify_clip(right.data, 20, checks, 20.0) is None
    assert "shifted" in verify_clip(shifted.data, 20, checks, 20.0)
    assert "frames" in verify_clip(right.data, 21, checks, 20.0)
    song = archive["files"]["cover_only"].read_bytes()  # a picture, but no moving one
    assert "no usable video stream" in verify_clip(song, 20, checks, 20.0)
    black = {k: (np.zeros_like(v[0]), v[1]) for k, v in checks.items()}
    assert "PSNR" in verify_clip(right.data, 20, black, 20.0)
