"""Scene clustering: contiguous runs of shots of one place and cast, by the sliding-window rule.

Shots are taken in order; shot i joins the current scene when its cosine similarity to ANY of the last
``window`` shots of that scene is >= ``threshold`` (so A-B-A-B dialogue cutting stays one scene), else it
opens a new scene; a scene holding ``max_shots`` shots is closed. Pipeline order: the shot filter runs
first, so clustering sees the kept shots only; the scene filter runs after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import CurateConfig
from .embed import default_threshold
from .records import SceneRecord, scene_id
from .stage import Stage, VideoUnit


@dataclass
class SceneGroup:
    """Rows of one scene, in order. ``link_similarity[k]`` admitted ``shots[k + 1]``, matching the shot at
    position ``link_shot[k]`` within the scene."""

    shots: list[int]
    link_similarity: list[float] = field(default_factory=list)
    link_shot: list[int] = field(default_factory=list)


def cluster_scenes(embeddings: np.ndarray, window: int, threshold: float, max_shots: int) -> list[SceneGroup]:
    """Group the rows of ``embeddings`` (N, D), L2-normalised, in order, into contiguous scenes."""
    if window < 1 or max_shots < 1:
        raise ValueError(f"window and max_shots must be >= 1, got {window} and {max_shots}")
    emb = np.asarray(embeddings, dtype=np.float32)
    groups: list[SceneGroup] = []
    for i in range(len(emb)):
        cur = groups[-1] if groups else None
        if cur is not None and len(cur.shots) < max_shots:
            first = max(0, len(cur.shots) - window)
            sims = emb[cur.shots[first:]] @ emb[i]
            best = len(sims) - 1 - int(np.argmax(sims[::-1]))  # ties go to the most recent shot
            if sims[best] >= threshold:
                cur.shots.append(i)
                cur.link_similarity.append(float(sims[best]))
                cur.link_shot.append(first + best)
                continue
        groups.append(SceneGroup([i]))
    return groups


class SceneClusterer(Stage):
    """Scenes over the kept shots of a video; sets ``shot.scene_id`` and ``video.n_scenes``.

    The threshold is ``scenes.threshold`` or, when None, the default calibrated for the embedder that made
    ``unit.embeddings`` (``embed.DEFAULT_THRESHOLDS``).
    """

    name = "scenes"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.scenes

    def process(self, unit: VideoUnit) -> VideoUnit:
        if unit.embeddings is None or len(unit.embeddings) != len(unit.shots):
            raise ValueError(f"{unit.item_id}: scene clustering needs one embedding per shot (run embed first)")
        threshold = self.config.threshold
        if threshold is None:
            threshold = default_threshold(unit.embedder)
        kept = [i for i, s in enumerate(unit.shots) if s.kept]
        groups = cluster_scenes(unit.embeddings[kept], self.config.window, threshold, self.config.max_shots)
        vid = unit.video.video_id
        unit.scenes = []
        for k, g in enumerate(groups):
            shots = [unit.shots[kept[j]] for j in g.shots]
            sid = scene_id(vid, k)
            for s in shots:
                s.scene_id = sid
            unit.scenes.append(
                SceneRecord(
                    scene_id=sid,
                    video_id=vid,
                    index=k,
                    shot_ids=[s.shot_id for s in shots],
                    start_s=shots[0].start_s,
                    end_s=shots[-1].end_s,
                    link_similarity=g.link_similarity,
                    link_shot=g.link_shot,
                )
            )
        unit.video.n_scenes = len(unit.scenes)
        self.stats.counts["scenes"] += len(unit.scenes)
        self.stats.counts["shots_clustered"] += len(kept)
        return unit
