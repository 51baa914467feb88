"""Records that flow through curation, their ids and their Arrow schemas.

Every Parquet manifest is written from the schemas here (``write_manifest``), never from ad-hoc dicts.
Ids contain no dots: WebDataset splits sample keys at the first dot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_ID_CHUNK = 1 << 20  # bytes hashed from each end of a file for its video_id


def video_id_from_bytes(size: int, head: bytes, tail: bytes) -> str:
    """Content id of a video: blake2b of its size and its first and last MiB (never its path)."""
    h = hashlib.blake2b(digest_size=10)
    h.update(str(size).encode())
    h.update(head)
    h.update(tail)
    return "v" + h.hexdigest()


def video_id_for_file(path: str | os.PathLike, filesystem: Any = None) -> str:
    """``video_id`` of a local file, or of a file on a ``pyarrow.fs`` filesystem when one is given."""
    if filesystem is None:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_ID_CHUNK)
            f.seek(max(0, size - _ID_CHUNK))
            tail = f.read(_ID_CHUNK)
        return video_id_from_bytes(size, head, tail)
    with filesystem.open_input_file(str(path)) as f:
        size = f.size()
        head = f.read(_ID_CHUNK)
        f.seek(max(0, size - _ID_CHUNK))
        tail = f.read(_ID_CHUNK)
    return video_id_from_bytes(size, head, tail)


def shot_id(video_id: str, index: int) -> str:
    return f"{video_id}-s{index:05d}"


def scene_id(video_id: str, index: int) -> str:
    return f"{video_id}-c{index:04d}"


@dataclass
class VideoRecord:
    """One input video. ``status`` is ``ok``, ``rejected`` or ``duplicate``; times in seconds, fps as num/den.

    ``n_frames``, ``duration_s`` and ``fps`` are those of the frames the analysis pass decoded (what a player
    shows: edit lists honoured, timestamp jumps ignored); until then, and for a video rejected before it,
    they hold the container's claims, which the ``container_*`` fields keep (None when the container
    makes none).
    """

    video_id: str
    uri: str
    status: str = "ok"
    duration_s: float = 0.0
    fps_num: int = 0
    fps_den: int = 1
    n_frames: int = 0
    width: int = 0  # display size: rotation and sample aspect ratio applied
    height: int = 0
    coded_width: int = 0
    coded_height: int = 0
    sar: str = "1:1"
    rotation: int = 0
    codec: str = ""
    container: str = ""
    bytes: int = 0
    variable_fps: bool = False
    n_shots: int = 0
    n_scenes: int = 0
    # decode truth beside container claims (curation.video)
    stream_index: int = 0  # container stream index of the main video stream
    container_duration_s: float | None = None
    container_n_frames: int | None = None
    container_fps: float | None = None
    partial: bool = False  # decoding stopped early (damage); only the complete shots before it are kept
    partial_reason: str | None = None
    duplicate_of: str | None = None  # status 'duplicate': uri of the input with the same content
    scene_threshold: float | None = None  # similarity threshold scene clustering used on this video

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den) if self.fps_num else Fraction(0)


@dataclass
class ShotRecord:
    """One shot: frames ``[start_frame, end_frame)`` of its video in presentation order."""

    shot_id: str
    video_id: str
    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    transition_in: str = "cut"  # cut | gradual
    scene_id: str | None = None
    kept: bool = True
    reject_reason: str | None = None
    keyframe_frames: list[int] = field(default_factory=list)
    # frames [clip_start_frame, clip_end_frame) the exported clip holds: the shot without the gradual
    # transitions at its ends, cut to export.max_shot_s (both set by the shot splitter)
    clip_start_frame: int | None = None
    clip_end_frame: int | None = None
    brightness: float = 0.0  # mean luma 0..255 of the sampled frames
    contrast: float = 0.0  # std of luma of the sampled frames
    motion: float = 0.0  # mean absolute luma difference between consecutive frames, 0..255
    n_faces: int | None = None
    boundary_score: float = 0.0  # detector confidence of the cut that opens this shot
    # scores (curation/scores.py); None where not measured
    flow: float | None = None  # mean optical-flow magnitude, frame diagonals per second
    frozen: float | None = None  # fraction 0..1 of frame pairs flow_interval_s apart that did not change
    text_area: float | None = None  # fraction 0..1 of the keyframe covered by detected text
    sharpness: float | None = None  # Laplacian variance / luma variance of the keyframe
    aesthetic: float | None = None  # aesthetic head on the CLIP embedding
    verdict: str | None = None  # the shot filter's reason at the run's thresholds, None when it passes
    duplicate_of: str | None = None  # shot_id of the shot (of another video) this one near-duplicates
    duplicate_similarity: float | None = None

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def clip_length(self) -> tuple[int, float]:
        """Frames and seconds of the clip this shot exports (``clip_span``)."""
        return clip_span(self.n_frames, self.duration_s, self.clip_start_frame, self.clip_end_frame)


def clip_span(n_frames: int, duration_s: float, clip_start: int | None, clip_end: int | None) -> tuple[int, float]:
    """Frames and seconds of a shot's clip ``[clip_start, clip_end)`` (the shot without the dissolves at its
    ends, cut to ``export.max_shot_s``), from the shot's frame count and seconds; the whole shot when the range
    is unset (records made before it existed). Seconds at the shot's mean rate."""
    if clip_start is None or clip_end is None or n_frames <= 0:
        return n_frames, duration_s
    frames = clip_end - clip_start
    return frames, duration_s * frames / n_frames


