"""Video I/O: probe, streaming decode at an analysis size, and frame-exact clip export.

Decoding uses PyAV (FFmpeg libraries) and never holds a whole video in memory. Clip export runs the
FFmpeg binary shipped by ``imageio-ffmpeg`` through ``ffmpeg-python``. Frame indices count decoded frames
from 0 in presentation order; times are presentation timestamps relative to the video stream's start.

Rotation is the display-matrix angle as FFmpeg reports it (degrees counter-clockwise, one of 0/90/180/270):
a frame is shown after rotating it by that angle, exactly as the ``ffmpeg`` CLI auto-rotates.

URIs: local paths (or ``file://``) are opened directly; any other ``scheme://`` URI is resolved with
``pyarrow.fs.FileSystem.from_uri`` (s3, gs, hdfs, ...) in ``resolve_uri``, the one place that knows about
filesystems.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .config import CurateConfig
from .errors import UnreadableVideo, UnsupportedVideo
from .records import Reject, VideoRecord, video_id_for_file
from .stage import Stage, VideoUnit

log = logging.getLogger(__name__)

_VFR_PACKETS = 600  # packets demuxed by probe to judge whether the frame rate is variable
_VFR_TOLERANCE = 0.15  # a frame gap this far (relative) from the median gap counts as irregular


@dataclass(frozen=True)
class Frame:
    """One decoded frame: index from 0 in presentation order, presentation time, RGB pixels."""

    index: int
    time_s: float
    rgb: np.ndarray  # H x W x 3 uint8, rotation and sample aspect ratio applied


# --------------------------------------------------------------------------------------------- inputs


def resolve_uri(uri: str) -> tuple[Any, str]:
    """``(filesystem, path)``: ``filesystem`` is None for local files, else a ``pyarrow.fs`` filesystem."""
    if uri.startswith("file://"):
        return None, uri[len("file://") :]
    if "://" not in uri:
        return None, uri
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad or unreachable URIs
        raise UnreadableVideo(f"cannot resolve {uri}: {exc}", reason="missing") from None


def _file_size(uri: str) -> int:
    fs, path = resolve_uri(uri)
    if fs is None:
        if not os.path.isfile(path):
            raise UnreadableVideo(f"no such file: {uri} (check the path)", reason="missing")
        return os.path.getsize(path)
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise UnreadableVideo(f"no such file: {uri} (check the URI and credentials)", reason="missing")
    return info.size


@contextlib.contextmanager
def open_input(uri: str) -> Iterator[Any]:
    """Something PyAV can open: a local path, or a seekable file object on an object store."""
    fs, path = resolve_uri(uri)
    if fs is None:
        yield path
        return
    with fs.open_input_file(path) as f:
        yield f


@contextlib.contextmanager
def local_path(uri: str) -> Iterator[str]:
    """A local path for ``uri``: the file itself, or a temporary copy of a remote object (removed after)."""
    fs, path = resolve_uri(uri)
    if fs is None:
        yield path
        return
    suffix = Path(path).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp, fs.open_input_stream(path) as src:
        shutil.copyfileobj(src, tmp, length=8 << 20)
        tmp.flush()
        yield tmp.name


def content_id(uri: str) -> str:
    """``video_id`` of the file at ``uri`` (content based, so copies and moves keep it)."""
    fs, path = resolve_uri(uri)
    return video_id_for_file(path, filesystem=fs)


@contextlib.contextmanager
def _open_container(uri: str) -> Iterator[av.container.InputContainer]:
    with open_input(uri) as src:
        try:
            container = av.open(src, mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise UnreadableVideo(
                f"cannot open {uri} as a video ({exc.strerror or exc}); the file is corrupt, truncated or "
                "not a media file",
                reason="corrupt",
            ) from None
        try:
            yield container
        finally:
            container.close()


def _video_stream(container: av.container.InputContainer, uri: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise UnreadableVideo(f"{uri} has no video stream (streams: {', '.join(kinds)})", reason="no-video-stream")
    return container.streams.video[0]


# ---------------------------------------------------------------------------------------------- probe


def _norm_rotation(angle: float | int | None) -> int:
    return int(round((angle or 0) / 90.0)) % 4 * 90


def _sar(stream: av.video.stream.VideoStream) -> Fraction:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


def display_size(coded_w: int, coded_h: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    """Display ``(w, h)``: width stretched by the sample aspect ratio, then swapped for 90/270 rotation."""
    w = max(1, round(coded_w * sar))
    return (coded_h, w) if rotation in (90, 270) else (w, coded_h)


def _is_variable(pts: list[int]) -> bool:
    if len(pts) < 4:
        return False
    gaps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
    gaps = gaps[gaps > 0]
    if gaps.size < 3:
        return False
    med = float(np.median(gaps))
    irregular = int(np.sum(np.abs(gaps - med) > _VFR_TOLERANCE * med))
    return irregular >= max(2, int(0.02 * gaps.size))


def probe(uri: str) -> VideoRecord:
    """Every ``VideoRecord`` field of the video at ``uri``; typed errors for unusable files.

    Decodes only the first two frames and demuxes (without decoding) the first few hundred packets to tell
    a variable frame rate. ``n_frames`` is exact when the container indexes frames (MP4), else estimated
    from duration and average rate.
    """
    size = _file_size(uri)
    if size == 0:
        raise UnreadableVideo(f"{uri} is empty (0 bytes); re-copy or re-download it", reason="empty")
    with _open_container(uri) as container:
        stream = _video_stream(container, uri)
        pts: list[int] = []
        frames: list[av.VideoFrame] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and not packet.is_discard:
                    pts.append(packet.pts)
                if len(frames) < 2:  # the last (empty) packet flushes the decoder
                    frames.extend(packet.decode())
                if len(pts) >= _VFR_PACKETS and len(frames) >= 2:
                    break
        except av.FFmpegError as exc:
            if len(frames) < 2:
                raise UnreadableVideo(
                    f"cannot decode {uri} ({exc.strerror or exc}); the video data is corrupt", reason="corrupt"
                ) from None
        if len(frames) < 2:
            raise UnsupportedVideo(
                f"{uri} has {len(frames)} decodable frame(s); at least 2 are needed", reason="too-few-frames"
            )
        first = frames[0]
        rotation = _norm_rotation(first.rotation)
        sar = _sar(stream)
        coded_w, coded_h = stream.codec_context.width or first.width, stream.codec_context.height or first.height
        width, height = display_size(coded_w, coded_h, sar, rotation)
        tb = stream.time_base
        if stream.duration and tb:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        n_frames = int(stream.frames or 0)
        if not rate and n_frames and duration:
            rate = Fraction(n_frames / duration).limit_denominator(1001)
        rate = Fraction(rate) if rate else Fraction(0)
        if not n_frames:
            n_frames = max(2, round(duration * rate))
        name = container.format.name.split(",")
        suffix = Path(resolve_uri(uri)[1]).suffix.lower().lstrip(".")
        return VideoRecord(
            video_id=content_id(uri),
            uri=uri,
            duration_s=duration,
            fps_num=rate.numerator,
            fps_den=rate.denominator,
            n_frames=n_frames,
            width=width,
            height=height,
            coded_width=coded_w,
            coded_height=coded_h,
            sar=f"{sar.numerator}:{sar.denominator}",
            rotation=rotation,
            codec=stream.codec_context.name,
            container=suffix if suffix in name else name[0],
            bytes=size,
            variable_fps=_is_variable(pts),
        )


# --------------------------------------------------------------------------------------------- decode


def analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(w, h)`` with the given short side (never upscaling), aspect kept, both even (at least 2)."""
    short = min(width, height)
    scale = min(1.0, short_side / short) if short > 0 else 1.0

    def even(x: float, cap: int) -> int:
        return max(2, min(int(round(x / 2)) * 2, cap // 2 * 2 or 2))

    return even(width * scale, width), even(height * scale, height)


def iter_frames(uri: str, size: tuple[int, int] | None = None, threads: int = 0) -> Iterator[Frame]:
    """Decode ``uri`` frame by frame, scaled by FFmpeg to ``size`` ``(w, h)`` in display orientation.

    ``size`` None keeps the display size. Pixels are square and rotation is applied. Raises
    ``UnreadableVideo(reason='truncated')`` when the data ends in an error part-way.
    """
    with _open_container(uri) as container:
        stream = _video_stream(container, uri)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        sar = _sar(stream)
        tb = stream.time_base
        start = stream.start_time if stream.start_time is not None else None
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        index = 0
        try:
            for frame in container.decode(stream):
                rotation = _norm_rotation(frame.rotation)
                w, h = size or display_size(frame.width, frame.height, sar, rotation)
                cw, ch = (h, w) if rotation in (90, 270) else (w, h)  # size before rotation
                if (cw, ch) == (frame.width, frame.height) and frame.format.name == "rgb24":
                    rgb = frame.to_ndarray()
                else:
                    rgb = frame.reformat(width=cw, height=ch, format="rgb24", interpolation="AREA").to_ndarray()
                if rotation:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
                if frame.pts is not None and tb:
                    if start is None:
                        start = frame.pts
                    t = float((frame.pts - start) * tb)
                else:
                    t = float(index / rate)
                yield Frame(index, t, rgb)
                index += 1
        except av.FFmpegError as exc:
            raise UnreadableVideo(
                f"decoding {uri} failed after frame {index} ({exc.strerror or exc}); the file is truncated or corrupt",
                reason="truncated",
            ) from None
        expected = int(stream.frames or 0)
        if expected and index < expected * 0.9:
            raise UnreadableVideo(
                f"{uri} ended after {index} of {expected} indexed frames; the file is truncated",
                reason="truncated",
            )


# --------------------------------------------------------------------------------------------- export


@functools.lru_cache(maxsize=8)
def frame_times(uri: str, video_id: str) -> tuple[float, ...]:
    """Presentation time (s, relative to the container start) of every frame, from packets (no decode).

    Cached per video: clip export of many shots of one video demuxes it once. ``video_id`` keys the cache
    so a changed file is read again.
    """
    del video_id
    with _open_container(uri) as container:
        stream = _video_stream(container, uri)
        origin = container.start_time or 0  # in AV_TIME_BASE units, what ffmpeg's -ss is relative to
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and not p.is_discard]
        tb = stream.time_base
        return tuple(float(p * tb) - origin / av.time_base for p in sorted(pts))


def export_clip(
    uri: str, video: VideoRecord, start_frame: int, end_frame: int, short_side: int, crf: int, preset: str
) -> bytes:
    """MP4 bytes (H.264, yuv420p, +faststart) of frames ``[start_frame, end_frame)`` of ``uri``.

    Display orientation, square pixels, short side ``min(short_side, source short side)``, even dims.
    Seeks near the start (FFmpeg accurate input seeking) instead of decoding from the beginning; the seek
    time falls halfway between the previous and the first wanted frame so rounding never shifts the range.
    """
    import ffmpeg
    import imageio_ffmpeg

    if not 0 <= start_frame < end_frame:
        raise ValueError(f"bad frame range [{start_frame}, {end_frame})")
    times = frame_times(uri, video.video_id)
    if start_frame >= len(times):
        raise UnsupportedVideo(
            f"{uri}: clip start frame {start_frame} is past the last frame ({len(times)} frames)",
            reason="bad-range",
        )
    n = min(end_frame, len(times)) - start_frame
    prev = times[start_frame - 1] if start_frame > 0 else times[0] - 1.0
    seek = max(0.0, (prev + times[start_frame]) / 2)
    w, h = analysis_size(video.width, video.height, short_side)
    with local_path(uri) as src, tempfile.TemporaryDirectory(prefix="fw-clip-") as tmp:
        out = os.path.join(tmp, "clip.mp4")
        stream = (
            ffmpeg.input(src, ss=f"{seek:.6f}")
            .video.filter("scale", w, h, flags="area")
            .filter("setsar", 1)
            .output(
                out,
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=crf,
                preset=preset,
                movflags="+faststart",
                fps_mode="passthrough",
                an=None,
                sn=None,
                **{"frames:v": n, "map_metadata": -1},
            )
        )
        args = stream.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe(), overwrite_output=True)
        args[1:1] = ["-hide_banner", "-loglevel", "error", "-nostdin"]
        proc = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not os.path.exists(out):
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise UnreadableVideo(
                f"ffmpeg failed to export frames [{start_frame}, {end_frame}) of {uri}: "
                f"{err[-1] if err else 'no output'}",
                reason="export-failed",
            )
        with open(out, "rb") as f:
            return f.read()


# ---------------------------------------------------------------------------------------------- stage


class ProbeVideo(Stage):
    """Stage: fill the video record from the file; reject unreadable, unsupported or too long videos."""

    name = "probe"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.video

    def process(self, unit: VideoUnit) -> VideoUnit | Reject:
        uri = unit.video.uri
        try:
            record = probe(uri)
        except (UnreadableVideo, UnsupportedVideo) as exc:
            try:
                item_id = content_id(uri) if exc.reason not in ("missing", "empty") else uri
            except (OSError, UnreadableVideo):
                item_id = uri
            return Reject(item_id, uri, self.name, exc.reason, str(exc))
        limit = self.config.max_duration_s
        if limit is not None and record.duration_s > limit:
            detail = f"{uri} lasts {record.duration_s:.1f} s, over video.max_duration_s={limit:g}"
            return Reject(record.video_id, uri, self.name, "too-long", detail)
        self.stats.counts["video_seconds"] += record.duration_s
        self.stats.counts["frames"] += record.n_frames
        unit.video = record
        return unit
