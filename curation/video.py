"""Video I/O: the main video stream, probe (the container's claims) and the streaming decode (the truth).

Decoding uses PyAV (FFmpeg libraries) and never holds a whole video in memory. The decoded stream is the
truth: frame indices count decoded frames from 0 in presentation order (what a player shows: edit lists
honoured), whatever the timestamps say; times are presentation times relative to the first frame, kept
monotonic over timestamps that jump or restart (``FrameDecoder``, ``DecodeReport``). The container's frame
count, duration and rate are kept only as ``container_*`` fields of the ``VideoRecord``. Clip export
(``curation.export``) cuts by those frame indices with the same decoder.

Rotation is the display-matrix angle as FFmpeg reports it (degrees counter-clockwise, one of 0/90/180/270):
a frame is shown after rotating it by that angle, exactly as the ``ffmpeg`` CLI auto-rotates.

URIs: local paths (or ``file://``) are opened directly; any other ``scheme://`` URI is resolved with
``pyarrow.fs.FileSystem.from_uri`` (s3, gs, hdfs, ...) in ``resolve_uri``, the one place that knows about
filesystems.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
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
_MAX_PTS_GAP_S = 10  # a forward timestamp step longer than this (s) is a discontinuity, not a long frame
_DATA_GAP_S = 1.0  # a forward step this long (s) and _DATA_GAP_FRAMES intervals in a steady stream: data missing
_DATA_GAP_FRAMES = 10
_REORDER_FRAMES = 4  # frames whose timestamps may come swapped (packed B-frames): re-sorted within this window
_RATE_WINDOW = 64  # recent frame intervals whose median stands in for a frame's duration
_SHORT_DECODE = 0.9  # a clean decode shorter than this share of the container's claimed duration is damage


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


_NOT_MOVING = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
_UNSUPPORTED = (av.DecoderNotFoundError, av.DemuxerNotFoundError, av.PatchWelcomeError)


@contextlib.contextmanager
def _open_container(uri: str) -> Iterator[av.container.InputContainer]:
    with open_input(uri) as src:
        try:
            container = av.open(src, mode="r", metadata_errors="ignore")
        except _UNSUPPORTED as exc:
            raise UnsupportedVideo(
                f"{uri}: this FFmpeg build cannot read the file's container ({exc.strerror or exc})",
                reason="unsupported-container",
            ) from None
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


# codecs of still pictures: a track of one of them beside a motion-picture codec is a cover or a thumbnail that
# was muxed as a plain track (a JPEG added to an MKV as a second video track is a 1-frame MJPEG stream)
_STILL_CODECS = frozenset({"mjpeg", "png", "bmp", "tiff", "webp", "gif", "jpeg2000", "jpegls", "targa"})


def _still(stream: av.video.stream.VideoStream) -> bool:
    """A still-picture codec's track not known to hold several frames (Matroska counts none)."""
    cc = stream.codec_context
    return cc is not None and cc.name in _STILL_CODECS and (stream.frames or 0) <= 1


def _area(stream: av.video.stream.VideoStream) -> int:
    cc = stream.codec_context
    return (cc.width * cc.height) if cc is not None else 0


