"""Near-duplicates across videos: re-encoded and trimmed copies are found, different films left alone;
k-means + within-cluster cosine on embeddings, identical on both engines' finalize."""

from __future__ import annotations

import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from curation.config import load_config
from curation.dedup import find_duplicates, kmeans
from filmweaver_testing.films import make_film
from pipelines.local import run_local


def test_find_duplicates_across_groups_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    near = base[:20] + rng.normal(scale=0.02, size=(20, 32)).astype(np.float32)  # copies in video "b"
    emb = np.concatenate([base, near])
    ids = [f"a{i:04d}" for i in range(200)] + [f"b{i:04d}" for i in range(20)]
    groups = ["a"] * 200 + ["b"] * 20
    for cluster_size in (1000, 40):  # one cluster, and k-means with several
        found = find_duplicates(ids, groups, emb, 0.95, cluster_size)
        assert found.keys() == {f"b{i:04d}" for i in range(20)}
        assert all(found[f"b{i:04d}"][0] == f"a{i:04d}" and found[f"b{i:04d}"][1] > 0.95 for i in range(20))
    same_video = find_duplicates(["x1", "x2"], ["x", "x"], np.stack([base[0], base[0]]), 0.95, 1000)
    assert same_video == {}  # alike shots within one video (dialogue) are not duplicates
    labels = kmeans(emb / np.linalg.norm(emb, axis=1, keepdims=True), 6)
    assert len(set(labels.tolist())) > 1 and all(labels[i] == labels[200 + i] for i in range(20))


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("archive")
    film, other = str(d / "film.mp4"), str(d / "other.mp4")
    make_film(film, seed=11, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(1.2, 1.5))
    make_film(other, seed=12, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(1.2, 1.5))
    reencoded, trimmed = str(d / "reencoded.mp4"), str(d / "trimmed.mp4")
    _ffmpeg("-i", film, "-vf", "scale=256:154", "-c:v", "libx264", "-crf", "30", reencoded)
    _ffmpeg("-ss", "0.4", "-i", film, "-c:v", "libx264", "-crf", "23", trimmed)
    return {"film": film, "other": other, "reencoded": reencoded, "trimmed": trimmed}


def test_reencoded_and_trimmed_copies_marked(archive, small_settings, manifests, tmp_path):
    config = load_config(None, [*small_settings, "filters.mode=score"])
    run_local(list(archive.values()), str(tmp_path), config)
    m = manifests(tmp_path)
    name_of = {v["video_id"]: next(k for k, p in archive.items() if p == v["uri"]) for v in m["videos"]}
    shots = {s["shot_id"]: s for s in m["shots"]}
    by_video = {}
    for s in m["shots"]:
        by_video.setdefault(name_of[s["video_id"]], []).append(s)
    copies = {"film", "reencoded", "trimmed"}
    for s in by_video["other"]:  # a different film: never a duplicate, nor the original of one
        assert s["duplicate_of"] is None
        assert all(t["duplicate_of"] != s["shot_id"] for t in m["shots"])
    marked = [s for s in m["shots"] if s["duplicate_of"] is not None]
    for s in marked:
        original = shots[s["duplicate_of"]]
        assert name_of[original["video_id"]] in copies and original["video_id"] != s["video_id"]
        assert s["duplicate_similarity"] >= 0.95 and original["duplicate_of"] is None
    # every shot of the copies is in a duplicate group (two of the three videos are marked, per shot)
    for name in ("reencoded", "trimmed"):
        n = len(by_video[name])
        grouped = [
            s for s in by_video[name] if s["duplicate_of"] or any(t["duplicate_of"] == s["shot_id"] for t in marked)
        ]
        assert len(grouped) >= n - 1, name  # the trimmed copy's cut first shot may differ
    scenes = [sc for sc in m["scenes"] if sc["duplicate_of"]]
    assert scenes and all(name_of[sc["video_id"]] in copies for sc in scenes)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["counts"]["duplicates"] == {"shots": len(marked), "scenes": len(scenes)}
