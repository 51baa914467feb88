"""Per-shot scores on fixtures with known answers: still vs slow vs fast pan (at two frame rates and two
sizes), text overlay vs none, blur vs sharp, an aesthetic head saved and loaded, scene buckets."""

import cv2
import numpy as np
import pytest
import torch

from curation.buckets import aspect_bucket, duration_bucket, resolution_bucket
from curation.config import BucketsConfig, ConfigError, ScoresConfig
from curation.records import ShotRecord
from curation.scores import AestheticHead, KeyframeScorer, MotionSampler, TextDetector, sharpness
from curation.stage import Keyframe


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (h // 8, w // 8), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)


def _pan_scores(speed: float, fps: float, width: int, seconds: float = 2.0, grain: float = 0.0):
    """Flow and frozen of a texture panned ``speed`` frame widths per second, seen at ``width`` pixels."""
    big = _texture(180, 1400)
    sampler = MotionSampler(ScoresConfig())
    rng = np.random.default_rng(1)
    for k in range(int(seconds * fps)):
        t = k / fps
        x = int(round(speed * t * 320))
        frame = big[:, x : x + 320].astype(np.float32)
        if grain:
            frame += rng.normal(0, grain, frame.shape)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        sampler.add(t, cv2.resize(frame, (width, width * 180 // 320), interpolation=cv2.INTER_AREA))
    return sampler.result()


def test_motion_orders_still_slow_fast_and_ignores_fps_and_size():
    still_flow, still_frozen = _pan_scores(0.0, 24, 256)
    slow_flow, slow_frozen = _pan_scores(0.05, 24, 256)
    fast_flow, fast_frozen = _pan_scores(0.4, 24, 256)
    assert still_frozen == 1.0 and slow_frozen == 0.0 and fast_frozen == 0.0
    assert still_flow < 0.002 < slow_flow < fast_flow
    # the pan moves 0.05 frame widths/s = 0.05 * 320 / diag(320x180) = 0.044 diagonals/s
    assert slow_flow == pytest.approx(0.044, rel=0.35)
    for fps, width in [(12, 256), (30, 128), (60, 200)]:
        flow, _ = _pan_scores(0.05, fps, width)
        assert flow == pytest.approx(slow_flow, rel=0.2), (fps, width)


def test_grain_or_a_slow_drift_is_not_frozen():
    # real calm footage changes by grain and small movements (>= 0.046 on the real calibration set)
    _, frozen = _pan_scores(0.0, 24, 256, grain=1.0)
    assert frozen == 0.0
    _, frozen = _pan_scores(0.02, 24, 256)  # a slow drift: 6 px per second on a 320 px frame
    assert frozen == 0.0


def test_short_shot_compares_first_and_last_frame():
    sampler = MotionSampler(ScoresConfig(flow_interval_s=0.5))
    tex = _texture(90, 400)
    for k in range(4):  # 4 frames at 24 fps: shorter than the interval
        sampler.add(k / 24, tex[:, k * 4 : k * 4 + 160])
    flow, frozen = sampler.result()
    assert flow > 0.1 and frozen == 0.0
    single = MotionSampler(ScoresConfig())
    single.add(0.0, tex[:, :160])
    assert single.result() == (None, None)


def test_sharpness_blur_vs_sharp_independent_of_contrast():
    blocks = np.random.default_rng(0).integers(0, 255, (36, 64), dtype=np.uint8)  # sharp edges every 4 px
    img = cv2.cvtColor(cv2.resize(blocks, (256, 144), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2RGB)
    blurred = cv2.GaussianBlur(img, (0, 0), 3)
    faded = (img.astype(np.float32) * 0.4 + 60).astype(np.uint8)
    assert sharpness(blurred) < 0.3 * sharpness(img)
    assert sharpness(faded) == pytest.approx(sharpness(img), rel=0.15)
    assert sharpness(np.full((64, 64, 3), 128, np.uint8)) == 0.0


@pytest.fixture(scope="module")
def text_detector() -> TextDetector:
    return TextDetector(ScoresConfig().text_side)


def test_text_area_subtitle_vs_none(text_detector):
    base = cv2.cvtColor(cv2.GaussianBlur(_texture(256, 455, seed=3), (0, 0), 4), cv2.COLOR_GRAY2RGB)
    subtitled = base.copy()
    cv2.putText(subtitled, "We have to leave tonight", (40, 225), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    assert text_detector.area(base) < 0.002
    area = text_detector.area(subtitled)
    assert 0.02 < area < 0.2  # one line of subtitles: a few percent of the frame


def test_text_areas_in_parallel_equal_one_at_a_time():
    """``text_threads`` keyframes at once (and ``text`` skipping some) give each shot its own keyframe's area."""
    frames = []
    for i in range(11):
        rgb = cv2.cvtColor(cv2.GaussianBlur(_texture(256, 455, seed=i), (0, 0), 4), cv2.COLOR_GRAY2RGB)
        if i % 3 == 0:
            cv2.putText(rgb, "We have to leave" + " now" * (i // 3), (20, 225), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                        (255, 255, 255), 2)  # fmt: skip
        frames.append(rgb)
    keys = [Keyframe.encode(f, 90) for f in frames]
    wanted = [i != 4 and i != 9 for i in range(11)]
    areas = {}
    for workers in (1, 2):
        scorer = KeyframeScorer(ScoresConfig(text_threads=workers))
        assert scorer.text_workers == workers
        shots = [ShotRecord(f"v-s{i:05d}", "v", i, 0, 10, 0.0, 1.0) for i in range(11)]
        scorer.score(shots, keys, None, "fallback", text=wanted)  # 11 shots: chunks of 4 and 8 keyframes
        scorer.close()
        areas[workers] = [s.text_area for s in shots]
    assert areas[1] == areas[2]
    assert areas[1][4] is None and areas[1][9] is None
    assert all(areas[1][i] > 0.01 for i in (0, 3, 6)) and all(areas[1][i] < 0.002 for i in (1, 2, 5, 7, 8, 10))
    assert len({areas[1][i] for i in (0, 3, 6)}) == 3  # longer lines: each shot got its own keyframe's area


def test_keyframe_scorer_and_aesthetic_head(tmp_path):
    head = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.2), torch.nn.Linear(4, 1))
    path = tmp_path / "head.pth"
    torch.save(head.state_dict(), path)
    emb = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    loaded = AestheticHead(str(path))
    x = torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True))
    expected = head.eval()(x)[:, 0].detach().numpy()
    np.testing.assert_allclose(loaded(emb), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="takes 8-d"):
        AestheticHead(str(path), embed_dim=16)

    scorer = KeyframeScorer(ScoresConfig(text=False, aesthetic_head=str(path)))
    shots = [ShotRecord(f"v-s{i:05d}", "v", i, 0, 10, 0.0, 1.0) for i in range(3)]
    keys = [Keyframe.encode(cv2.cvtColor(_texture(64, 96, i), cv2.COLOR_GRAY2RGB), 90) for i in range(3)]
    scorer.score(shots, keys, emb, "open_clip")
    assert [s.aesthetic for s in shots] == pytest.approx(list(expected), rel=1e-5, abs=1e-6)
    assert all(s.sharpness > 0 and s.text_area is None for s in shots)
    fallback = [ShotRecord("v-s00000", "v", 0, 0, 10, 0.0, 1.0)]
    scorer.score(fallback, keys[:1], emb[:1], "fallback")  # not CLIP embeddings: no aesthetic score
    assert fallback[0].aesthetic is None


def test_buckets():
    cfg = BucketsConfig()
    assert resolution_bucket(1920, 1080, cfg.resolutions) == "1080p"
    assert resolution_bucket(1080, 1920, cfg.resolutions) == "1080p"
    assert resolution_bucket(320, 240, cfg.resolutions) == "lt360p"
    assert resolution_bucket(854, 480, cfg.resolutions) == "480p"
    assert aspect_bucket(1920, 1080, cfg.aspects) == "16:9"
    assert aspect_bucket(640, 480, cfg.aspects) == "4:3"
    assert aspect_bucket(1080, 1920, cfg.aspects) == "9:16"
    assert aspect_bucket(1920, 804, cfg.aspects) == "2.39:1"
    assert [duration_bucket(s, cfg.durations_s) for s in (1.0, 2.0, 7.5, 40.0, 90.0)] == [
        "<2s", "2-5s", "5-10s", ">=40s", ">=40s",
    ]  # fmt: skip