def select_video_stream(container: av.container.InputContainer, uri: str) -> av.video.stream.VideoStream:
    """The main video stream of a container, the same on every open.

    Attached pictures (cover art) and timed thumbnails are not candidates; streams of a motion-picture codec come
    before tracks of a still-picture codec (``_STILL_CODECS``) not known to hold several frames (an MJPEG camera
    file is still read); then the largest picture wins (a small preview stream placed first loses to the main
    picture), then the one whose disposition is ``default``, then the lowest index. Raises ``UnreadableVideo``
    (``no-video-stream``, ``cover-art-only``) or ``UnsupportedVideo`` (``unsupported-codec``: no decoder in this
    FFmpeg build).
    """
    streams = list(container.streams.video)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise UnreadableVideo(f"{uri} has no video stream (streams: {', '.join(kinds)})", reason="no-video-stream")
    moving = [s for s in streams if not s.disposition & _NOT_MOVING]
    if not moving:
        audio = "audio with cover art" if container.streams.audio else "cover art only"
        raise UnreadableVideo(
            f"{uri} is {audio}: its only picture is an attached picture, not a video", reason="cover-art-only"
        )
    default = av.stream.Disposition.default
    stream = min(moving, key=lambda s: (_still(s), -_area(s), not s.disposition & default, s.index))
    if stream.codec_context is None:
        raise UnsupportedVideo(
            f"{uri}: the codec of video stream {stream.index} is not one this FFmpeg build can decode "
            "; convert the file or use an FFmpeg that has its decoder",
            reason="unsupported-codec",
        )
    return stream


# ---------------------------------------------------------------------------------------------- probe


def _mirrored(frame: av.VideoFrame) -> bool:
    """Whether ``frame``'s display matrix (side data: 3x3 int32, 16.16 fixed point) flips the picture: the
    determinant of its 2x2 part is negative (what FFmpeg's ``av_display_matrix_flip`` writes)."""
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            a, b, _, c, d = (int(v) for v in np.frombuffer(bytes(side), dtype="<i4")[:5])
            return a * d - b * c < 0
    return False


