"""Small video files of the kinds real archives hold and other tools mishandle, built at test time.

Each builder writes one file with the bundled FFmpeg binary (``imageio_ffmpeg``) and returns what a correct
reading of it must find (``Truth``). The base picture is ``testsrc2`` at 25 fps whose hue jumps every
``CUT_EVERY`` frames (hard cuts: a frame difference PySceneDetect sees), ``SIZE`` pixels, a few seconds.
The recipes are ours; the kinds come from public bug reports of PySceneDetect, decord, video2dataset,
HandBrake, lossless-cut, immich and fiftyone.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg

SIZE = (320, 180)
FPS = 25
CUT_EVERY = 40  # frames between hard cuts of the base picture
_CUTS = f"hue=H=2*PI*floor(n/{CUT_EVERY})/5:s=1+floor(n/{CUT_EVERY})"


@dataclass
class Truth:
    """What a correct reading of a built file finds: decoded frames, shots' first frames, seconds."""

    n_frames: int
    fps: float
    cuts: list[int] = field(default_factory=list)  # first frame of every shot after the first
    stream_index: int | None = None  # index of the main video stream, when it is not 0
    width: int = SIZE[0]
    height: int = SIZE[1]

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps


def ffmpeg(*args: str | Path, stdout=None) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run([*cmd, *map(str, args)], check=True, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)


def _source(seconds: float, size: tuple[int, int] = SIZE, fps: int = FPS, every: int = CUT_EVERY) -> list[str]:
    hue = f"hue=H=2*PI*floor(n/{every})/5:s=1+floor(n/{every})"
    return ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}", "-vf", hue]


_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p"]


def _cuts(n: int, every: int = CUT_EVERY, offset: int = 0) -> list[int]:
    """Cut frames of a file whose frame 0 is frame ``offset`` of the base picture."""
    return [f - offset for f in range(every, offset + n, every) if f > offset]


def ts_concat(path: Path) -> Truth:
    """Two MPEG-TS encodes joined by ``cat``: timestamps jump back to the start halfway through the file."""
    a, b = path.with_suffix(".a.ts"), path.with_suffix(".b.ts")
    ffmpeg(*_source(3.2), *_X264, "-f", "mpegts", a)  # 80 frames, a cut at 40
    ffmpeg(*_source(3.2, every=20), *_X264, "-f", "mpegts", b)  # hue changes at 20 and 40 (shots of 20)
    path.write_bytes(a.read_bytes() + b.read_bytes())
    a.unlink()
    b.unlink()
    # b's frame 0 differs from a's frame 79 (hue 1 vs hue 0): a cut at 80 too
    return Truth(160, FPS, [40, 80, 100, 120, 140])


def cover_first(path: Path) -> Truth:
    """An MP4 whose stream 0 is a JPEG cover (attached picture) and stream 1 the video, metadata up front."""
    video = path.with_suffix(".v.mp4")
    cover = path.with_suffix(".jpg")
    ffmpeg(*_source(4.8), *_X264, video)
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=300x300", "-frames:v", "1", cover)
    ffmpeg(
        *("-i", cover, "-i", video, "-map", "0", "-map", "1", "-c", "copy"),
        *("-disposition:v:0", "attached_pic", "-metadata", "title=tagged", "-movflags", "+faststart", path),
    )
    video.unlink()
    cover.unlink()
    path.write_bytes(_udta_first(path.read_bytes()))
    return Truth(120, FPS, [40, 80], stream_index=1)


