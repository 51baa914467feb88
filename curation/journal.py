"""The commit journal of an output folder and its recovery after a crash.

Layout under ``OUT`` (DESIGN.md, "A curated dataset on disk")::

    shards/{prefix}-000000.tar              one sample per scene; written as ``.tar.tmp``, renamed when complete
    manifests/parts/{part}.{table}.parquet  the records of the videos a commit finished
    manifests/parts/{part}.json             the commit marker: its shards (name, sha256, bytes), its videos (each
                                            with its config hash and transient rejects), stage stats

A commit writes its part tables, then its marker (the commit point), then renames its shard, so a video is
journaled only in the commit that holds all of its scenes. A writer commits when its shard reaches
``max_bytes`` (shards roll at video boundaries, so a shard may exceed that by one video's scenes), and at
least every ``commit_videos`` videos or ``commit_s`` seconds: a killed run keeps what it committed.

``finalize`` (``curation.finalize``) folds every new part into one *compacted* part (a marker with
``compact: true`` that ``replaces`` the parts it absorbed) and merges small shards, so the journal holds one
compacted part plus the parts committed since: work per run is proportional to what is new.

``recover`` deletes whatever a killed run left half-done: temporary files, parts without a marker, markers
whose shard is missing, parts a compacted part replaced, and shards no live marker names. When one video is
journaled twice (reprocessed), the later commit wins. Inputs that cannot be opened at all have no content id:
they leave only a reject row and are retried.

Several writers may share one output (the Ray executor gives each its own ``prefix``); ``recover`` must run
once before any of them starts, and ``finalize`` once after all of them closed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .records import MANIFESTS, write_manifest
from .samples import VideoResult, json_ready
from .shard_writer import SHARDS_DIR, TMP_SUFFIX, ShardInfo, ShardWriter
from .stage import StageStats

log = logging.getLogger(__name__)

PARTS_DIR = os.path.join("manifests", "parts")


def normalized_marker(marker: dict[str, Any]) -> dict[str, Any]:
    """A marker in the current form (markers of earlier versions held one ``shard`` and a list of videos)."""
    if "shard" in marker:
        shard = marker.pop("shard")
        marker["shards"] = [shard] if shard else []
    if isinstance(marker.get("videos"), list):
        marker["videos"] = {v: {"config": None, "rejected": None, "retry": []} for v in marker["videos"]}
    marker.setdefault("time_ns", 0)
    marker.setdefault("replaces", [])
    marker.setdefault("compact", False)
    return marker


def commit_order(marker: dict[str, Any]) -> tuple[bool, int, str]:
    """Sort key of markers: a compacted part first (it holds everything finalized before any live part was
    committed, whatever the clocks of the nodes that committed them), then commit time, then part name."""
    return not marker["compact"], marker["time_ns"], marker["part"]


@dataclass
class Journal:
    """The live committed parts of an output folder, in commit order (later commits win)."""

    markers: list[dict[str, Any]]

    def videos(self) -> dict[str, dict[str, Any]]:
        """Journaled video id -> its entry: ``config`` (config hash, None before hashes were journaled),
        ``rejected`` (the video itself), ``retry`` (transient reject reasons: retried by the next run)."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.markers:
            out.update(m["videos"])
        return out

    @property
    def finished(self) -> set[str]:
        """Every journaled video id (ok or rejected)."""
        return set(self.videos())

    def shards(self) -> list[dict[str, Any]]:
        """``ShardInfo`` dicts of every live shard, in commit order."""
        return [s for m in self.markers for s in m["shards"]]

    def shard_names(self) -> set[str]:
        return {os.path.basename(s["url"]) for s in self.shards()}


def _parts_dir(out_dir: str) -> str:
    return os.path.join(out_dir, PARTS_DIR)


def _marker_names(out_dir: str, prefix: str | None = None) -> list[str]:
    d = _parts_dir(out_dir)
    if not os.path.isdir(d):
        return []
    return [
        n
        for n in os.listdir(d)
        if n.endswith(".json") and (prefix is None or n.startswith(prefix + "-")) and TMP_SUFFIX not in n
    ]


def _read_markers(out_dir: str, prefix: str | None = None) -> list[dict[str, Any]]:
    markers = []
    for name in _marker_names(out_dir, prefix):
        with open(os.path.join(_parts_dir(out_dir), name)) as f:
            markers.append(normalized_marker(json.load(f)))
    return sorted(markers, key=commit_order)


def part_key(marker: dict[str, Any]) -> list[Any]:
    """What a compacted marker's ``replaces`` names a part by: its name and commit time (a name may come back:
    a writer numbers its parts after the files it sees, and a compaction removes them)."""
    return [marker["part"], marker["time_ns"]]