def norm_rotation(angle: float | int | None) -> int:
    """A display-matrix angle (degrees, as FFmpeg reports it) as one of 0, 90, 180, 270."""
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
    a variable frame rate. ``n_frames``, ``duration_s`` and the frame rate are the container's claims (also
    kept as ``container_*``; ``n_frames`` estimated from duration and rate when the container has no
    index); the analysis pass replaces them with what it decodes (``DecodeReport.apply``).
    """
    size = _file_size(uri)
    if size == 0:
        raise UnreadableVideo(f"{uri} is empty (0 bytes); re-copy or re-download it", reason="empty")
    with _open_container(uri) as container:
        stream = select_video_stream(container, uri)
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
        if _mirrored(first):
            raise UnsupportedVideo(
                f"{uri}: its display matrix mirrors the picture, which this version does not apply (its clips "
                "would come out mirrored); re-encode it with ffmpeg, which applies it, to curate it",
                reason="mirrored",
            )
        rotation = norm_rotation(first.rotation)
        sar = _sar(stream)
        coded_w, coded_h = stream.codec_context.width or first.width, stream.codec_context.height or first.height
        width, height = display_size(coded_w, coded_h, sar, rotation)
        claimed_duration = _claimed_duration(container, stream)
        duration = claimed_duration or 0.0
        claimed_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        rate = claimed_rate
        n_frames = int(stream.frames or 0)
        if not rate and n_frames and duration:
            rate = Fraction(n_frames / duration).limit_denominator(1001)
        rate = Fraction(rate) if rate else Fraction(0)
        claimed_frames = n_frames or None
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
            stream_index=stream.index,
            container_duration_s=claimed_duration,
            container_n_frames=claimed_frames,
            container_fps=float(claimed_rate) if claimed_rate else None,
        )


def _claimed_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds the container claims for the video stream (its own duration, else the file's when the video
    is the only stream); None when it claims nothing (raw streams, WebM written to a pipe)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def demuxed_duration(video: VideoRecord) -> float:
    """Seconds of ``video``'s stream measured from its packets, demuxed without decoding: the span of their
    timestamps (first to last, plus the last packet's duration or one frame), or their count over the frame
    rate when they carry none (raw elementary streams). For files whose container claims no duration (raw
    streams, WebM written to a pipe), where ``probe`` leaves ``duration_s`` 0; 0.0 when no packet has data.

    Reads the whole file once (I/O bound: no frame is decoded)."""
    with _open_container(video.uri) as container:
        stream = container.streams[video.stream_index]
        first, last, end, count = None, None, 0, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                if packet.pts is not None:
                    first = packet.pts if first is None else min(first, packet.pts)
                    if last is None or packet.pts >= last:
                        last, end = packet.pts, packet.pts + (packet.duration or 0)
        except av.FFmpegError:
            pass  # damaged data: what was demuxed before it counts, as in the analysis pass
        frame_s = 1 / float(video.fps) if video.fps else 0.0
        if first is not None and stream.time_base and last > first:
            span = float((end - first) * stream.time_base)
            return span if end > last else span + frame_s
        return count * frame_s


# --------------------------------------------------------------------------------------------- decode


def analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(w, h)`` with the given short side (never upscaling), aspect kept, both even (at least 2)."""
    short = min(width, height)
    scale = min(1.0, short_side / short) if short > 0 else 1.0

    def even(x: float, cap: int) -> int:
        return max(2, min(int(round(x / 2)) * 2, cap // 2 * 2 or 2))

    return even(width * scale, width), even(height * scale, height)


@dataclass
class DecodeReport:
    """What one decode pass of a video's main stream found: the truth behind its frame count and times.

    ``duration_s`` runs from the first frame's time to the last frame's end; ``fps`` is the container's
    rate when the decoded frames keep it (within 2 %), else frames per second of the decode.
    ``timestamp_jumps`` counts timestamps that went back or leapt over ``_MAX_PTS_GAP_S`` (joined files,
    broken muxers): frame times continue one frame later and frame indices never change. ``gaps`` lists the
    frames that follow missing data in a steady stream (``_missing_data``; counted as jumps too): decoding
    goes on, and the shot holding such a frame is not whole. ``damage`` says why decoding stopped before the
    end of the stream, None when it ran to the end.
    """

    n_frames: int = 0
    duration_s: float = 0.0
    fps: Fraction = Fraction(0)
    timestamp_jumps: int = 0
    damage: str | None = None
    gaps: list[tuple[int, str]] = field(default_factory=list)  # (first frame after missing data, why)

    def apply(self, video: VideoRecord) -> None:
        """Make ``video``'s ``n_frames``, ``duration_s`` and fps the decoded ones; mark it partial on damage."""
        video.n_frames, video.duration_s = self.n_frames, self.duration_s
        video.fps_num, video.fps_den = self.fps.numerator, self.fps.denominator
        video.partial, video.partial_reason = self.damage is not None, self.damage


def _missing_data(gap: Fraction, recent: deque[Fraction]) -> str | None:
    """Why a forward timestamp step of ``gap`` s means missing data, or None: in a steady stream (the
    ``recent`` frame intervals within ``_VFR_TOLERANCE`` of their median, a full window of them) a step over
    ``_DATA_GAP_S`` and ``_DATA_GAP_FRAMES`` intervals, up to ``_MAX_PTS_GAP_S`` (longer: a discontinuity). A
    file damaged in the middle that the demuxer resyncs past reads like this (the frames between are gone),
    and so does a recording paused and resumed; taken as one long frame, the shot around it was exported with
    a freeze and a jump inside."""
    if len(recent) < recent.maxlen or not _DATA_GAP_S < gap <= _MAX_PTS_GAP_S:
        return None
    med = _median(recent)
    if gap <= _DATA_GAP_FRAMES * med or any(abs(g - med) > _VFR_TOLERANCE * med for g in recent):
        return None
    return f"the timestamps leap {float(gap):.2f} s in a stream of {float(1 / med):.3g} frames/s: data is missing"


def _presentation_pts(
    frames: Iterator[av.VideoFrame], tolerance: int | None
) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """``(frame, pts)`` in decode order, each frame given the smallest timestamp not yet handed out among
    its own and the next ``_REORDER_FRAMES`` frames' that is at most ``tolerance`` (pts units) below its own.

    A decoder returns frames in presentation order, but some files attach their timestamps out of order:
    MPEG-4 Part 2 AVIs with packed B-frames (XviD, DivX; e.g. opencv-doc's ``Megamind.avi``) give 1, 2, 3, 5,
    4, 6, 8, 7... Taken as they come, each step back is a timestamp jump, and the video's duration doubled
    and its clips played at half speed. The window sorts such local swaps; a step back of more than
    ``tolerance`` (a joined file restarting its clock) is left to the jump handling. ``tolerance`` None (no
    timestamps): frames as they come. A decoding error is raised after the frames decoded before it."""
    window: list[tuple[av.VideoFrame, int | None]] = []
    pending: list[int] = []  # timestamps of the window's frames, not yet handed out

    def emit() -> tuple[av.VideoFrame, int | None]:
        frame, own = window.pop(0)
        if own is None or tolerance is None:
            return frame, own
        low = min((p for p in pending if p >= own - tolerance), default=None)
        if low is None:  # its own timestamp went to an earlier frame and none is near: left as it is
            return frame, own
        pending.remove(low)
        return frame, low

    try:
        for frame in frames:
            window.append((frame, frame.pts))
            if frame.pts is not None:
                pending.append(frame.pts)
            if len(window) > _REORDER_FRAMES:
                yield emit()
    except av.FFmpegError:  # the frames decoded before the error are handed out first
        while window:
            yield emit()
        raise
    while window:
        yield emit()


class FrameDecoder:
    """One pass over the main video stream of ``uri``: ``Frame``s in presentation order, then ``report``.

    Frames are scaled by FFmpeg to ``size`` ``(w, h)`` in display orientation (None: display size), pixels
    square, rotation applied. Frame ``index`` counts decoded frames from 0, whatever the timestamps say;
    ``time_s`` is the presentation time relative to the first frame, monotonic (see ``DecodeReport``).
    Decoding errors part-way do not raise: iteration ends and ``report.damage`` says what happened; a
    stream that ends cleanly well before the duration its container claims is damage too (a truncated
    file). Iterate once.
    """

    def __init__(self, uri: str, size: tuple[int, int] | None = None, threads: int = 0):
        self.uri, self.size, self.threads = uri, size, threads
        self.report = DecodeReport()
        self._sar = Fraction(1)

    def __iter__(self) -> Iterator[Frame]:
        for index, time_s, frame in self.decoded():
            yield Frame(index, time_s, self.rgb(frame))

    def decoded(self) -> Iterator[tuple[int, float, av.VideoFrame]]:
        """``(index, time_s, frame)`` with the frame as FFmpeg decoded it (coded size, rotation not applied),
        for callers that convert it themselves (``rgb`` does what ``__iter__`` does); the same report."""
        report = self.report
        with _open_container(self.uri) as container:
            stream = select_video_stream(container, self.uri)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
            self._sar = _sar(stream)
            tb = stream.time_base
            claimed_rate = stream.average_rate or stream.guessed_rate
            step = 1 / Fraction(claimed_rate) if claimed_rate else Fraction(1, 25)  # s per frame, nominal
            seg_t, seg_pts, prev_pts = Fraction(0), None, None  # current run of well-behaved timestamps
            t = Fraction(0)
            gaps: deque[Fraction] = deque(maxlen=_RATE_WINDOW)
            skipped = Fraction(0)  # seconds of missing data the frame times leave out
            index = 0
            tolerance = int(_REORDER_FRAMES * step / tb) if tb else None
            try:
                for frame, pts in _presentation_pts(container.decode(stream), tolerance):
                    pts = pts if tb else None
                    if index == 0:
                        t = Fraction(0)
                        seg_pts = pts
                    elif pts is None or seg_pts is None or prev_pts is None:
                        t = t + step
                        seg_t, seg_pts = t, pts
                    else:
                        gap = (pts - prev_pts) * tb
                        missing = _missing_data(gap, gaps)
                        if missing is not None:  # a discontinuity; the shot around it is not whole
                            report.gaps.append((index, f"after frame {index - 1} ({float(t):.2f} s) {missing}"))
                            skipped += gap
                            report.timestamp_jumps += 1
                            t = t + (_median(gaps) or step)
                            seg_t, seg_pts = t, pts
                        elif 0 < gap <= _MAX_PTS_GAP_S:
                            gaps.append(gap)
                            t = seg_t + (pts - seg_pts) * tb
                        else:
                            report.timestamp_jumps += 1
                            t = t + (_median(gaps) or step)
                            seg_t, seg_pts = t, pts
                    prev_pts = pts
                    yield index, float(t), frame
                    index += 1
                    report.n_frames = index
            except av.FFmpegError as exc:
                report.damage = f"decoding stopped after frame {index} ({exc.strerror or exc})"
            last = _median(gaps) or step
            report.duration_s = float(t + last) if index else 0.0
            if report.duration_s and index:
                measured = index / report.duration_s
                if claimed_rate and abs(measured - float(claimed_rate)) <= 0.02 * float(claimed_rate):
                    report.fps = Fraction(claimed_rate)
                else:
                    report.fps = Fraction(measured).limit_denominator(1001)
            claimed = _claimed_duration(container, stream)
            covered = report.duration_s + float(skipped)
            if report.damage is None and claimed and covered < _SHORT_DECODE * claimed - float(last):
                report.damage = (
                    f"the frames end at {report.duration_s:.2f} s of the {claimed:.2f} s the container claims "
                    f"(decoded {index} frames)"
                )
            # an AVI's header counts its frames, and its duration follows the index that survived: a truncated
            # AVI claims the duration it still has (MP4 counts samples an edit list may hide: not used there)
            header_frames = stream.frames if container.format.name == "avi" else 0
            if report.damage is None and index < _SHORT_DECODE * header_frames:
                report.damage = f"decoded {index} of the {header_frames} frames the AVI header counts"

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame as RGB uint8 HxWx3 at ``size`` in display orientation, pixels square."""
        rotation = norm_rotation(frame.rotation)
        w, h = self.size or display_size(frame.width, frame.height, self._sar, rotation)
        cw, ch = (h, w) if rotation in (90, 270) else (w, h)  # size before rotation
        if (cw, ch) == (frame.width, frame.height) and frame.format.name == "rgb24":
            rgb = frame.to_ndarray()
        elif frame.format.name == "yuv420p" and cw * ch < frame.width * frame.height:
            # a downscale of the common format: scaled in YUV, then the small picture converted, at half the CPU
            # of scaling straight to RGB (1280x720 -> 456x256: 1.07 vs 2.06 ms; 46.0 vs 47.2 dB against a float
            # area downscale of the full-resolution RGB, BENCHMARKS.md "Analysis scaling")
            small = frame.reformat(width=cw, height=ch, format="yuv420p", interpolation="AREA", threads=1)
            rgb = small.reformat(format="rgb24", threads=1).to_ndarray()
        else:
            # one swscale thread: the same pixels as its automatic slice threads at ~15% less CPU (the decoder's
            # threads and the detectors use the other cores)
            rgb = frame.reformat(width=cw, height=ch, format="rgb24", interpolation="AREA", threads=1).to_ndarray()
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
        return rgb


def _median(values: deque[Fraction]) -> Fraction | None:
    return sorted(values)[len(values) // 2] if values else None


def iter_frames(uri: str, size: tuple[int, int] | None = None, threads: int = 0) -> Iterator[Frame]:
    """Decode ``uri`` frame by frame (``FrameDecoder``), raising at the end of a damaged stream.

    Raises ``UnreadableVideo(reason='truncated')`` after the last good frame when decoding stopped early;
    callers that keep what decoded before the damage use ``FrameDecoder`` and its ``report``.
    """
    decoder = FrameDecoder(uri, size, threads)
    yield from decoder
    if decoder.report.damage:
        raise UnreadableVideo(f"{uri}: {decoder.report.damage}; the file is truncated or corrupt", reason="truncated")


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