def _atoms(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    out, i = [], start
    while i < end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        out.append((kind, i, size))
        i += size
    return out


def _udta_first(data: bytes) -> bytes:
    """The MP4 with its ``moov/udta`` (tags, cover) moved before the tracks, as taggers write it. The moov
    keeps its size and place (faststart, before mdat), so chunk offsets stay valid."""
    kind, at, size = next(a for a in _atoms(data, 0, len(data)) if a[0] == b"moov")
    children = _atoms(data, at + 8, at + size)
    order = sorted(children, key=lambda c: {b"mvhd": 0, b"udta": 1}.get(c[0], 2))
    body = b"".join(data[i : i + n] for _, i, n in order)
    return data[: at + 8] + body + data[at + size :]


def cover_only(path: Path) -> None:
    """An M4A-like MP4: an AAC tone and a JPEG cover, no moving picture."""
    cover = path.with_suffix(".jpg")
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=300x300", "-frames:v", "1", cover)
    ffmpeg(
        *("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-i", cover, "-map", "0", "-map", "1"),
        *("-c:a", "aac", "-c:v", "copy", "-disposition:v:0", "attached_pic", path),
    )
    cover.unlink()


def edit_list(path: Path) -> Truth:
    """An MP4 cut by stream copy at a non-keyframe (B-frames, 2 s GOP): an edit list hides the lead-in."""
    src = path.with_suffix(".src.mp4")
    ffmpeg(*_source(6.0), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-bf", "2", "-g", "50", src)
    # -ss 0.9: the cut starts at frame 22 (0.88 s is the frame before); playback starts there
    ffmpeg("-ss", "0.9", "-i", src, "-c", "copy", path)
    src.unlink()
    return Truth(150 - 23, FPS, _cuts(150 - 23, offset=23))


def annexb(path: Path) -> Truth:
    """A raw Annex-B H.264 elementary stream (``.h264``): no container, no duration, no index."""
    ffmpeg(*_source(4.8), *_X264, "-bsf:v", "h264_mp4toannexb", "-f", "h264", path)
    return Truth(120, FPS, [40, 80])


def swapped_timestamps(path: Path) -> Truth:
    """Frames whose timestamps come locally out of order (3 before 2 of every four), as MPEG-4 Part 2 AVIs
    with packed B-frames give them (XviD, DivX; opencv-doc's ``Megamind.avi``): here an intra-only MJPEG
    stream remuxed into MP4 with the timestamps of each fourth pair swapped (pts after dts, dts in order)."""
    import av

    src = path.with_suffix(".src.mkv")
    ffmpeg(*_source(4.8), "-c:v", "mjpeg", "-q:v", "4", src)
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size]
        target = out.add_stream_from_template(stream)
        pts = [p.pts for p in packets]
        step = pts[1] - pts[0]
        for k, packet in enumerate(packets):
            j = k + (1 if k % 4 == 2 else -1 if k % 4 == 3 else 0)
            packet.pts, packet.dts, packet.stream = pts[j] + step, pts[k], target
            out.mux(packet)
    src.unlink()
    return Truth(120, FPS, [40, 80])


def two_video_streams(path: Path) -> Truth:
    """An MKV with a small preview stream first (default) and the main picture second."""
    main = path.with_suffix(".main.mkv")
    preview = path.with_suffix(".preview.mkv")
    ffmpeg(*_source(4.8), *_X264, main)
    ffmpeg(*_source(4.8, size=(64, 36)), *_X264, preview)
    ffmpeg("-i", preview, "-i", main, "-map", "0:v", "-map", "1:v", "-c", "copy", path)
    main.unlink()
    preview.unlink()
    return Truth(120, FPS, [40, 80], stream_index=1)


def still_track(path: Path) -> Truth:
    """An MKV holding the video and, as a second plain track, a 1-frame JPEG bigger than the video (a cover
    added with ``-disposition attached_pic``, which Matroska does not keep): the JPEG track is not the main
    stream, though its picture is the largest."""
    main = path.with_suffix(".main.mkv")
    cover = path.with_suffix(".jpg")
    ffmpeg(*_source(4.8), *_X264, main)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720", "-frames:v", "1", cover)
    ffmpeg("-i", main, "-i", cover, "-map", "0", "-map", "1", "-c", "copy", "-disposition:v:1", "attached_pic", path)
    main.unlink()
    cover.unlink()
    return Truth(120, FPS, [40, 80])


def glob_name(folder: Path) -> tuple[Path, Truth]:
    """An MP4 whose real name holds glob characters: ``clip [1080p] *?.mp4``."""
    path = folder / "clip [1080p] *?.mp4"
    ffmpeg(*_source(4.0), *_X264, path)
    return path, Truth(100, FPS, [40, 80])


def low_fps(path: Path) -> Truth:
    """2 fps, four 3-second shots (6 frames each); consecutive frames move as little as at 25 fps (a
    slowed-down capture), so only the cuts are large changes."""
    src = _source(0.96, every=6)
    src[-1] += ",setpts=N/(2*TB)"
    ffmpeg(*src, "-r", "2", *_X264, path)
    return Truth(24, 2, [6, 12, 18])


def webm_pipe(path: Path) -> Truth:
    """VP8 WebM written to a pipe (what browser recorders produce): no duration, no cues."""
    with open(path, "wb") as f:
        ffmpeg(*_source(4.8), "-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime", "-f", "webm", "pipe:1", stdout=f)
    return Truth(120, FPS, [40, 80])


def duplicate(path: Path, copy: Path) -> Truth:
    """The same file twice under two names."""
    ffmpeg(*_source(4.8), *_X264, path)
    copy.write_bytes(path.read_bytes())
    return Truth(120, FPS, [40, 80])


def damaged_midway(path: Path) -> Truth:
    """An MKV (frames in cluster order) whose second half is overwritten with garbage bytes: the shots
    before the damage decode; ``Truth`` holds the whole film's values (callers check a prefix)."""
    ffmpeg(*_source(8.0, every=40), *_X264, "-g", "25", path)
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:] = bytes((i * 97 + 13) % 251 for i in range(len(data) - half))
    path.write_bytes(bytes(data))
    return Truth(200, FPS, [40, 80, 120, 160])


def unsupported_codec(path: Path) -> None:
    """A well-formed MKV whose video codec id no FFmpeg build knows (``V_MPEG4/ISO/AVC`` renamed)."""
    src = path.with_suffix(".src.mkv")
    ffmpeg(*_source(1.0), *_X264, src)
    data = src.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XYZW4/ISO/QQQ"))
    src.unlink()
