"""Scene clustering: contiguous runs of shots of one place and cast, by the sliding-window rule.

Shots are taken in order; shot i joins the current scene when its similarity to ANY of the last ``window``
shots of that scene is >= ``threshold`` (so A-B-A-B dialogue cutting stays one scene), else it opens a new
scene; a scene holding ``max_shots`` shots is closed. Two shots' similarity is the cosine of their mean
keyframe embeddings (first, middle and last frame by default), or with ``scenes.compare=best_pair`` the
best pair of their keyframes compared as sets (a shot that pans from one speaker to the other matches both;
on the real-footage benchmark it also lets more unrelated shots match, so it is not the default). Pipeline
order: the shot filter runs first, so clustering sees the kept shots only; the scene filter runs after it.

With ``scenes.adaptive`` the threshold adapts per video: the similarities of each shot to its window of
preceding shots form two groups on a film, links inside a scene and links across a scene change; Otsu's
split of that distribution (Otsu, "A threshold selection method from gray-level histograms", 1979) is the
video's threshold, kept within ``threshold +- adaptive_range`` and used only when the video has enough links
(``_ADAPT_MIN_LINKS``). Off by default: on the real-footage benchmark a fixed, calibrated threshold is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import CurateConfig
from .embed import default_threshold
from .records import SceneRecord, scene_id
from .stage import Stage, VideoUnit

_ADAPT_MIN_LINKS = 8  # fewer shot links than this: the configured threshold is used as is


@dataclass
class SceneGroup:
    """Rows of one scene, in order. ``link_similarity[k]`` admitted ``shots[k + 1]``, matching the shot at
    position ``link_shot[k]`` within the scene."""

    shots: list[int]
    link_similarity: list[float] = field(default_factory=list)
    link_shot: list[int] = field(default_factory=list)


def _as_sets(embeddings: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per shot a (k, D) float32 array of keyframe embeddings; a (N, D) array is one keyframe per shot."""
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        return [row[None] for row in embeddings.astype(np.float32, copy=False)]
    sets = [np.atleast_2d(np.asarray(e, dtype=np.float32)) for e in embeddings]
    if any(len(e) == 0 for e in sets):
        raise ValueError("every shot needs at least one keyframe embedding")
    return sets


def shot_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best cosine similarity over keyframe pairs of two shots, ``a`` (k, D) and ``b`` (m, D), L2-normalised."""
    return float(np.max(a @ b.T))


def window_links(embeddings: np.ndarray | Sequence[np.ndarray], window: int) -> np.ndarray:
    """(N-1,) similarity of each shot after the first to the best of the ``window`` shots before it."""
    sets = _as_sets(embeddings)
    return np.array(
        [max(shot_similarity(sets[i], sets[j]) for j in range(max(0, i - window), i)) for i in range(1, len(sets))],
        np.float32,
    )


def otsu_split(values: np.ndarray) -> float | None:
    """Threshold between the two groups of ``values`` that maximises the between-group variance (Otsu 1979):
    the midpoint of the two neighbouring sorted values it falls between; None for fewer than two values."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) < 2 or v[0] == v[-1]:
        return None
    n = len(v)
    k = np.arange(1, n)  # size of the low group
    csum = np.cumsum(v)[:-1]
    mean_low, mean_high = csum / k, (v.sum() - csum) / (n - k)
    between = k * (n - k) * (mean_high - mean_low) ** 2
    best = int(np.argmax(between))
    return float((v[best] + v[best + 1]) / 2)


def adaptive_threshold(links: np.ndarray, configured: float, spread: float) -> float:
    """The video's threshold: Otsu's split of its window links, within ``configured +- spread``."""
    if len(links) < _ADAPT_MIN_LINKS:
        return configured
    split = otsu_split(links)
    if split is None:
        return configured
    return float(np.clip(split, configured - spread, configured + spread))


def cluster_scenes(
    embeddings: np.ndarray | Sequence[np.ndarray], window: int, threshold: float, max_shots: int
) -> list[SceneGroup]:
    """Group shots, in order, into contiguous scenes.

    ``embeddings``: (N, D) L2-normalised rows (one per shot), or per shot a (k, D) array of its keyframes'
    embeddings (compared as sets: best pair).
    """
    if window < 1 or max_shots < 1:
        raise ValueError(f"window and max_shots must be >= 1, got {window} and {max_shots}")
    sets = _as_sets(embeddings)
    groups: list[SceneGroup] = []
    for i in range(len(sets)):
        cur = groups[-1] if groups else None
        if cur is not None and len(cur.shots) < max_shots:
            first = max(0, len(cur.shots) - window)
            sims = np.array([shot_similarity(sets[j], sets[i]) for j in cur.shots[first:]])
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
    ``unit.embeddings`` (``embed.DEFAULT_THRESHOLDS``); with ``scenes.adaptive`` it is the centre of the range
    the video's own threshold is chosen in. With ``scenes.compare=best_pair`` shots are compared as sets of
    keyframes (``unit.keyframe_embeddings``, left by the embed stage).
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
        per_keyframe = unit.keyframe_embeddings
        if self.config.compare == "best_pair" and per_keyframe is not None and len(per_keyframe) == len(unit.shots):
            sets = [per_keyframe[i] for i in kept]
        else:
            sets = _as_sets(unit.embeddings[kept])
        if self.config.adaptive:
            links = window_links(sets, self.config.window)
            threshold = adaptive_threshold(links, threshold, self.config.adaptive_range)
        unit.video.scene_threshold = threshold
        groups = cluster_scenes(sets, self.config.window, threshold, self.config.max_shots)
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