def clip_seconds(shot: Mapping[str, Any]) -> float:
    """Seconds of the clip of a shot given as a manifest row or a sample JSON shot (``clip_span``)."""
    n = int(shot.get("end_frame", 0)) - int(shot.get("start_frame", 0))
    seconds = float(shot.get("end_s", 0.0)) - float(shot.get("start_s", 0.0))
    return clip_span(n, seconds, shot.get("clip_start_frame"), shot.get("clip_end_frame"))[1]


def capped_end(start: int, end: int, max_s: float | None, fps: float) -> int:
    """``end``, or the frame ``max_s`` seconds after ``start`` at ``fps`` when that comes first (at least one
    frame); ``max_s`` None: ``end`` (``export.max_shot_s``)."""
    if max_s is None:
        return end
    return min(end, start + max(1, math.floor(max_s * (fps or 1.0))))


@dataclass
class SceneRecord:
    """A contiguous run of shots of one place and cast.

    ``link_similarity[i]`` is the best cosine similarity that admitted shot ``i + 1`` into the scene
    (the evidence of the clustering rule); ``link_shot[i]`` is the index, within the scene, of the shot
    it matched.
    """

    scene_id: str
    video_id: str
    index: int
    shot_ids: list[str]
    start_s: float
    end_s: float
    link_similarity: list[float] = field(default_factory=list)
    link_shot: list[int] = field(default_factory=list)
    kept: bool = True
    reject_reason: str | None = None
    max_faces: int | None = None
    caption_status: str = "pending"
    n_characters: int | None = None
    shard: str | None = None  # shard file name holding the sample, once written
    # score summaries over the scene's shots, verdict, buckets, duplicates (curation/scores.py, dedup.py)
    mean_flow: float | None = None
    max_frozen: float | None = None
    max_text_area: float | None = None
    mean_sharpness: float | None = None
    mean_aesthetic: float | None = None
    verdict: str | None = None  # the scene filter's reason at the run's thresholds, None when it passes
    resolution_bucket: str | None = None
    aspect_bucket: str | None = None
    duration_bucket: str | None = None
    duplicate_of: str | None = None  # scene_id of the scene (of another video) this one near-duplicates
    duplicate_similarity: float | None = None

    @property
    def key(self) -> str:
        return self.scene_id


@dataclass
class CaptionRecord:
    """The rendered caption of one shot, with provenance (one row of ``captions.parquet``)."""

    shot_id: str
    scene_id: str
    caption: str
    caption_template: str  # with character ids, before rendering
    characters: list[str]
    shot_type: str = ""
    camera_movement: str = ""
    verdict: str = ""  # accurate | fixed | wrong | "" when not verified
    problems: list[str] = field(default_factory=list)
    model: str = ""
    prompt_version: str = ""


# Reject reasons that say nothing about an item's content: the environment failed (network, rate limits, a
# missing key, package or model, an I/O error, memory). A video with such a reject (its own, or one of its
# shots' or scenes') is retried by the next run into the same output; every other reason is a verdict on the
# content and stands. Sources: the captioning client's retry reasons, ``curation.errors``, ``stage._as_reject``.
TRANSIENT_REASONS = frozenset(
    {
        "rate-limited",
        "server-error",
        "timeout",
        "connection-error",
        "config",
        "missing-dependency",
        "model-unavailable",
        "io-error",
        "out-of-memory",
    }
)


@dataclass
class Reject:
    """Why an item (video, shot or scene) left the pipeline."""

    item_id: str
    uri: str
    stage: str
    reason: str
    detail: str = ""

    @property
    def transient(self) -> bool:
        """True when the reason is the environment's failure, not the content's (``TRANSIENT_REASONS``)."""
        return self.reason in TRANSIENT_REASONS


def _list(t: pa.DataType) -> pa.DataType:
    return pa.list_(t)


VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("status", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("fps_num", pa.int64()),
        ("fps_den", pa.int64()),
        ("n_frames", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("coded_width", pa.int32()),
        ("coded_height", pa.int32()),
        ("sar", pa.string()),
        ("rotation", pa.int32()),
        ("codec", pa.string()),
        ("container", pa.string()),
        ("bytes", pa.int64()),
        ("variable_fps", pa.bool_()),
        ("n_shots", pa.int32()),
        ("n_scenes", pa.int32()),
        ("stream_index", pa.int32()),
        ("container_duration_s", pa.float64()),
        ("container_n_frames", pa.int64()),
        ("container_fps", pa.float64()),
        ("partial", pa.bool_()),
        ("partial_reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("scene_threshold", pa.float32()),
    ]
)

SHOT_SCHEMA = pa.schema(
    [
        ("shot_id", pa.string()),
        ("video_id", pa.string()),
        ("index", pa.int32()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("transition_in", pa.string()),
        ("scene_id", pa.string()),
        ("kept", pa.bool_()),
        ("reject_reason", pa.string()),
        ("keyframe_frames", _list(pa.int64())),
        ("clip_start_frame", pa.int64()),
        ("clip_end_frame", pa.int64()),
        ("brightness", pa.float32()),
        ("contrast", pa.float32()),
        ("motion", pa.float32()),
        ("n_faces", pa.int32()),
        ("boundary_score", pa.float32()),
        ("flow", pa.float32()),
        ("frozen", pa.float32()),
        ("text_area", pa.float32()),
        ("sharpness", pa.float32()),
        ("aesthetic", pa.float32()),
        ("verdict", pa.string()),
        ("duplicate_of", pa.string()),
        ("duplicate_similarity", pa.float32()),
    ]
)

SCENE_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("video_id", pa.string()),
        ("index", pa.int32()),
        ("shot_ids", _list(pa.string())),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("link_similarity", _list(pa.float32())),
        ("link_shot", _list(pa.int32())),
        ("kept", pa.bool_()),
        ("reject_reason", pa.string()),
        ("max_faces", pa.int32()),
        ("caption_status", pa.string()),
        ("n_characters", pa.int32()),
        ("shard", pa.string()),
        ("mean_flow", pa.float32()),
        ("max_frozen", pa.float32()),
        ("max_text_area", pa.float32()),
        ("mean_sharpness", pa.float32()),
        ("mean_aesthetic", pa.float32()),
        ("verdict", pa.string()),
        ("resolution_bucket", pa.string()),
        ("aspect_bucket", pa.string()),
        ("duration_bucket", pa.string()),
        ("duplicate_of", pa.string()),
        ("duplicate_similarity", pa.float32()),
    ]
)

CAPTION_SCHEMA = pa.schema(
    [
        ("shot_id", pa.string()),
        ("scene_id", pa.string()),
        ("caption", pa.string()),
        ("caption_template", pa.string()),
        ("characters", _list(pa.string())),
        ("shot_type", pa.string()),
        ("camera_movement", pa.string()),
        ("verdict", pa.string()),
        ("problems", _list(pa.string())),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

SCHEMAS: dict[type, pa.Schema] = {
    VideoRecord: VIDEO_SCHEMA,
    ShotRecord: SHOT_SCHEMA,
    SceneRecord: SCENE_SCHEMA,
    CaptionRecord: CAPTION_SCHEMA,
    Reject: REJECT_SCHEMA,
}

MANIFESTS: dict[str, type] = {
    "videos": VideoRecord,
    "shots": ShotRecord,
    "scenes": SceneRecord,
    "captions": CaptionRecord,
    "rejects": Reject,
}


def record_row(record: Any) -> dict[str, Any]:
    """The manifest row of a record: its fields plus the derived columns its schema names."""
    row = dataclasses.asdict(record)
    if isinstance(record, VideoRecord):
        row["fps"] = float(record.fps)
    return row


def records_to_table(records: list[Any], cls: type) -> pa.Table:
    """An Arrow table of records of one class, with that class's schema (also when empty)."""
    schema = SCHEMAS[cls]
    rows = [record_row(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def records_from_table(table: pa.Table, cls: type) -> list[Any]:
    """Records back from a manifest table (derived columns dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return [cls(**{k: v for k, v in row.items() if k in names}) for row in table.to_pylist()]


def write_manifest(records: list[Any], cls: type, path: str, filesystem: Any = None) -> None:
    """Write records as Parquet with their schema, atomically (temp name, then rename)."""
    table = records_to_table(records, cls)
    tmp = f"{path}.tmp-{os.getpid()}"
    if filesystem is None:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    else:
        pq.write_table(table, tmp, filesystem=filesystem)
        filesystem.move(tmp, path)


def read_manifest(path: str, cls: type, filesystem: Any = None) -> list[Any]:
    return records_from_table(pq.read_table(path, filesystem=filesystem), cls)
