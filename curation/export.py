"""Clip export: a video's kept scenes become ``SceneUnit``s holding their shots as verified H.264 clips.

This is where the unit of work changes from a video to its scenes. Only kept shots of kept scenes are
exported. Clips are cut by frame index, never by timestamp: one ``FrameDecoder`` pass over the source (the
decoder, stream choice and frame counting of the analysis pass) routes frames ``[clip_start_frame,
clip_end_frame)`` of each shot to that shot's encoder (libx264 through PyAV), so joined files whose timestamps
restart, edit lists and raw streams cut exactly where the shots are. That range is the shot without the
dissolves and fades at its ends (the splitter sets it: their frames blend the neighbouring shot), cut to
``export.max_shot_s``, and the shot record keeps it. The pass stops after the last wanted frame.

Each frame a clip needs is scaled once, by swscale straight from the decoded pixel format to yuv420p at the
clip size (``clip_frame``; no RGB round trip, except for rotated sources). x264 runs a fixed number of
threads per clip (``export.threads``, 1 by default: its bytes depend on the thread count, never on the node's
CPUs). ``export.encoders`` clips encode at once, each on its own writer thread, so encoding overlaps decoding
and the next clips (PyAV releases the GIL in both); the decoder runs ahead of a long clip into the next ones,
each writer holding up to ``_BUFFER_MB`` of frames. Which writer a clip gets changes no byte.

Every clip is then opened and checked before it may enter a shard (``verify_clip``): it has a video
stream, exactly the expected number of frames, and its first and last frames match the source's frames at
those indices (as the encoder took them, in RGB: PSNR >= ``export.verify_min_psnr``, and closer than the
neighbouring source frames, so a clip shifted by one frame fails). A clip that fails is a reject row of its
shot (``clip-check-failed``, with the measured values), never a sample; a scene left with fewer than
``filters.min_scene_shots`` verified clips (one with ``filters.mode=score``) is dropped (``too-few-shots``). A
remote video is fetched once for all its clips (``video.local_path``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from .config import CurateConfig
from .errors import FilmweaverError, UnsupportedVideo
from .records import ShotRecord, VideoRecord, capped_end
from .stage import Keyframe, SceneUnit, Stage, VideoUnit
from .threads import cpu_threads
from .video import FrameDecoder, analysis_size, local_path, norm_rotation, select_video_stream

_CLIP_TIME_BASE = Fraction(1, 90000)  # clip timestamps keep the source's frame times (variable rates too)
_QUEUE = 8  # encoder calls (frames) a writer thread may be behind the decoder, at least
_BUFFER_MB = 64  # decoded frames (MiB at the clip size) each writer may hold waiting, by default
_NEIGHBOUR_MARGIN_DB = 0.5  # a neighbouring source frame may match a clip's end this much better (static shots)


def representative(keyframes: list[Keyframe]) -> Keyframe:
    """The keyframe that stands for a shot: the middle one of those sampled."""
    return keyframes[len(keyframes) // 2]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB, 8-bit peak 255) of two same-shape uint8 images; inf when equal."""
    mse = cv2.norm(a, b, cv2.NORM_L2SQR) / a.size  # OpenCV: 0.2 ms at 854x480 where NumPy's float copies took 11
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class Clip:
    """One exported clip of frames ``[start_frame, end_frame)``: its MP4 ``data`` once made and verified, or
    the ``failure`` that keeps it out of every shard (then ``data`` is None)."""

    start_frame: int
    end_frame: int
    data: bytes | None = None
    failure: str | None = None
    # source frames the check compares with (the encoder's input as RGB): each end and its neighbours
    _ends: dict[str, tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=dict, repr=False)


