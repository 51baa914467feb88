"""Per-score distributions of a curated dataset for its card: quantiles, histogram and the threshold used.

Self-contained: takes the rows of ``manifests/shots.parquet`` (or ``scenes.parquet``) and the run's
``filters`` config; ``templates/scores.md.j2`` renders the result as a Markdown table (include it from the
card template with ``{% include "scores.md.j2" %}`` and pass ``score_table``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# score column -> (unit, filters key of its threshold, direction: shots "below" or "above" it are flagged)
SHOT_SCORES: dict[str, tuple[str, str | None, str]] = {
    "flow": ("frame diagonals / s", "min_motion", "below"),
    "frozen": ("fraction of frame pairs", "max_frozen", "at or above"),
    "text_area": ("fraction of keyframe", "max_text_area", "above"),
    "sharpness": ("Laplacian var / luma var", "min_sharpness", "below"),
    "aesthetic": ("head output", "min_aesthetic", "below"),
    "brightness": ("mean luma 0-255", "black_luma", "below"),
    "contrast": ("luma std 0-255", "blank_contrast", "below"),
}
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def score_distributions(
    rows: list[dict[str, Any]], filters: dict[str, Any] | None = None, bins: int = 20
) -> list[dict[str, Any]]:
    """One entry per score present in ``rows``: ``name, unit, n, missing, quantiles {q: value}, histogram
    (edges, counts), threshold, flagged`` (rows the threshold flags; None without a threshold)."""
    filters = filters or {}
    out = []
    for name, (unit, key, direction) in SHOT_SCORES.items():
        values = np.array([r[name] for r in rows if r.get(name) is not None], dtype=np.float64)
        missing = sum(1 for r in rows if r.get(name) is None)
        if not len(values):
            continue
        threshold = filters.get(key) if key else None
        flagged = None
        if threshold is not None:
            if direction == "below":
                flagged = int((values < threshold).sum())
            elif direction == "above":
                flagged = int((values > threshold).sum())
            else:
                flagged = int((values >= threshold).sum())
        counts, edges = np.histogram(values, bins=bins)
        out.append(
            {
                "name": name,
                "unit": unit,
                "n": int(len(values)),
                "missing": missing,
                "quantiles": {q: float(np.quantile(values, q)) for q in QUANTILES},
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
                "threshold": threshold,
                "threshold_key": key,
                "direction": direction,
                "flagged": flagged,
            }
        )
    return out
