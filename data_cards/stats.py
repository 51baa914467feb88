"""Statistics of a curated dataset computed from its manifests: counts, the reject funnel, distributions."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.records import clip_seconds

from .dataset import CuratedDataset


@dataclass
class FunnelLevel:
    """Items of one kind entering the pipeline, leaving it, and the rejected ones by ``(stage, reason)``.

    An item rejected twice counts once, under its first reject row, so ``items_in`` equals ``items_out``
    plus the rejects plus ``unaccounted`` (items that left without a reject row; 0 in a sound dataset).
    """

    name: str
    items_in: int
    items_out: int
    rejects: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    @property
    def unaccounted(self) -> int:
        return self.items_in - self.items_out - self.rejected


@dataclass
class DatasetStats:
    counts: dict[str, Any]
    funnel: list[FunnelLevel]
    stages: list[dict[str, Any]]  # run.json stage counters, in pipeline order
    llm: dict[str, float]
    version: str
    config_hash: str
    distributions: dict[str, list[float]]
    resolutions: dict[str, int]  # "WxH" -> videos
    # reject rows by (stage, level, reason); level is videos, shots or scenes (what the row's item is)
    reject_rows: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def rejects_where(self, stage: str | None = None, level: str | None = None, reason: str | None = None) -> int:
        """Reject rows matching every given part of ``(stage, level, reason)``."""
        return sum(
            n
            for (st, lv, r), n in self.reject_rows.items()
            if stage in (None, st) and level in (None, lv) and reason in (None, r)
        )


def config_hash(config: Any) -> str:
    """Short sha256 of the canonical JSON of a config (``unknown`` when the run recorded none)."""
    if not config:
        return "unknown"
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _levels(ds: CuratedDataset) -> dict[str, str]:
    """Item id -> "shots" or "scenes" for every shot and scene of the manifests (anything else is a video)."""
    levels = {s["shot_id"]: "shots" for s in ds.rows("shots")}
    levels.update({s["scene_id"]: "scenes" for s in ds.rows("scenes")})
    return levels


def _reject_rows(ds: CuratedDataset) -> dict[tuple[str, str, str], int]:
    """Reject rows counted by (stage, level, reason)."""
    levels = _levels(ds)
    return dict(Counter((r["stage"], levels.get(r["item_id"], "videos"), r["reason"]) for r in ds.rows("rejects")))


def _funnel(ds: CuratedDataset, videos_ok: int, scenes_released: int) -> list[FunnelLevel]:
    videos, shots, scenes = ds.rows("videos"), ds.rows("shots"), ds.rows("scenes")
    ids = {
        "scene": {s["scene_id"] for s in scenes},
        "shot": {s["shot_id"] for s in shots},
    }
    first: dict[str, dict[str, Any]] = {}
    for r in ds.rows("rejects"):
        first.setdefault(r["item_id"], r)
    by_level: dict[str, Counter] = {"video": Counter(), "shot": Counter(), "scene": Counter()}
    unknown_videos = 0
    video_ids = {v["video_id"] for v in videos} | {v["uri"] for v in videos}
    for item, r in first.items():
        level = next((lv for lv, s in ids.items() if item in s), "video")
        if level == "video" and item not in video_ids:
            unknown_videos += 1  # an input that could not be opened has no row in videos.parquet
        by_level[level][(r["stage"], r["reason"])] += 1
    return [
        FunnelLevel("videos", len(videos) + unknown_videos, videos_ok, dict(by_level["video"])),
        FunnelLevel("shots", len(shots), sum(bool(s["kept"]) for s in shots), dict(by_level["shot"])),
        FunnelLevel("scenes", len(scenes), scenes_released, dict(by_level["scene"])),
    ]


def released_scenes(ds: CuratedDataset) -> list[dict[str, Any]]:
    """Scenes written to a shard (kept, with a shard name), in manifest order."""
    return [s for s in ds.rows("scenes") if s["kept"] is not False and s["shard"]]


def compute_stats(ds: CuratedDataset) -> DatasetStats:
    """All numbers the card shows, from the manifests (and run.json for stage timings and LLM usage)."""
    videos = ds.rows("videos")
    ok = [v for v in videos if v["status"] == "ok"]
    shots = {s["shot_id"]: s for s in ds.rows("shots")}
    released = released_scenes(ds)
    released_shots = [shots[i] for s in released for i in s["shot_ids"] if i in shots]
    captions = [c for c in ds.rows("captions") if c["caption"]]
    funnel = _funnel(ds, len(ok), len(released))
    counts = {
        "videos_in": funnel[0].items_in,
        "videos": len(ok),
        "hours": sum(v["duration_s"] or 0.0 for v in ok) / 3600,
        "shots": len(shots),
        "shots_kept": funnel[1].items_out,
        "scenes": len(released) + funnel[2].rejected + funnel[2].unaccounted,
        "scenes_released": len(released),
        "shots_released": len(released_shots),
        "hours_released": sum(clip_seconds(s) for s in released_shots) / 3600,
        "kept_ratio": len(released_shots) / len(shots) if shots else 0.0,
        "captions": len(captions),
        "characters": sum(s["n_characters"] or 0 for s in released),
        "shards": len(ds.shards),
        "samples": sum(s.nsamples for s in ds.shards),
        "bytes": sum(s.bytes for s in ds.shards),
    }
    stages = [{"name": k, **v} for k, v in (ds.run.get("stages") or {}).items()]
    llm = {k: v for k, v in (ds.run.get("llm") or {}).items() if isinstance(v, int | float)}
    distributions = {
        "shot_duration_s": [clip_seconds(s) for s in released_shots],
        "shots_per_scene": [float(len(s["shot_ids"])) for s in released],
        "characters_per_scene": [float(s["n_characters"]) for s in released if s["n_characters"] is not None],
        "caption_words": [float(len(c["caption"].split())) for c in captions],
        "scene_similarity": [float(x) for s in released for x in (s["link_similarity"] or [])],
    }
    resolutions = Counter(f"{v['width']}x{v['height']}" for v in ok)
    return DatasetStats(
        counts=counts,
        funnel=funnel,
        stages=stages,
        llm=llm,
        version=(ds.run.get("versions") or {}).get("filmweaver", "unknown"),
        config_hash=config_hash(ds.run.get("config")),
        distributions=distributions,
        resolutions=dict(resolutions.most_common()),
        reject_rows=_reject_rows(ds),
    )


_TIME_KEYS = ("finished_at", "started_at", "date", "time")


def run_date(run: dict[str, Any], run_json: Path | None = None) -> datetime.date:
    """The day a run finished: an ISO time in ``run.json`` (``finished_at``, ``started_at``, ``date``, also
    in its last ``history``/``runs`` entry), else the ``YYYYMMDD`` that starts a Ray ``run_id``, else the
    modification time of ``run_json`` (written when the run finished), else today (UTC)."""
    entries = [run] + [e for k in ("history", "runs") for e in reversed(run.get(k) or []) if isinstance(e, dict)]
    for entry in entries:
        for key in _TIME_KEYS:
            value = entry.get(key)
            if isinstance(value, str):
                try:
                    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).date()
                except ValueError:
                    pass
        m = re.match(r"^(\d{4})(\d{2})(\d{2})", str(entry.get("run_id", "")))
        if m:
            return datetime.date(*map(int, m.groups()))
    if run_json is not None and run_json.is_file():
        return datetime.datetime.fromtimestamp(os.path.getmtime(run_json), datetime.UTC).date()
    return datetime.datetime.now(datetime.UTC).date()


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B")]
    bounds += [(10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
    return next((label for bound, label in bounds if n < bound), "n>1T")
