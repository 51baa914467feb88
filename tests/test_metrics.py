"""Evaluation metrics on constructed inputs with known values."""

import json

import numpy as np
import pytest
from PIL import Image

from curation.embed import FallbackEmbedder
from filmweaver_testing.scene_shards import shot_frames
from inference.metrics import (
    FaceLocator,
    StoryResult,
    character_consistency,
    count_cuts,
    crop_box,
    cross_group_similarity,
    evaluate_session,
    overall_consistency,
    results_table,
    text_alignment,
)
from inference.story import write_mp4


class TableEmbedder:
    """Embeddings looked up by the first pixel's red value / by the text, for exact expected values."""

    def __init__(self, images: dict[int, list[float]], texts: dict[str, list[float]]):
        def unit(v):
            v = np.asarray(v, np.float32)
            return v / np.linalg.norm(v)

        self.images = {k: unit(v) for k, v in images.items()}
        self.texts = {k: unit(v) for k, v in texts.items()}

    def embed_images(self, images):
        return np.stack([self.images[int(im[0, 0, 0])] for im in images])

    def embed_texts(self, texts):
        return np.stack([self.texts[t] for t in texts])


def _flat(red: int, size: int = 16) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = red
    return img


def test_identical_frames_have_consistency_one():
    frame = np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    emb = FallbackEmbedder()
    assert overall_consistency(emb, [[frame], [frame.copy()], [frame, frame]]) == pytest.approx(1.0, abs=1e-5)
    other = np.random.default_rng(1).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    assert overall_consistency(emb, [[frame], [other]]) < 0.99
    assert overall_consistency(emb, [[frame]]) is None  # one shot: nothing across shots


def test_known_values_with_controlled_embeddings():
    emb = TableEmbedder({1: [1, 0], 2: [0, 1], 3: [1, 1]}, {"a": [1, 0], "b": [0, 1]})
    # pairs across shots only: (1,2)=0, (1,3)=(2,3)=1/sqrt2, within-shot (1,1) is ignored
    score = overall_consistency(emb, [[_flat(1), _flat(1)], [_flat(2)], [_flat(3)]])
    assert score == pytest.approx((0 + 0 + 2 / np.sqrt(2) + 1 / np.sqrt(2)) / 5)
    assert text_alignment(emb, ["a", "b"], [[_flat(1)], [_flat(3)]]) == pytest.approx((1 + 1 / np.sqrt(2)) / 2)
    assert cross_group_similarity([np.eye(2, dtype=np.float32)[:1], np.eye(2, dtype=np.float32)[:1]]) == 1.0


def test_character_consistency_uses_crops():
    emb = FallbackEmbedder()
    rng = np.random.default_rng(2)
    person = rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)
    frames = []
    for background, x in [((10, 200, 10), 4), ((200, 10, 200), 40)]:  # different places, same character
        img = np.zeros((32, 64, 3), np.uint8)
        img[:] = background
        img[8:24, x : x + 8] = person
        frames.append(img)
    crops = {
        "p": [
            (0, crop_box(frames[0], (4 / 64, 8 / 32, 12 / 64, 24 / 32))),
            (1, crop_box(frames[1], (40 / 64, 8 / 32, 48 / 64, 24 / 32))),
        ]
    }
    assert crops["p"][0][1].shape == (16, 8, 3)
    assert character_consistency(emb, crops) == pytest.approx(1.0, abs=1e-5)
    assert overall_consistency(emb, [[frames[0]], [frames[1]]]) < 0.9
    assert character_consistency(emb, {"p": crops["p"][:1]}) is None


