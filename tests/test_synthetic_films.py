"""Synthetic films: deterministic per seed, ground truth consistent with itself and with the video, A-B-A-B
dialogue framing, containers chosen by the path suffix."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from curation.video import iter_frames, probe
from filmweaver_testing.films import FilmTruth, _scene_framings, make_film

FILM = {"n_scenes": 3, "shots_per_scene": (2, 3), "shot_seconds": (0.6, 1.0), "size": (96, 64), "fps": 24}


def _frames(path: Path) -> list[np.ndarray]:
    return [f.rgb for f in iter_frames(str(path))]


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("films")
    p = {k: d / f"{k}.mp4" for k in ("a", "b", "other_seed", "gradual")}
    make_film(p["a"], seed=11, **FILM)
    make_film(p["b"], seed=11, **FILM)
    make_film(p["other_seed"], seed=12, **FILM)
    make_film(p["gradual"], seed=5, gradual_ratio=1.0, **FILM)
    return p


def test_same_seed_same_film(films):
    a, b = films["a"], films["b"]
    assert a.with_suffix(".json").read_text() == b.with_suffix(".json").read_text()
    fa, fb = _frames(a), _frames(b)
    assert len(fa) == len(fb) == FilmTruth.load(a).n_frames
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_other_seed_other_film(films):
    ta, tc = FilmTruth.load(films["a"]), FilmTruth.load(films["other_seed"])
    assert ta.seed == 11 and tc.seed == 12
    assert [(s.start_frame, s.end_frame) for s in ta.shots] != [(s.start_frame, s.end_frame) for s in tc.shots]
    fa, fc = _frames(films["a"]), _frames(films["other_seed"])
    assert np.abs(fa[0].astype(int) - fc[0].astype(int)).mean() > 10


@pytest.mark.parametrize("name", ["a", "gradual"])
def test_truth_is_consistent(films, name):
    path = films[name]
    truth = FilmTruth.load(path)
    assert truth == FilmTruth.from_json(truth.to_json())
    assert json.loads(path.with_suffix(".json").read_text())["n_frames"] == truth.n_frames
    shots = truth.shots
    assert [s.index for s in shots] == list(range(len(shots)))
    assert shots[0].start_frame == 0 and shots[-1].end_frame == truth.n_frames
    assert all(p.end_frame == s.start_frame for p, s in zip(shots, shots[1:]))  # contiguous, no gaps
    assert all(s.end_frame - s.start_frame >= 6 for s in shots)
    scenes = [s.scene for s in shots]
    assert scenes == sorted(scenes) and sorted(set(scenes)) == list(range(FILM["n_scenes"]))
    for k in range(FILM["n_scenes"]):
        assert FILM["shots_per_scene"][0] <= scenes.count(k) <= FILM["shots_per_scene"][1]
    assert truth.n_scenes == FILM["n_scenes"]
    assert truth.scene_starts() == [i for i, s in enumerate(shots) if i == 0 or s.scene != shots[i - 1].scene]
    assert truth.cut_frames() == [s.start_frame for s in shots[1:]]
    assert shots[0].transition_in == "none" and shots[0].transition_frames is None
    for s in shots[1:]:
        if s.transition_in == "cut":
            assert s.transition_frames is None
        else:
            assert s.transition_in in ("dissolve", "fade")
            a, b = s.transition_frames
            assert a <= s.start_frame < b and a >= shots[s.index - 1].start_frame and b <= s.end_frame
    # the video matches the truth: size, rate, frame count
    rec = probe(str(path))
    assert (rec.width, rec.height) == (truth.width, truth.height) == FILM["size"]
    assert (rec.fps_num, rec.fps_den) == (truth.fps_num, truth.fps_den) == (24, 1)
    assert rec.n_frames == truth.n_frames


def test_gradual_transitions_present_when_asked(films):
    truth = FilmTruth.load(films["gradual"])
    kinds = {s.transition_in for s in truth.shots[1:]}
    assert kinds & {"dissolve", "fade"}
    assert all(s.transition_in == "cut" for s in FilmTruth.load(films["a"]).shots[1:])  # ratio 0: hard cuts


def test_hard_cuts_are_visible(films):
    truth = FilmTruth.load(films["a"])
    frames = [f.astype(np.float32) for f in _frames(films["a"])]
    diffs = np.array([np.abs(frames[t] - frames[t - 1]).mean() for t in range(1, len(frames))])
    at_cuts = diffs[[c - 1 for c in truth.cut_frames()]]
    inside = np.delete(diffs, [c - 1 for c in truth.cut_frames()])
    assert at_cuts.min() > 3 * np.median(inside)


def test_fades_go_through_dark_frames(films):
    truth = FilmTruth.load(films["gradual"])
    fades = [s for s in truth.shots if s.transition_in == "fade"]
    assert fades, "seed 5 with gradual_ratio=1 should have a fade"
    frames = _frames(films["gradual"])
    for s in fades:
        a, b = s.transition_frames
        darkest = min(frames[t].mean() for t in range(a, b))
        assert darkest < 0.3 * frames[s.end_frame - 1].mean()


def test_dialogue_framing_alternates():
    for seed in range(20):
        kinds = _scene_framings(np.random.default_rng(seed), 6, 3, dialogue=True)
        body = [k for k in kinds if k != "wide"]
        assert len(body) >= 5 and kinds.count("wide") <= 1 and (kinds[0] == "wide" or "wide" not in kinds)
        assert all(k.startswith("close:") for k in body)
        assert body[0::2] == [body[0]] * len(body[0::2]) and body[1::2] == [body[1]] * len(body[1::2])
        assert body[0] != body[1]  # A-B-A-B between two different characters
        plain = _scene_framings(np.random.default_rng(seed), 6, 3, dialogue=False)
        assert all(x != y for x, y in zip(plain, plain[1:]))


def test_dialogue_close_ups_recur_in_the_video(tmp_path):
    """In A-B-A-B scenes, shot i+2 looks more like shot i (same character close-up) than shot i+1 does."""
    near, skip = [], []
    for seed in range(4):
        path = tmp_path / f"dialogue{seed}.mp4"
        truth = make_film(path, seed=seed, n_scenes=1, shots_per_scene=(5, 5), shot_seconds=(0.5, 0.6), size=(96, 64))
        frames = _frames(path)
        centre = [frames[(s.start_frame + s.end_frame) // 2][20:44, 32:64].reshape(-1, 3).mean(0) for s in truth.shots]
        for i in (1, 2):  # shots 1..4 always alternate (shot 0 may be a wide opening)
            near.append(np.abs(centre[i] - centre[i + 1]).mean())
            skip.append(np.abs(centre[i] - centre[i + 2]).mean())
    assert np.mean(skip) < 0.7 * np.mean(near)


@pytest.mark.parametrize(
    "suffix, codec, doctype, want_codec",
    [(".mkv", "libx264", b"matroska", "h264"), (".webm", "vp9", b"webm", "vp9")],
)
def test_container_follows_suffix(tmp_path, suffix, codec, doctype, want_codec):
    path = tmp_path / f"film{suffix}"
    short = {"n_scenes": 1, "shots_per_scene": (2, 2), "shot_seconds": (0.5, 0.5), "size": (64, 48)}
    truth = make_film(path, seed=2, codec=codec, **short)
    head = path.read_bytes()[:64]
    assert head[:4] == b"\x1a\x45\xdf\xa3" and doctype in head  # EBML header with the right DocType
    assert FilmTruth.load(path) == truth and path.with_suffix(".json").exists()
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == want_codec
    assert len(_frames(path)) == truth.n_frames


def test_make_film_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="even"):
        make_film(tmp_path / "odd.mp4", size=(97, 64))
    with pytest.raises(TypeError, match="unexpected"):
        make_film(tmp_path / "typo.mp4", size=(96, 64), nosie=2.0)
