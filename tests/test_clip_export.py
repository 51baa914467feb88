"""Clip export: frame-exact ranges, H.264 yuv420p output at the configured short side, display orientation,
and the ClipExporter stage turning a VideoUnit's kept scenes into SceneUnits."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from curation.config import CurateConfig
from curation.errors import UnsupportedVideo
from curation.export import ClipExporter, export_clip
from curation.records import SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.stage import Keyframe, SceneUnit, VideoUnit, run_stage
from curation.video import iter_frames, probe
from filmweaver_testing.films import make_simple_video, read_frame_code

N = 60  # frames of the coded video, 24 fps


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("export_src")
    p = {"coded": d / "coded.mp4", "vfr": d / "vfr.mp4", "rotated": d / "rotated.mp4"}
    make_simple_video(p["coded"], n_frames=N, size=(160, 96))
    make_simple_video(p["vfr"], n_frames=40, size=(160, 96), vfr=True)
    make_simple_video(p["rotated"], n_frames=12, size=(128, 64), rotation=90)
    return p


@pytest.fixture(scope="module")
def records(sources) -> dict[str, VideoRecord]:
    return {k: probe(str(v)) for k, v in sources.items()}


def _decode(data: bytes, tmp_path: Path, name: str = "clip.mp4") -> tuple[list[np.ndarray], dict]:
    path = tmp_path / name
    path.write_bytes(data)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "size": (s.width, s.height)}
        info["audio"] = len(c.streams.audio)
    frames = [f.rgb for f in iter_frames(str(path))]
    return frames, info


def _export(sources, records, key: str, start: int, end: int, short_side: int = 96) -> bytes:
    return export_clip(str(sources[key]), records[key], start, end, short_side, crf=8, preset="ultrafast")


@pytest.mark.parametrize("start, end", [(0, 7), (23, 37), (50, N), (N - 1, N), (1, 2)])
def test_export_is_frame_exact(sources, records, tmp_path, start, end):
    frames, info = _decode(_export(sources, records, "coded", start, end), tmp_path)
    assert [read_frame_code(f) for f in frames] == list(range(start, end))
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio"] == 0


def test_export_end_past_last_frame_is_clamped(sources, records, tmp_path):
    frames, _ = _decode(_export(sources, records, "coded", N - 3, N + 20), tmp_path)
    assert [read_frame_code(f) for f in frames] == [N - 3, N - 2, N - 1]


def test_export_bad_ranges(sources, records):
    with pytest.raises(ValueError):
        _export(sources, records, "coded", 5, 5)
    with pytest.raises(UnsupportedVideo) as info:
        _export(sources, records, "coded", N, N + 4)
    assert info.value.reason == "bad-range"


def test_export_variable_frame_rate_is_frame_exact(sources, records, tmp_path):
    for start, end in [(0, 5), (17, 29), (35, 40)]:
        frames, _ = _decode(_export(sources, records, "vfr", start, end), tmp_path)
        assert [read_frame_code(f) for f in frames] == list(range(start, end)), (start, end)


@pytest.mark.parametrize(
    "short_side, size",
    [
        (64, (106, 64)),  # scaled down, aspect kept, even dims
        (45, (76, 44)),  # odd request: rounded to even
        (480, (160, 96)),  # never upscaled
    ],
)
def test_export_size(sources, records, tmp_path, short_side, size):
    frames, info = _decode(_export(sources, records, "coded", 10, 14, short_side=short_side), tmp_path)
    assert info["size"] == size
    assert all(f.shape == (size[1], size[0], 3) for f in frames)
    assert [read_frame_code(f) for f in frames] == [10, 11, 12, 13]


def test_export_rotated_in_display_orientation(sources, records, tmp_path):
    src = str(sources["rotated"])
    frames, info = _decode(_export(sources, records, "rotated", 4, 8, short_side=64), tmp_path)
    assert info["size"] == (64, 128)  # portrait, as displayed
    with av.open(str(tmp_path / "clip.mp4")) as c:  # pixels are rotated, not merely tagged
        assert not next(c.decode(video=0)).rotation
    shown = [f.rgb for f in iter_frames(src)][4:8]
    assert len(frames) == 4
    for ours, want in zip(frames, shown):
        assert np.abs(ours.astype(int) - want.astype(int)).mean() < 8
        assert np.abs(ours.astype(int) - np.rot90(want, 2).astype(int)).mean() > 30


# ---------------------------------------------------------------------------------------------- stage


def _unit(source: Path, video: VideoRecord) -> VideoUnit:
    """Six 10-frame shots in three scenes: scene 0 keeps shots 0 and 2 (shot 1 dropped), scene 1 (shot 3)
    is dropped, scene 2 keeps shots 4 and 5."""
    vid, fps = video.video_id, float(video.fps)
    shots = [
        ShotRecord(shot_id(vid, i), vid, i, 10 * i, 10 * i + 10, 10 * i / fps, (10 * i + 10) / fps) for i in range(6)
    ]
    shots[1].kept, shots[1].reject_reason = False, "static"
    members = [[0, 1, 2], [3], [4, 5]]
    scenes = []
    for k, idx in enumerate(members):
        for i in idx:
            shots[i].scene_id = scene_id(vid, k)
        ids = [shots[i].shot_id for i in idx]
        scenes.append(SceneRecord(scene_id(vid, k), vid, k, ids, shots[idx[0]].start_s, shots[idx[-1]].end_s))
    scenes[1].kept, scenes[1].reject_reason = False, "too-few-shots"
    keyframes = [[Keyframe.encode(np.full((8, 8, 3), 10 * i + j, np.uint8), 90) for j in range(3)] for i in range(6)]
    embeddings = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    return VideoUnit(video, shots, keyframes, embeddings, "fallback", scenes)


def _config(**export) -> CurateConfig:
    return CurateConfig.model_validate({"export": {"short_side": 64, "crf": 8, "preset": "ultrafast", **export}})


def test_clip_exporter_yields_kept_scenes_with_kept_shots(sources, records, tmp_path):
    unit = _unit(sources["coded"], records["coded"])
    stage = ClipExporter(_config())
    out = run_stage(stage, unit)
    assert all(isinstance(s, SceneUnit) for s in out)
    assert [s.scene.scene_id for s in out] == [unit.scenes[0].scene_id, unit.scenes[2].scene_id]
    want = [[0, 2], [4, 5]]
    for scene, idx in zip(out, want):
        assert [s.index for s in scene.shots] == idx
        assert scene.video is unit.video and scene.item_id == scene.scene.scene_id
        assert all(k is unit.keyframes[i][1] for k, i in zip(scene.keyframes, idx, strict=True))  # the middle one
        np.testing.assert_array_equal(scene.embeddings, unit.embeddings[idx])
        assert len(scene.clips) == len(idx)
        for shot, clip in zip(scene.shots, scene.clips):
            frames, info = _decode(clip, tmp_path)
            assert [read_frame_code(f) for f in frames] == list(range(shot.start_frame, shot.end_frame))
            assert info["size"] == (106, 64)
    assert stage.stats.items_out == 2 and stage.stats.counts["clips"] == 4
    assert stage.stats.counts["clip_bytes"] == sum(len(c) for s in out for c in s.clips)


def test_clip_exporter_caps_clip_length(sources, records, tmp_path):
    unit = _unit(sources["coded"], records["coded"])
    out = run_stage(ClipExporter(_config(max_shot_s=0.25)), unit)  # 0.25 s at 24 fps: 6 frames
    clips = [(shot, clip) for scene in out for shot, clip in zip(scene.shots, scene.clips)]
    assert len(clips) == 4
    for shot, clip in clips:
        frames, _ = _decode(clip, tmp_path)
        assert [read_frame_code(f) for f in frames] == list(range(shot.start_frame, shot.start_frame + 6))
        assert (shot.clip_start_frame, shot.clip_end_frame) == (shot.start_frame, shot.start_frame + 6)
    assert shot.end_frame == shot.start_frame + 10  # the record keeps the whole shot, and names the clip's frames


def test_clips_leave_out_the_dissolves_at_their_shots_ends(sources, records, tmp_path):
    """A shot whose splitter marked the frames outside its gradual transitions (clip_*_frame) is exported as
    exactly those frames: half a dissolve at each end would blend the neighbouring shot into its clip."""
    unit = _unit(sources["coded"], records["coded"])
    for shot in unit.shots:
        shot.clip_start_frame, shot.clip_end_frame = shot.start_frame + 2, shot.end_frame - 3
    out = run_stage(ClipExporter(_config()), unit)
    clips = [(shot, clip) for scene in out for shot, clip in zip(scene.shots, scene.clips)]
    assert len(clips) == 4
    for shot, clip in clips:
        frames, _ = _decode(clip, tmp_path)
        assert [read_frame_code(f) for f in frames] == list(range(shot.start_frame + 2, shot.end_frame - 3))


def test_clip_exporter_no_kept_scene(sources, records):
    unit = _unit(sources["coded"], records["coded"])
    for scene in unit.scenes:
        scene.kept = False
    stage = ClipExporter(_config())
    assert run_stage(stage, unit) == []
    assert stage.stats.counts["clips"] == 0


@pytest.mark.parametrize(
    "name, args, size",
    [
        ("hevc10.mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"], (96, 64)),
        ("av1.mp4", ["-c:v", "libsvtav1", "-svtav1-params", "enable-stat-report=0"], (96, 64)),
        ("prores.mov", ["-c:v", "prores_ks"], (96, 64)),
        ("interlaced.mpg", ["-c:v", "mpeg2video", "-flags", "+ilme+ildct"], (96, 64)),
        ("odd444.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv444p"], (97, 63)),
        ("alpha.webm", ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p"], (96, 64)),
    ],
)
def test_other_source_codecs_export_to_h264_yuv420p(tmp_path, name, args, size):
    """Codecs, bit depths, chroma layouts and odd sizes of real archives all become H.264 yuv420p clips."""
    import subprocess

    import imageio_ffmpeg

    src = tmp_path / name
    lavfi = f"testsrc=size={size[0]}x{size[1]}:rate=24:duration=1"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", lavfi, *args, str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    record = probe(str(src))
    assert (record.width, record.height) == size and float(record.fps) == 24
    assert sum(1 for _ in iter_frames(str(src))) == 24
    frames, info = _decode(export_clip(str(src), record, 4, 16, 64, crf=18, preset="ultrafast"), tmp_path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and len(frames) == 12
    assert all(d % 2 == 0 for d in info["size"]) and min(info["size"]) == min(64, *size) // 2 * 2


def test_clip_does_not_take_the_source_frame_types(tmp_path):
    """An all-intra source (every frame a keyframe, as intermediate codecs and some cameras write) gives a clip
    with one keyframe: x264 takes a frame's picture type as an order, so the source's must not reach it."""
    import subprocess

    import imageio_ffmpeg

    src = tmp_path / "intra.mp4"
    lavfi = "testsrc=size=96x64:rate=24:duration=1"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", lavfi, "-c:v", "libx264"]
    subprocess.run([*cmd, "-g", "1", str(src)], check=True, capture_output=True)
    data = export_clip(str(src), probe(str(src)), 2, 20, 64, crf=23, preset="veryfast")
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        keyframes = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert len(keyframes) == 18 and sum(keyframes) == 1


_EXPORT_ON_CPUS = """
import os, sys
from curation.export import export_clip
from curation.video import probe
src, cpus, threads, out = sys.argv[1:]
if cpus == "one":
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
open(out, "wb").write(export_clip(src, probe(src), 3, 40, 192, 23, "veryfast", threads=int(threads)))
"""


def test_clip_bytes_depend_on_export_threads_not_on_the_cpus(tmp_path):
    """x264's bytes follow its thread count; ``export.threads`` fixes it, so a process that sees one CPU
    exports the same bytes as one that sees all (x264's own default, 1.5 threads per CPU it may run on, gave
    other bytes on each node size). 320x192: x264 uses fewer threads on pictures only a few rows high."""
    import subprocess
    import sys

    src = tmp_path / "src.mp4"
    make_simple_video(src, n_frames=40, size=(320, 192))

    def export(cpus: str, threads: int) -> bytes:
        out = tmp_path / f"{cpus}-{threads}.mp4"
        subprocess.run([sys.executable, "-c", _EXPORT_ON_CPUS, str(src), cpus, str(threads), str(out)], check=True)
        return out.read_bytes()

    assert export("one", 2) == export("all", 2)
    assert export("all", 1) != export("all", 2)  # the count matters: fixing it is what keeps the bytes


def test_clips_encoded_at_once_are_the_same_bytes(sources, records, tmp_path):
    """``encoders`` clips encode at once while the decoder runs ahead: neither the number of encoders nor a
    buffer so small that the decoder keeps waiting on them changes a byte, and every clip stays frame exact
    and verified. Overlapping ranges (which share decoded frames) included."""
    from curation.export import cut_clips

    src, video = str(sources["coded"]), records["coded"]
    ranges = [(0, 14), (14, 15), (15, 40), (40, 41), (41, N), (30, 45), (5, 9)]

    def cut(encoders: int, buffer_mb: int) -> list[bytes | None]:
        clips = cut_clips(src, video, ranges, 96, 23, "veryfast", encoders=encoders, buffer_mb=buffer_mb)
        assert [c.failure for c in clips] == [None] * len(ranges)
        return [c.data for c in clips]

    one = cut(1, 64)
    assert cut(2, 64) == one
    assert cut(3, 0) == one  # 0 MiB: each writer holds its minimum of frames, the decoder waits on them
    for (start, end), data in zip(ranges, one):
        assert data is not None
        codes = [read_frame_code(f) for f in _decode(data, tmp_path, f"c{start}-{end}.mp4")[0]]
        assert codes == list(range(start, end))


def test_an_encoder_error_reaches_the_caller(sources, records, monkeypatch):
    """Encoding runs on the writer thread: an error there stops the export with that error, no clip returned."""
    import curation.export as export

    write = export._ClipEncoder.write
    calls = []

    def failing(self, frame, time_s):
        calls.append(time_s)
        if len(calls) == 5:
            raise RuntimeError("x264 failed")
        write(self, frame, time_s)

    monkeypatch.setattr(export._ClipEncoder, "write", failing)
    with pytest.raises(RuntimeError, match="x264 failed"):
        export.cut_clips(str(sources["coded"]), records["coded"], [(0, 10), (20, 30)], 96, 23, "ultrafast")


def test_score_mode_writes_a_scene_left_short_by_a_failed_clip_with_its_verdict(sources, records, monkeypatch):
    """filters.mode=score: a scene whose clip check fails for one of its two shots is still written (refilter
    decides), with the 'too-few-shots' verdict the scene filter could not know (it ran before the check)."""
    import curation.export as export

    checked = []

    def fail_shot_4(data, n, ends, min_psnr):
        checked.append(n)
        return "a scripted failure" if len(checked) == 3 else None  # the third clip cut: shot 4

    monkeypatch.setattr(export, "verify_clip", fail_shot_4)
    unit = _unit(sources["coded"], records["coded"])
    config = _config(encoders=1)  # one writer: clips are checked in the order they are cut
    config.filters.mode = "score"
    out = run_stage(ClipExporter(config), unit)
    assert [[s.index for s in scene.shots] for scene in out] == [[0, 2], [5]]
    assert [scene.scene.verdict for scene in out] == [None, "too-few-shots"]
