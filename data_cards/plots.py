"""Histograms of a dataset's statistics as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path

from .stats import DatasetStats

log = logging.getLogger(__name__)

# file stem -> (distribution key, title, x label)
HISTOGRAMS = {
    "shot_duration": ("shot_duration_s", "Shot duration", "seconds"),
    "shots_per_scene": ("shots_per_scene", "Shots per scene", "shots"),
    "characters_per_scene": ("characters_per_scene", "Characters per scene", "characters in the registry"),
    "caption_length": ("caption_words", "Caption length", "words"),
    "scene_similarity": ("scene_similarity", "Scene link similarity", "cosine similarity admitting a shot"),
}


def write_plots(stats: DatasetStats, out_dir: str | Path) -> dict[str, Path]:
    """One PNG per histogram plus ``resolution.png``, each only when it has data (an uncaptioned dataset has
    no caption-length plot), so that the card shows only what the run measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for stem, (key, title, xlabel) in HISTOGRAMS.items():
        values = stats.distributions.get(key, [])
        if not values:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        integer = all(float(v).is_integer() for v in values)
        bins = range(int(min(values)), int(max(values)) + 2) if integer else min(30, max(5, len(values) // 4))
        ax.hist(values, bins=bins, color="#4c72b0", edgecolor="white", align="left" if integer else "mid")
        ax.set_ylabel("count")
        ax.set_title(f"{title} (n={len(values)})")
        ax.set_xlabel(xlabel)
        fig.tight_layout()
        paths[stem] = out / f"{stem}.png"
        fig.savefig(paths[stem])
        plt.close(fig)
    labels = list(stats.resolutions)[:15]
    if labels:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        ax.barh(labels[::-1], [stats.resolutions[k] for k in labels[::-1]], color="#55a868")
        ax.set_xlabel("videos")
        ax.set_title("Source resolution (width x height)")
        fig.tight_layout()
        paths["resolution"] = out / "resolution.png"
        fig.savefig(paths["resolution"])
        plt.close(fig)
    log.info("wrote %d plots to %s", len(paths), out)
    return paths
