"""Near-duplicate shots and scenes across the archive, from their embeddings, after all videos.

Re-uploads, trailers that repeat film footage and the same episode in two encodes give shots whose keyframe
embeddings are nearly identical. As the NVIDIA curators (NeMo Curator's semantic dedup) do, the embeddings
are first clustered with k-means (``n / dedup.cluster_size`` clusters, so each comparison block stays small
and the whole scales to millions), then compared pairwise (cosine) within each cluster. Pairs at or above
the threshold are joined (union-find); in each group the smallest id is the original and every other member
gets ``duplicate_of`` (that id) and ``duplicate_similarity`` (its cosine similarity to it). Only pairs from
different videos count: within one film, A-B-A-B dialogue shots are alike by design.

Scenes are compared by their mean shot embedding (L2-normalised). Embeddings are read from the ``clip.npy``
member of each written scene sample (the shards are the store; nothing else keeps them).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .config import DedupConfig

log = logging.getLogger(__name__)

_KMEANS_ITERS = 10
_BLOCK = 4096  # rows per assignment / comparison block (bounded memory)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = _KMEANS_ITERS) -> np.ndarray:
    """Cluster labels (N,) of L2-normalised rows ``x`` (N, D) by spherical k-means; deterministic per seed."""
    n = len(x)
    if k <= 1 or n <= k:
        return np.zeros(n, np.int64) if k <= 1 else np.arange(n)
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(n, k, replace=False)].copy()
    labels = np.zeros(n, np.int64)
    for _ in range(iters):
        for b in range(0, n, _BLOCK):
            labels[b : b + _BLOCK] = np.argmax(x[b : b + _BLOCK] @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = centres[empty]
        centres = _normalise(sums)
    return labels


def find_duplicates(
    ids: list[str], groups: list[str], embeddings: np.ndarray, threshold: float, cluster_size: int
) -> dict[str, tuple[str, float]]:
    """``{id: (original_id, similarity)}`` for items near-duplicating an item of another group (video).

    ``embeddings`` (N, D) are normalised here; ``groups[i]`` is the video of ``ids[i]``."""
    n = len(ids)
    if n < 2:
        return {}
    x = _normalise(embeddings)
    labels = kmeans(x, math.ceil(n / max(2, cluster_size)))
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    group = np.array(groups)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        for b in range(0, len(members), _BLOCK):
            rows = members[b : b + _BLOCK]
            sims = x[rows] @ x[members].T
            hit_r, hit_c = np.nonzero(sims >= threshold)
            for r, col in zip(rows[hit_r], members[hit_c]):
                if r < col and group[r] != group[col]:
                    parent[find(int(r))] = find(int(col))
    roots: dict[int, list[int]] = {}
    for i in range(n):
        roots.setdefault(find(i), []).append(i)
    out: dict[str, tuple[str, float]] = {}
    for members in roots.values():
        if len(members) < 2:
            continue
        original = min(members, key=lambda i: ids[i])
        for i in members:
            if i != original:
                out[ids[i]] = (ids[original], float(x[i] @ x[original]))
    return out


def _clip_embeddings(path: str) -> Iterator[tuple[str, bytes, bytes]]:
    """``(key, json, clip.npy)`` of each sample of a shard, reading only those members."""
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if ext in ("json", "clip.npy"):
                pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
                if len(pending[key]) == 2:
                    got = pending.pop(key)
                    yield key, got["json"], got["clip.npy"]


def mark_duplicates(out_dir: str, manifests: dict[str, list[Any]], shards: list[dict], config: DedupConfig) -> dict:
    """Set ``duplicate_of`` / ``duplicate_similarity`` on the shot and scene records of ``manifests`` from the
    embeddings in the written ``shards`` (index.json entries); returns counts for run.json."""
    for rec in manifests["shots"] + manifests["scenes"]:
        rec.duplicate_of, rec.duplicate_similarity = None, None
    shot_ids, shot_videos, shot_emb = [], [], []
    scene_ids, scene_videos, scene_emb = [], [], []
    for shard in shards:
        path = os.path.join(out_dir, shard["url"])
        if not os.path.getsize(path):  # an object-store mirror's placeholder: nothing to read here
            log.warning("dedup skipped: shard %s is not local", shard["url"])
            return {"skipped": "shards not local"}
        for key, meta, npy in _clip_embeddings(path):
            emb = np.load(io.BytesIO(npy), allow_pickle=False).astype(np.float32)
            info = json.loads(meta)
            video = info["video_id"]
            for shot, e in zip(info["shots"], emb):
                shot_ids.append(shot["shot_id"])
                shot_videos.append(video)
                shot_emb.append(e)
            scene_ids.append(key)
            scene_videos.append(video)
            scene_emb.append(_normalise(emb).mean(axis=0))
    counts = {"shots": 0, "scenes": 0}
    for name, ids, videos, emb, threshold in (
        ("shots", shot_ids, shot_videos, shot_emb, config.shot_threshold),
        ("scenes", scene_ids, scene_videos, scene_emb, config.scene_threshold),
    ):
        if not ids:
            continue
        found = find_duplicates(ids, videos, np.stack(emb), threshold, config.cluster_size)
        id_field = "shot_id" if name == "shots" else "scene_id"
        for rec in manifests[name]:
            hit = found.get(getattr(rec, id_field))
            if hit is not None:
                rec.duplicate_of, rec.duplicate_similarity = hit
        counts[name] = len(found)
    return counts