class _ClipEncoder:
    """H.264 yuv420p MP4 (+faststart, which needs a file: a temporary one) fed yuv420p frames with source times."""

    def __init__(self, size: tuple[int, int], fps: Fraction, crf: int, preset: str, threads: int):
        self._tmp = tempfile.TemporaryDirectory(prefix="fw-clip-")
        self._path = os.path.join(self._tmp.name, "clip.mp4")
        self._out = av.open(self._path, mode="w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._out.add_stream("libx264", rate=fps if fps > 0 else Fraction(25))
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = _CLIP_TIME_BASE
        self._stream.codec_context.time_base = _CLIP_TIME_BASE
        # x264's bitstream depends on its thread count (and on nothing else of the machine: its threading is
        # deterministic unless --non-deterministic), which by default follows the CPUs the process sees: the same
        # clip exported on nodes of different sizes differed in bytes. A fixed count keeps the bytes the same on
        # every node (and a 1-CPU Ray task no longer runs 1.5 x cores encoder threads).
        self._stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        self._stream.codec_context.thread_count = threads
        self._t0: float | None = None
        self._pts = -1

    def write(self, frame: av.VideoFrame, time_s: float) -> None:
        """Encode a yuv420p frame of the clip's size (``clip_frame``) shown at ``time_s`` s of the source."""
        if self._t0 is None:
            self._t0 = time_s
        self._pts = max(self._pts + 1, round((time_s - self._t0) / _CLIP_TIME_BASE))
        frame.pts, frame.time_base = self._pts, _CLIP_TIME_BASE
        self._out.mux(self._stream.encode(frame))

    def close(self) -> bytes:
        try:
            self._out.mux(self._stream.encode(None))
            self._out.close()
            with open(self._path, "rb") as f:
                return f.read()
        finally:
            self._tmp.cleanup()


def cut_clips(
    uri: str,
    video: VideoRecord,
    ranges: list[tuple[int, int]],
    short_side: int,
    crf: int,
    preset: str,
    min_psnr: float = 20.0,
    threads: int = 1,
    encoders: int = 2,
    buffer_mb: int = _BUFFER_MB,
) -> list[Clip]:
    """Verified clips of frames ``[start, end)`` of ``uri``, one per range in the given order, from one decode
    pass (frame indices as the analysis counted them; ``verify_clip`` runs as soon as a clip's source frames
    are seen, so memory holds only open clips). Display orientation, square pixels, short side
    ``min(short_side, source short side)``, even dims. A range the source ends inside or before gives a
    ``Clip`` with ``failure`` set. ``threads``: x264 threads per clip (a fixed count: the bytes depend on it).
    ``encoders``: clips encoded at once, each on its own thread (the clip goes to the least busy one when it
    starts), fed from the one decode pass; ``buffer_mb``: decoded frames (MiB, at the clip size) each may hold
    waiting, so the decoder runs ahead into the next clips while a long one encodes. Neither changes a byte.
    Raises ``ValueError`` for an empty range."""
    for start, end in ranges:
        if not 0 <= start < end:
            raise ValueError(f"bad frame range [{start}, {end})")
    size = analysis_size(video.width, video.height, short_side)
    clips = [Clip(start, end) for start, end in ranges]
    starts: dict[int, list[Clip]] = {}
    for clip in clips:
        starts.setdefault(clip.start_frame, []).append(clip)
    active: dict[int, tuple[Clip, _ClipEncoder]] = {}
    waiting: list[tuple[Clip, list[np.ndarray]]] = []  # neighbour lists still missing the next frame
    lasts = {end - 1 for _, end in ranges}
    stop = max((end for _, end in ranges), default=0)
    # FFmpeg's frame threads cost ~20% more CPU per frame than one thread; with no core left beyond the
    # encoders they only take CPU from x264 (6.6 min of real 720p: export 76 -> 64 s with the clip checks on
    # one thread too, BENCHMARKS.md "Export: clips encoded at once")
    decoder = FrameDecoder(uri, size, threads=1 if cpu_threads() <= encoders else 0)

    def reference(raw: av.VideoFrame) -> np.ndarray:
        return clip_frame(decoder, raw, size).to_ndarray(format="rgb24")

    prev: av.VideoFrame | None = None  # the frame before, as decoded (converted only when a clip needs it)
    index = -1
    frame_mb = size[0] * size[1] * 1.5 / 2**20
    writers = [_Writer(max(_QUEUE, int(buffer_mb / frame_mb))) for _ in range(max(1, encoders))]
    owner: dict[int, _Writer] = {}  # id(clip) -> the writer that encodes and checks it

    def settle(entries: list[tuple[Clip, list[np.ndarray]]], rgb: np.ndarray | None) -> None:
        for writer in writers:  # each clip's check runs on its own writer, after its encoder closed
            mine = [(clip, nb) for clip, nb in entries if owner[id(clip)] is writer]
            if mine:
                writer.submit(_settle, mine, rgb, min_psnr)

    try:
        for index, time_s, raw in decoder.decoded():
            if index >= stop and not waiting:
                break
            checked = bool(waiting) or index in starts or index in lasts
            frame = clip_frame(decoder, raw, size) if active or checked else None
            # the frames the check compares with: the encoder's input as RGB, converted as the check converts
            # the clip's decoded frames, so PSNR measures what encoding and cutting did (a shifted clip, a broken
            # encode), not the 4:2:0 chroma loss every clip has; the other frames are never RGB
            rgb = frame.to_ndarray(format="rgb24") if checked else None
            if waiting:
                settle(waiting, rgb)
                waiting = []
            if index >= stop:
                break
            for clip in starts.get(index, []):
                before = [] if prev is None else [reference(prev)]
                clip._ends["first"] = (rgb, before)
                waiting.append((clip, before))
                # clips that overlap share a writer: they share frame objects, whose pts each encoder sets
                busy = [owner[key] for key in active]
                owner[id(clip)] = busy[0] if busy else min(writers, key=lambda w: w.backlog)
                active[id(clip)] = (clip, _ClipEncoder(size, video.fps, crf, preset, threads))
            for key, (clip, encoder) in list(active.items()):
                writer = owner[key]
                writer.submit(encoder.write, frame, time_s)
                if index == clip.end_frame - 1:
                    clip._ends["last"] = (rgb, [] if prev is None else [reference(prev)])
                    waiting.append((clip, clip._ends["last"][1]))
                    writer.submit(_close, clip, encoder)
                    del active[key]
            prev = raw
    finally:
        try:
            _join_all(writers)
        finally:
            for clip, encoder in active.values():  # ranges the source ended inside (damage, or past its end)
                clip.failure = f"the source ended after frame {index} inside [{clip.start_frame}, {clip.end_frame})"
                with contextlib.suppress(av.FFmpegError):
                    encoder.close()
    _settle(waiting, None, min_psnr)
    for clip in clips:
        if clip.data is None and clip.failure is None:
            n = decoder.report.n_frames
            clip.failure = f"clip start frame {clip.start_frame} is past the last decoded frame ({n} frames)"
        clip.data = None if clip.failure else clip.data
    return clips


def _close(clip: Clip, encoder: _ClipEncoder) -> None:
    clip.data = encoder.close()


def _join_all(writers: list[_Writer]) -> None:
    """Join every writer, then re-raise the first error one of them met."""
    errors = []
    for writer in writers:
        try:
            writer.join()
        except BaseException as exc:  # noqa: BLE001 - the others are joined first, then it is re-raised
            errors.append(exc)
    if errors:
        raise errors[0]


class _Writer:
    """One thread that runs its clips' encoder calls in the order given, so x264 (which releases the GIL)
    works while the next frames decode; at most ``capacity`` calls behind. ``join`` re-raises a call's error."""

    def __init__(self, capacity: int = _QUEUE):
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fw-clip-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            if self._error is None:
                try:
                    call[0](*call[1:])
                except BaseException as exc:  # noqa: BLE001 - handed to the decoding thread in join
                    self._error = exc

    @property
    def backlog(self) -> int:
        """Calls waiting to run (approximate: the thread takes them meanwhile)."""
        return self._queue.qsize()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._error is not None:
            self.join()
        self._queue.put((fn, *args))

    def join(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def clip_frame(decoder: FrameDecoder, raw: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """A decoded frame as the clip encoder takes it: a new yuv420p frame of ``size`` ``(w, h)`` in display
    orientation, pixels square. One swscale area pass from the decoded format (any pixel format, bit depth,
    odd size or sample aspect ratio); a rotated frame goes through ``FrameDecoder.rgb``, which rotates.

    A new frame, not the scaled one: that one keeps the source frame's properties (frame type, side data),
    and libx264 takes a frame type as an order: an all-intra source gave all-keyframe clips 5x the size.
    Against a float area downscale of the full-resolution RGB this pass is closer than the RGB round trip
    it replaced: 46.2 vs 39.0 dB PSNR on real 720p footage at 854x480, 31.4 vs 29.9 dB on the 160x96 test
    pictures at 106x64 (BENCHMARKS.md, "Export speed")."""
    if norm_rotation(raw.rotation):
        return av.VideoFrame.from_ndarray(decoder.rgb(raw), format="rgb24").reformat(format="yuv420p")
    w, h = size
    # one swscale thread: the decoder and x264 already use the cores; sliced scaling only added waits (1.3 vs
    # 1.9-2.5 ms CPU per 720p frame on 2 cores)
    scaled = raw.reformat(width=w, height=h, format="yuv420p", interpolation="AREA", threads=1)
    frame = av.VideoFrame(w, h, "yuv420p")
    if [p.line_size for p in frame.planes] != [p.line_size for p in scaled.planes]:  # the decoder's, unscaled
        return av.VideoFrame.from_ndarray(scaled.to_ndarray(), format="yuv420p")
    for plane, pixels in zip(frame.planes, scaled.planes):
        plane.update(pixels)  # a plain copy: 0.04 ms at 854x480, where through NumPy it took 1.1
    return frame


def _settle(waiting: list[tuple[Clip, list[np.ndarray]]], rgb: np.ndarray | None, min_psnr: float) -> None:
    """Give each waiting neighbour list the frame that followed (None: the source ended), then verify the
    clips that have everything they are checked against."""
    for _, neighbours in waiting:
        if rgb is not None:
            neighbours.append(rgb)
    for clip in {id(c): c for c, _ in waiting}.values():
        if clip.data is not None and clip.failure is None and "last" in clip._ends:
            clip.failure = verify_clip(clip.data, clip.end_frame - clip.start_frame, clip._ends, min_psnr)
            clip._ends = {}


def verify_clip(
    data: bytes, n_frames: int, ends: dict[str, tuple[np.ndarray, list[np.ndarray]]], min_psnr: float
) -> str | None:
    """Why an exported clip must not enter a shard, or None when it is right.

    Right means: a video stream; exactly ``n_frames`` frames; its ``first`` and ``last`` frames match the
    source frames at those indices (``ends[name] = (source, neighbours)``) with PSNR >= ``min_psnr`` dB, and
    match them at least as well as the source's neighbouring frames (``_NEIGHBOUR_MARGIN_DB``), so a clip
    shifted by one frame fails even where a lossy encode keeps PSNR low (small, detailed pictures).
    """
    try:
        with av.open(io.BytesIO(data)) as container:
            try:
                stream = select_video_stream(container, "the clip")
            except FilmweaverError as exc:
                return f"the clip ({len(data)} bytes) has no usable video stream: {exc}"
            stream.codec_context.thread_count = 1  # checks of several clips run at once, one per writer
            got: dict[str, np.ndarray] = {}
            last = None
            n = 0
            for frame in container.decode(stream):
                if n == 0:
                    got["first"] = frame.to_ndarray(format="rgb24")
                last = frame
                n += 1
            if last is not None:
                got["last"] = last.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        return f"the clip ({len(data)} bytes) cannot be decoded ({exc.strerror or exc})"
    if n != n_frames:
        return f"the clip has {n} frames, its shot {n_frames}"
    for name, (source, neighbours) in ends.items():
        ours = got[name]
        if ours.shape != source.shape:
            shapes = f"{ours.shape[1]}x{ours.shape[0]}, the source's {source.shape[1]}x{source.shape[0]}"
            return f"the clip's {name} frame is {shapes}"
        quality = psnr(ours, source)
        if quality < min_psnr:
            return f"the clip's {name} frame differs from the source's: PSNR {quality:.1f} dB < {min_psnr:g} dB"
        closer = max((psnr(ours, x) for x in neighbours), default=-math.inf)
        if closer > quality + _NEIGHBOUR_MARGIN_DB:
            return (
                f"the clip's {name} frame matches a neighbouring source frame ({closer:.1f} dB) better than its "
                f"own ({quality:.1f} dB): the clip is shifted"
            )
    return None


def export_clip(
    uri: str,
    video: VideoRecord,
    start_frame: int,
    end_frame: int,
    short_side: int,
    crf: int,
    preset: str,
    threads: int = 1,
) -> bytes:
    """MP4 bytes of frames ``[start_frame, end_frame)`` of ``uri`` (``cut_clips`` for one range, the end
    clamped to ``video.n_frames``). Raises ``UnsupportedVideo(reason='bad-range')`` when the range starts
    past the last frame or the source ends inside it."""
    if not 0 <= start_frame < end_frame:
        raise ValueError(f"bad frame range [{start_frame}, {end_frame})")
    if video.n_frames and start_frame >= video.n_frames:
        raise UnsupportedVideo(
            f"{uri}: clip start frame {start_frame} is past the last frame ({video.n_frames} frames)",
            reason="bad-range",
        )
    end = min(end_frame, video.n_frames or end_frame)
    (clip,) = cut_clips(uri, video, [(start_frame, end)], short_side, crf, preset, threads=threads)
    if clip.data is None:
        raise UnsupportedVideo(f"{uri}: {clip.failure}", reason="bad-range")
    return clip.data


class ClipExporter(Stage):
    """VideoUnit -> one SceneUnit per kept scene, each kept shot exported per ``config.export`` and verified."""

    name = "export"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.export
        # score mode keeps every scene for refilter to choose: one verified clip makes a sample
        self.score_mode, self.scene_shots = config.filters.mode == "score", config.filters.min_scene_shots
        self.min_scene_shots = 1 if self.score_mode else self.scene_shots

    def _clip_range(self, unit: VideoUnit, shot: ShotRecord) -> tuple[int, int]:
        """Frames ``[a, b)`` of ``shot``'s clip: its ``clip_*_frame`` as the splitter set them (without the
        transitions at its ends, cut to ``export.max_shot_s``); for a record without them (made before they
        existed) the whole shot cut to ``export.max_shot_s`` seconds."""
        if shot.clip_start_frame is not None and shot.clip_end_frame is not None:
            return shot.clip_start_frame, shot.clip_end_frame
        start = shot.start_frame
        return start, capped_end(start, shot.end_frame, self.config.max_shot_s, float(unit.video.fps))

    def process(self, unit: VideoUnit) -> list[SceneUnit]:
        by_id = {s.shot_id: i for i, s in enumerate(unit.shots)}
        kept_scenes = [s for s in unit.scenes if s.kept]
        if not kept_scenes:
            return []
        members = [[by_id[sid] for sid in scene.shot_ids if unit.shots[by_id[sid]].kept] for scene in kept_scenes]
        wanted = sorted({i for idx in members for i in idx})
        shots = [unit.shots[i] for i in wanted]
        ranges = [self._clip_range(unit, s) for s in shots]
        for shot, (a, b) in zip(shots, ranges):
            shot.clip_start_frame, shot.clip_end_frame = a, b
        with local_path(unit.video.uri) as src:
            cfg = self.config
            cut = cut_clips(
                src,
                unit.video,
                ranges,
                cfg.short_side,
                cfg.crf,
                cfg.preset,
                cfg.verify_min_psnr,
                cfg.threads,
                cfg.encoders,
            )
        clips: dict[int, bytes] = {}
        for i, clip in zip(wanted, cut):
            if clip.data is not None:
                clips[i] = clip.data
            else:
                self.reject_child(unit, unit.shots[i].shot_id, "clip-check-failed", clip.failure)
        self.stats.counts["clips"] += len(clips)
        self.stats.counts["clip_bytes"] += sum(map(len, clips.values()))
        scenes: list[SceneUnit] = []
        for scene, idx in zip(kept_scenes, members):
            idx = [i for i in idx if i in clips]
            if self.score_mode and len(idx) < self.scene_shots and scene.verdict is None:
                scene.verdict = "too-few-shots"  # clips failed their check after the scene filter's verdict
            if len(idx) < self.min_scene_shots:
                detail = f"{len(idx)} shots with verified clips < min_scene_shots {self.min_scene_shots}"
                scene.kept, scene.reject_reason = False, "too-few-shots"
                self.reject_child(unit, scene.scene_id, "too-few-shots", detail)
                continue
            scenes.append(
                SceneUnit(
                    scene=scene,
                    video=unit.video,
                    shots=[unit.shots[i] for i in idx],
                    keyframes=[representative(unit.keyframes[i]) for i in idx],
                    embeddings=unit.embeddings[idx],
                    clips=[clips[i] for i in idx],
                )
            )
        return scenes
