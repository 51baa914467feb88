"""Evaluation metrics on constructed inputs with known values."""

import numpy as np
import pytest

from curation.embed import FallbackEmbedder
from inference.metrics import (
    StoryResult,
    character_consistency,
    count_cuts,
    crop_box,
    cross_group_similarity,
    overall_consistency,
    results_table,
    text_alignment,
)
from inference.story import write_mp4
from training.synthetic import shot_frames


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


def test_results_table_has_a_row_per_story_and_a_mean():
    rows = [StoryResult("s1", 3, 0.9, None, 0.3, 0), StoryResult("s2", 2, 0.7, 0.8, 0.1, 1)]
    table = results_table(rows).splitlines()
    assert table[2] == "| s1 | 3 | 90.00 | - | 30.00 | 0 |"
    assert table[-1] == "| **mean** | 5 | 80.00 | 80.00 | 20.00 | 0.50 |"