def live_markers(markers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The markers no compacted marker replaced, in commit order."""
    replaced = {tuple(p) for m in markers for p in m["replaces"]}
    return sorted((m for m in markers if tuple(part_key(m)) not in replaced), key=commit_order)


def read_journal(out_dir: str, prefix: str | None = None) -> Journal:
    """The committed parts, without touching anything (call ``recover`` first after a crash).

    ``prefix``: only the parts of one writer (what a retried write task committed before), read without
    opening any other marker."""
    return Journal(live_markers(_read_markers(out_dir, prefix)))


def recover(out_dir: str) -> Journal:
    """Delete what an interrupted run left half-written, and return the committed journal."""
    parts, shards = _parts_dir(out_dir), os.path.join(out_dir, SHARDS_DIR)
    removed: list[str] = []

    def rm(path: str) -> None:
        os.remove(path)
        removed.append(os.path.relpath(path, out_dir))

    markers = []
    all_markers = _read_markers(out_dir)
    live = {tuple(part_key(m)) for m in live_markers(all_markers)}
    for m in all_markers:  # oldest first: a replaced part never outlives the part that replaced it
        missing = [s["url"] for s in m["shards"] if not os.path.exists(os.path.join(out_dir, s["url"]))]
        if tuple(part_key(m)) not in live:
            rm(os.path.join(parts, m["part"] + ".json"))  # killed while a finalize removed what it replaced
        elif missing and not m["compact"]:
            rm(os.path.join(parts, m["part"] + ".json"))  # killed between marker and shard rename
        else:
            if missing:
                raise RuntimeError(f"{out_dir}: the compacted journal names missing shards {missing}")
            markers.append(m)
    valid_parts = {m["part"] for m in markers}
    if os.path.isdir(parts):
        for name in sorted(os.listdir(parts)):
            if name.split(".", 1)[0] not in valid_parts or TMP_SUFFIX in name:
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
            if TMP_SUFFIX in name:
                rm(os.path.join(manifests, name))
    if removed:
        log.warning("removed %d leftovers of an interrupted run in %s: %s", len(removed), out_dir, removed[:20])
    return journal


def write_marker(out_dir: str, marker: dict[str, Any]) -> None:
    """Write a commit marker atomically (temporary name, fsync, rename): the commit point of a part."""
    path = os.path.join(_parts_dir(out_dir), f"{marker['part']}.json")
    with open(path + TMP_SUFFIX, "w") as f:
        json.dump(json_ready(marker), f, sort_keys=True, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + TMP_SUFFIX, path)


def _next_index(names: list[str], pattern: re.Pattern[str]) -> int:
    return max((int(m.group(1)) for n in names if (m := pattern.match(n))), default=-1) + 1


class DatasetWriter:
    """Writes videos' samples to shards and journals each video once all its scenes are committed.

    ``add`` one ``VideoResult`` at a time (its samples go into the open shard, so a video never spans two
    shards); ``add_stats`` the stage counters of the work since the last call; ``close`` commits the rest.
    A commit happens when the shard reaches ``max_bytes``, and at least every ``commit_videos`` videos or
    ``commit_s`` seconds (``None``: only per shard). ``config_hash`` is journaled with every video, so a rerun
    can tell videos curated with another config. Only file names are listed, no marker is read;
    ``earlier_names``: names of this writer's files elsewhere (a staging writer of an object-store output).
    """

    def __init__(
        self,
        out_dir: str,
        prefix: str = "scenes",
        max_bytes: int = 1_000_000_000,
        *,
        commit_videos: int | None = None,
        commit_s: float | None = None,
        config_hash: str | None = None,
        earlier_names: Sequence[str] = (),
    ):
        self.out_dir, self.prefix, self.config_hash = out_dir, prefix, config_hash
        self.commit_videos, self.commit_s = commit_videos, commit_s
        os.makedirs(_parts_dir(out_dir), exist_ok=True)
        own = re.escape(prefix)
        shard_dir = os.path.join(out_dir, SHARDS_DIR)
        names = [*earlier_names, *os.listdir(_parts_dir(out_dir))]
        names += os.listdir(shard_dir) if os.path.isdir(shard_dir) else []
        self._part = _next_index(names, re.compile(rf"^{own}-(\d{{6}})\.(json|\w+\.parquet)$"))
        first_shard = _next_index(names, re.compile(rf"^{own}-(\d{{6}})\.tar"))
        self.shards = ShardWriter(out_dir, prefix, max_bytes, first_shard, self._journal_part)
        self._pending: list[VideoResult] = []
        self._stats: dict[str, StageStats] = {}
        self._provenance: dict[str, Any] = {}
        self._last_commit = time.monotonic()
        self.parts: list[str] = []  # parts committed by this writer, in order

    def add(self, result: VideoResult) -> None:
        """Write a video's samples and queue its records; commits when the shard is full or one is due."""
        scenes = {s.scene_id: s for s in result.scenes}
        for sample in result.samples:
            shard = self.shards.write(sample)
            scenes[sample["__key__"]].shard = shard
        self._pending.append(result)
        if self.shards.roll_if_full() is None and self._due():
            self.commit()

    def _due(self) -> bool:
        if self.commit_videos is not None and len(self._pending) >= self.commit_videos:
            return True
        return self.commit_s is not None and time.monotonic() - self._last_commit >= self.commit_s

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
        videos = {
            r.video.video_id: {
                "config": self.config_hash,
                "rejected": r.video.status != "ok",
                "retry": sorted({j.reason for j in r.rejects if j.transient}),
            }
            for r in self._pending
            if r.video is not None and r.video.status != "duplicate"  # finished by the original's commit
        }
        marker = {
            "part": part,
            "time_ns": time.time_ns(),
            "shards": [asdict(shard)] if shard else [],
            "videos": videos,
            "stats": [[k, v.to_dict()] for k, v in self._stats.items()],  # pipeline order
            "provenance": self._provenance,
            "replaces": [],
            "compact": False,
        }
        write_marker(self.out_dir, marker)
        self._pending, self._stats, self._provenance = [], {}, {}
        self._part += 1
        self._last_commit = time.monotonic()
        self.parts.append(part)
