"""The stage contract shared by every curation step and every executor.

A stage is a callable class built from its own config section. Heavy models load in ``__init__`` so an
executor keeps one per worker. ``process`` takes one unit and returns the unit, a list of child units, or a
``Reject``. Model stages override ``process_batch``. Executors call ``run_stage`` / ``run_stage_batch``,
the one place where unexpected exceptions become reject rows, and merge every stage's ``StageStats``.
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .errors import FilmweaverError
from .records import CaptionRecord, Reject, SceneRecord, ShotRecord, VideoRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyframe:
    """A keyframe held as JPEG bytes (a fraction of its pixels' memory): encoded once, written to shards as is.

    ``rgb()`` decodes it; consumers decode only the few they need at a time (a batch), never a whole film.
    """

    jpeg: bytes
    width: int
    height: int

    @classmethod
    def encode(cls, rgb: np.ndarray, quality: int) -> Keyframe:
        """The keyframe of an RGB uint8 HxWx3 frame, JPEG-encoded at ``quality``."""
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
        return cls(buf.getvalue(), rgb.shape[1], rgb.shape[0])

    def rgb(self) -> np.ndarray:
        """The decoded frame, RGB uint8 HxWx3."""
        with Image.open(io.BytesIO(self.jpeg)) as img:
            return np.array(img.convert("RGB"))


@dataclass
class VideoUnit:
    """A video on its way from uri to scenes. ``keyframes[i]`` and ``embeddings[i]`` belong to shot i."""

    video: VideoRecord
    shots: list[ShotRecord] = field(default_factory=list)
    keyframes: list[list[Keyframe]] = field(default_factory=list)  # per shot, in frame order
    embeddings: np.ndarray | None = None  # (n_shots, D) float32, L2-normalised shot embeddings
    embedder: str = ""  # kind of embedder that made them: open_clip | fallback
    scenes: list[SceneRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)  # shots and scenes dropped on the way
    keyframe_embeddings: list[np.ndarray] | None = None  # per shot (n_keyframes, D), L2-normalised

    @property
    def item_id(self) -> str:
        return self.video.video_id or self.video.uri  # before probing, the uri is all there is

    @property
    def uri(self) -> str:
        return self.video.uri


@dataclass
class SceneUnit:
    """A scene from clip export to its shard sample. Lists are per kept shot, in order."""

    scene: SceneRecord
    video: VideoRecord
    shots: list[ShotRecord]
    keyframes: list[Keyframe]  # representative keyframe per shot
    embeddings: np.ndarray  # (n_shots, D) float32
    clips: list[bytes] = field(default_factory=list)  # exported MP4 per shot
    captions: list[CaptionRecord] = field(default_factory=list)
    annotation: dict[str, Any] = field(default_factory=dict)  # character registry, setting, usage
    rejects: list[Reject] = field(default_factory=list)

    @property
    def item_id(self) -> str:
        return self.scene.scene_id

    @property
    def uri(self) -> str:
        return self.video.uri


@dataclass
class StageStats:
    """Counters of one stage: items in and out, rejects by reason, seconds, and free-form counts."""

    items_in: int = 0
    items_out: int = 0
    rejects: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)

    def merge(self, other: StageStats) -> None:
        self.items_in += other.items_in
        self.items_out += other.items_out
        self.rejects.update(other.rejects)
        self.seconds += other.seconds
        self.counts.update(other.counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items_in": self.items_in,
            "items_out": self.items_out,
            "rejects": dict(sorted(self.rejects.items())),
            "seconds": round(self.seconds, 3),
            "counts": dict(sorted(self.counts.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        return cls(
            items_in=d["items_in"],
            items_out=d["items_out"],
            rejects=Counter(d["rejects"]),
            seconds=d["seconds"],
            counts=Counter(d["counts"]),
        )


Result = Any  # a unit, a list of units, or a Reject


class Stage:
    """Base of every curation step. Subclasses set ``name`` and implement ``process``."""

    name = "stage"

    def __init__(self) -> None:
        self.stats = StageStats()

    def process(self, unit: Any) -> Result:
        raise NotImplementedError

    def process_batch(self, units: list[Any]) -> list[Result]:
        return [self.process(u) for u in units]

    def reject_child(self, unit: Any, item_id: str, reason: str, detail: str = "") -> None:
        """Record that a child of ``unit`` (a shot, a scene) was dropped, and count it."""
        unit.rejects.append(Reject(item_id, unit.uri, self.name, reason, detail))
        self.stats.rejects[reason] += 1

    def close(self) -> None:
        """Release resources (threads, sessions); called once by the executor at the end."""


def _as_reject(stage: Stage, unit: Any, exc: BaseException) -> Reject:
    if isinstance(exc, FilmweaverError):
        return Reject(unit.item_id, unit.uri, stage.name, exc.reason, str(exc))
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    log.error("stage %s failed on %s", stage.name, unit.item_id, exc_info=exc)
    return Reject(unit.item_id, unit.uri, stage.name, _unexpected_reason(exc), last)


def _unexpected_reason(exc: BaseException) -> str:
    """Reject reason of an unexpected exception: the environment's failures (``records.TRANSIENT_REASONS``,
    retried by the next run) apart from the rest ('error': a bug or the content, kept)."""
    if isinstance(exc, MemoryError):
        return "out-of-memory"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection-error"
    if isinstance(exc, OSError) and not type(exc).__module__.startswith("av."):  # PyAV's errors: the data's
        return "io-error"
    return "error"


def _count(stage: Stage, result: Result) -> list[Any]:
    if isinstance(result, Reject):
        stage.stats.rejects[result.reason] += 1
        return [result]
    out = result if isinstance(result, list) else [result]
    stage.stats.items_out += len(out)
    return out


def run_stage(stage: Stage, unit: Any) -> list[Any]:
    """Run one stage on one unit: units out (possibly none) or a single ``Reject``; never raises."""
    return run_stage_batch(stage, [unit])


def _guarded(stage: Stage, units: list[Any]) -> list[Result]:
    try:
        return stage.process_batch(units)
    except Exception as exc:  # noqa: BLE001 - executors turn bugs into reject rows
        if len(units) == 1:
            return [_as_reject(stage, units[0], exc)]
        # retry one by one so that one bad unit does not take its batch with it
        return [r for u in units for r in _guarded(stage, [u])]


def run_stage_batch(stage: Stage, units: list[Any]) -> list[Any]:
    """Run one stage on a batch of units: units out and ``Reject`` rows; never raises."""
    if not units:
        return []
    stage.stats.items_in += len(units)
    t0 = time.perf_counter()
    results = _guarded(stage, units)
    stage.stats.seconds += time.perf_counter() - t0
    out: list[Any] = []
    for r in results:
        out.extend(_count(stage, r))
    return out
