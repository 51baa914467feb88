"""The commit journal of an output folder and its recovery after a crash.

Layout under ``OUT`` (DESIGN.md, "A curated dataset on disk")::

    shards/{prefix}-000000.tar         one sample per scene; written as ``.tar.tmp``, renamed when complete
    manifests/parts/{part}.{table}.parquet  the records of the videos a commit finished
    manifests/parts/{part}.json         the commit marker: its shard (name, sha256, bytes), video ids, stats

Resume is exact because a video is journaled only in the commit that holds all of its scenes. Shards roll
at video boundaries (a shard closes once it holds ``max_bytes`` after a whole video, so it may exceed that by
one video's scenes). A commit writes its part tables, then its marker, then renames its shard; ``recover``
deletes whatever a killed run left half-done: temporary shards, parts without a marker, markers whose shard
is missing, and shards no marker names. Finished videos are those named by a marker, rejected ones included
(a video that failed is not retried by a rerun into the same output; write to a new output to retry).
Inputs that cannot be opened at all have no content id: they leave only a reject row and are retried.

Several writers may share one output (the Ray executor gives each its own ``prefix``); ``recover`` must run
once before any of them starts, and ``finalize`` (``curation.finalize``) once after all of them closed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from .records import MANIFESTS, write_manifest
from .samples import VideoResult, json_ready
from .shard_writer import SHARDS_DIR, TMP_SUFFIX, ShardInfo, ShardWriter
from .stage import StageStats

log = logging.getLogger(__name__)

PARTS_DIR = os.path.join("manifests", "parts")


@dataclass
class Journal:
    """Committed parts of an output folder (their markers, in part-name order)."""

    markers: list[dict[str, Any]]

    @property
    def finished(self) -> set[str]:
        return {v for m in self.markers for v in m["videos"]}

    def shard_names(self) -> set[str]:
        return {os.path.basename(m["shard"]["url"]) for m in self.markers if m["shard"]}


def _parts_dir(out_dir: str) -> str:
    return os.path.join(out_dir, PARTS_DIR)


def _read_markers(out_dir: str) -> list[dict[str, Any]]:
    d = _parts_dir(out_dir)
    if not os.path.isdir(d):
        return []
    markers = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                markers.append(json.load(f))
    return markers


def read_journal(out_dir: str) -> Journal:
    """The committed parts, without touching anything (call ``recover`` first after a crash)."""
    return Journal(_read_markers(out_dir))


def recover(out_dir: str) -> Journal:
    """Delete what an interrupted run left half-written, and return the committed journal."""
    parts, shards = _parts_dir(out_dir), os.path.join(out_dir, SHARDS_DIR)
    removed: list[str] = []

    def rm(path: str) -> None:
        os.remove(path)
        removed.append(os.path.relpath(path, out_dir))

    markers = []
    for m in _read_markers(out_dir):
        if m["shard"] and not os.path.exists(os.path.join(out_dir, m["shard"]["url"])):
            rm(os.path.join(parts, m["part"] + ".json"))  # killed between marker and shard rename
        else:
            markers.append(m)
    valid_parts = {m["part"] for m in markers}
    if os.path.isdir(parts):
        for name in sorted(os.listdir(parts)):
            if name.split(".", 1)[0] not in valid_parts or ".tmp" in name:
                rm(os.path.join(parts, name))
    journal = Journal(markers)
    if os.path.isdir(shards):
        named = journal.shard_names()
        for name in sorted(os.listdir(shards)):
            if name not in named:
                rm(os.path.join(shards, name))
    manifests = os.path.join(out_dir, "manifests")
    if os.path.isdir(manifests):
        for name in sorted(os.listdir(manifests)):
            if ".tmp" in name:
                rm(os.path.join(manifests, name))
    if removed:
        log.warning("removed %d leftovers of an interrupted run in %s: %s", len(removed), out_dir, removed)
    return journal


class DatasetWriter:
    """Writes videos' samples to shards and journals each video once all its scenes are committed.

    ``add`` one ``VideoResult`` at a time (its samples go into the open shard, so a video never spans two
    shards); ``add_stats`` the stage counters of the work since the last call; ``close`` commits the rest.
    """

    def __init__(self, out_dir: str, prefix: str = "scenes", max_bytes: int = 1_000_000_000):
        self.out_dir, self.prefix = out_dir, prefix
        os.makedirs(_parts_dir(out_dir), exist_ok=True)
        pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{6}})")
        journal = read_journal(out_dir)
        shard_nums = [int(m.group(1)) for n in journal.shard_names() if (m := pattern.match(n))]
        part_nums = [int(m.group(1)) for mk in journal.markers if (m := pattern.match(mk["part"]))]
        self._part = max(part_nums, default=-1) + 1
        self.shards = ShardWriter(out_dir, prefix, max_bytes, max(shard_nums, default=-1) + 1, self._journal_part)
        self._pending: list[VideoResult] = []
        self._stats: dict[str, StageStats] = {}
        self._provenance: dict[str, Any] = {}

    def add(self, result: VideoResult) -> None:
        """Write a video's samples and queue its records; commits the shard when it is full."""
        scenes = {s.scene_id: s for s in result.scenes}
        for sample in result.samples:
            shard = self.shards.write(sample)
            scenes[sample["__key__"]].shard = shard
        self._pending.append(result)
        self.shards.roll_if_full()

    def add_stats(self, stats: dict[str, StageStats], provenance: dict[str, Any] | None = None) -> None:
        """Stage counters of work done since the last call (journaled with the next commit)."""
        for name, s in stats.items():
            self._stats.setdefault(name, StageStats()).merge(s)
        self._provenance.update(provenance or {})

    def commit(self) -> None:
        """Commit the open shard (or, with no sample open, just the queued records)."""
        if self.shards.open_samples:
            self.shards.commit()
        elif self._pending or self._stats:
            self._journal_part(None)

    def close(self) -> None:
        self.commit()

    def _journal_part(self, shard: ShardInfo | None) -> None:
        part = f"{self.prefix}-{self._part:06d}"
        parts = _parts_dir(self.out_dir)
        tables: dict[str, list[Any]] = {name: [] for name in MANIFESTS}
        for r in self._pending:
            if r.video is not None:
                tables["videos"].append(r.video)
            tables["shots"] += r.shots
            tables["scenes"] += r.scenes
            tables["captions"] += r.captions
            tables["rejects"] += r.rejects
        for name, cls in MANIFESTS.items():
            write_manifest(tables[name], cls, os.path.join(parts, f"{part}.{name}.parquet"))
        marker = {
            "part": part,
            "shard": asdict(shard) if shard else None,
            "videos": sorted(r.video.video_id for r in self._pending if r.video is not None),
            "stats": [[k, v.to_dict()] for k, v in self._stats.items()],  # pipeline order
            "provenance": json_ready(self._provenance),
        }
        path = os.path.join(parts, f"{part}.json")
        with open(path + TMP_SUFFIX, "w") as f:
            json.dump(marker, f, sort_keys=True, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + TMP_SUFFIX, path)
        self._pending, self._stats, self._provenance = [], {}, {}
        self._part += 1
