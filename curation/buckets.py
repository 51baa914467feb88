"""Training-sampler buckets of a scene: resolution, aspect ratio and duration (``scenes.parquet`` columns).

A sampler batches scenes of one bucket together (same shape, similar length), as bucketed samplers in
video-diffusion training do. Edges come from ``buckets`` in the config.
"""

from __future__ import annotations

import math

from .config import BucketsConfig
from .records import SceneRecord, VideoRecord


def resolution_bucket(width: int, height: int, edges: list[int]) -> str:
    """'720p' etc.: the largest edge <= the short side (display pixels); 'lt{first}p' below the first edge."""
    short = min(width, height)
    fitting = [e for e in sorted(edges) if e <= short]
    return f"{fitting[-1]}p" if fitting else f"lt{min(edges)}p"


def _ratio(name: str) -> float:
    w, h = name.split(":")
    return float(w) / float(h)


def aspect_bucket(width: int, height: int, names: list[str]) -> str:
    """The named aspect ratio ('16:9', '4:3', ...) nearest ``width / height`` in log ratio."""
    r = math.log(width / height)
    return min(names, key=lambda n: abs(math.log(_ratio(n)) - r))


def duration_bucket(seconds: float, edges: list[float]) -> str:
    """'<2s', '2-5s', ..., '>=40s' for edges [2, 5, ..., 40]."""
    edges = sorted(edges)

    def fmt(x: float) -> str:
        return f"{x:g}"

    if seconds < edges[0]:
        return f"<{fmt(edges[0])}s"
    for lo, hi in zip(edges, edges[1:]):
        if seconds < hi:
            return f"{fmt(lo)}-{fmt(hi)}s"
    return f">={fmt(edges[-1])}s"


def scene_buckets(video: VideoRecord, scene: SceneRecord, config: BucketsConfig) -> tuple[str | None, ...]:
    """(resolution, aspect, duration) buckets of a scene; resolution and aspect None for an unknown size."""
    sized = video.width > 0 and video.height > 0
    return (
        resolution_bucket(video.width, video.height, config.resolutions) if sized else None,
        aspect_bucket(video.width, video.height, config.aspects) if sized else None,
        duration_bucket(scene.end_s - scene.start_s, config.durations_s),
    )