def test_scuts_counts_a_spliced_cut(tmp_path):
    rng = np.random.default_rng(3)
    a = shot_frames(rng, 24, 64, (20, 20, 120), (220, 200, 40))
    b = shot_frames(rng, 24, 64, (200, 60, 30), (40, 180, 60))
    write_mp4(str(tmp_path / "one.mp4"), a, 16)
    write_mp4(str(tmp_path / "spliced.mp4"), np.concatenate([a, b]), 16)
    assert count_cuts(str(tmp_path / "one.mp4")) == 0
    assert count_cuts(str(tmp_path / "spliced.mp4")) == 1
    # PySceneDetect's default minimum scene length (15 frames) ignores a cut 8 frames in; the old 4 does not
    write_mp4(str(tmp_path / "early.mp4"), np.concatenate([a[:8], b]), 16)
    assert count_cuts(str(tmp_path / "early.mp4")) == 0
    assert count_cuts(str(tmp_path / "early.mp4"), min_scene_len=4) == 1


def test_results_table_has_a_row_per_story_and_a_mean():
    rows = [StoryResult("s1", 3, 0.9, None, 0.3, 0), StoryResult("s2", 2, 0.7, 0.8, 0.1, 1)]
    table = results_table(rows).splitlines()
    assert table[2] == "| s1 | 3 | 90.00 | - | - | 30.00 | 0 |"
    assert table[-1] == "| **mean** | 5 | 80.00 | 80.00 | - | 20.00 | 0.50 |"


def test_characters_are_localised_matched_and_scored_against_their_own_round_prompt(tmp_path):
    """Session evaluation with a locator: crops matched across shots; every round against its own prompt."""
    emb = TableEmbedder(
        {1: [1, 0, 0], 2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 1, 0]}, {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]}
    )
    frames = []
    for background, faces in [(4, [1]), (4, [2, 1]), (3, [2])]:  # two characters; shot 1 shows both
        img = np.full((16, 32, 3), 0, np.uint8)
        img[..., 0] = background
        for i, face in enumerate(faces):
            img[:, 16 * i : 16 * i + 8, 0] = face
        frames.append(img)
    # rounds: shot 0 prompted 'a'; shot 1 prompted 'b', extended by a round prompted 'c'
    records = [(0, "a", False, frames[0]), (1, "b", False, frames[1]), (1, "c", True, frames[2])]
    (tmp_path / "shots").mkdir()
    for r, (shot, prompt, extend, frame) in enumerate(records):
        d = tmp_path / "rounds" / f"{r:03d}"
        d.mkdir(parents=True)
        Image.fromarray(frame).save(d / "keyframe.png")
        (d / "round.json").write_text(json.dumps({"round": r, "shot": shot, "prompt": prompt, "extend": extend}))
    specs = [{"prompt": p, "extend": e} for _, p, e, _ in records]
    (tmp_path / "session.json").write_text(json.dumps({"rounds": specs}))

    def locator(image):  # boxes of the 8-pixel columns at x = 0 and 16 that differ from the background (x = 30)
        return [(x / 32, 0.0, (x + 8) / 32, 1.0) for x in (0, 16) if image[0, x, 0] != image[0, 30, 0]]

    result = evaluate_session(str(tmp_path), emb, locator=locator)
    assert result.extra == {"located_characters": 4, "character_crops": 4}
    # shot 0 crops {1}; shot 1 crops {2, 1, 2}: 1 matches 1 (1.0); 2, 1, 2 match 1 at 0, 1, 0
    assert result.character_consistency == pytest.approx((1.0 + (0 + 1 + 0) / 3) / 2)
    # every round against its own prompt (keyframes embed by their first pixel): 1/'a', 2/'b', 2/'c' -- the
    # extension is scored against 'c', not against 'b', its shot's first prompt (which would give 1.0)
    assert result.text_alignment == pytest.approx((1 + 1 + 0) / 3)
    # crops: 1/'a', 2/'b', 1/'b', 2/'c'
    assert result.character_text_alignment == pytest.approx((1 + 1 + 0 + 0) / 4)


def test_face_locator_runs_mtcnn_offline():
    locator = FaceLocator()
    assert locator(np.full((120, 160, 3), 128, np.uint8)) == []  # a flat frame has no face
