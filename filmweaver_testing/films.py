"""Synthetic films with ground truth, for tests, benchmarks and the demo.

A film is a run of scenes. Each scene is a textured "world" in its own colour scheme holding a few
recurring "characters" (coloured shapes of fixed colour and size); each shot is a camera view of that world
(a framing: wide, or close on one character) with its own pan and zoom. Consecutive shots of a scene are
framed differently, so a cut inside a scene is still a visible cut, while all shots of a scene share one
palette (they look alike to a colour-histogram embedder) and scenes differ in hue. Dialogue scenes cut
A-B-A-B between close-ups of two characters. Boundaries are hard cuts, or with ``gradual_ratio > 0``
cross-dissolves and fades through black. Mild per-frame noise keeps every shot from being static.

The ground truth (``FilmTruth``) is written beside the video as JSON (same path, suffix ``.json``).
``make_simple_video`` and ``make_audio_only`` make small odd inputs (rotation metadata, variable frame
rate, tiny sizes, frames that encode their own index).
"""

from __future__ import annotations

import colorsys
import json
import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

_WORLD_SCALE = 2.6  # the world is this many frames wide and high
_CODEC_ALIASES = {"h264": "libx264", "vp9": "libvpx-vp9", "vp8": "libvpx", "libvpx-vp8": "libvpx"}
_CODE_BITS = 10  # bars of the frame-index code drawn by make_simple_video


@dataclass
class TruthShot:
    """One true shot: frames ``[start_frame, end_frame)``, its scene, and the transition that opens it."""

    index: int
    start_frame: int
    end_frame: int
    scene: int
    transition_in: str  # 'none' (first shot) | 'cut' | 'dissolve' | 'fade'
    transition_frames: tuple[int, int] | None = None  # [a, b) of the gradual transition; start_frame inside


@dataclass
class FilmTruth:
    """Ground truth of a synthetic film."""

    fps_num: int
    fps_den: int
    width: int
    height: int
    n_frames: int
    shots: list[TruthShot] = field(default_factory=list)
    seed: int = 0
    codec: str = ""

    def cut_frames(self) -> list[int]:
        """``start_frame`` of every shot but the first."""
        return [s.start_frame for s in self.shots[1:]]

    def scene_starts(self) -> list[int]:
        """Shot index where each scene starts."""
        return [s.index for i, s in enumerate(self.shots) if i == 0 or s.scene != self.shots[i - 1].scene]

    @property
    def n_scenes(self) -> int:
        return len(self.scene_starts())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, s: str) -> FilmTruth:
        d = json.loads(s)
        shots = [
            TruthShot(**{**x, "transition_frames": tuple(x["transition_frames"]) if x["transition_frames"] else None})
            for x in d.pop("shots")
        ]
        return cls(**d, shots=shots)

    @classmethod
    def load(cls, video_path: str | Path) -> FilmTruth:
        """The truth written beside ``video_path``."""
        return cls.from_json(Path(video_path).with_suffix(".json").read_text())


# ------------------------------------------------------------------------------------------ encoding


class _Encoder:
    """Writes RGB frames to a video file with PyAV; the container follows the path suffix."""

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int],
        fps: int | Fraction,
        codec: str,
        crf: int = 18,
        preset: str = "veryfast",
        rotation: int = 0,
        time_base: Fraction | None = None,
    ):
        codec = _CODEC_ALIASES.get(codec, codec)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps))
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": str(crf), "preset": preset}
        elif codec in ("libvpx-vp9", "libvpx"):
            self.stream.options = {"crf": str(crf + 12), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            self.stream.bit_rate = 0
        elif codec == "mpeg4":
            self.stream.options = {"qscale": "3"}
        if time_base is not None:
            self.stream.time_base = time_base
            self.stream.codec_context.time_base = time_base
        if rotation:
            self.stream.set_display_rotation(rotation)

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if pts is not None:
            frame.pts = pts
            frame.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


# ---------------------------------------------------------------------------------------------- worlds


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """A smooth random field in [0, 1] of ``shape`` (h, w), from a coarse grid upsampled bicubically."""
    grid = rng.random((cells[1], cells[0])).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((shape[1], shape[0]), Image.BICUBIC)
    f = np.asarray(img)
    return (f - f.min()) / max(1e-6, float(np.ptp(f)))


@dataclass
class _Character:
    shape: str  # circle | rect | ellipse
    colour: tuple[int, int, int]
    x: float  # centre, world pixels
    y: float
    r: float  # half size, world pixels


@dataclass
class _World:
    image: Image.Image
    characters: list[_Character]


def _make_world(rng: np.random.Generator, hue: float, frame: tuple[int, int]) -> _World:
    """A scene's world: a palette gradient over a blobby texture, with 2-3 characters placed on it."""
    fw, fh = frame
    ww, wh = int(fw * _WORLD_SCALE), int(fh * _WORLD_SCALE)
    palette = [
        _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.55, 0.9), rng.uniform(0.75, 0.95)),
        _hsv(hue + rng.uniform(0.04, 0.08), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.55)),
        _hsv(hue - rng.uniform(0.04, 0.08), rng.uniform(0.2, 0.5), rng.uniform(0.6, 0.85)),
    ]
    blobs = _smooth_field(rng, (wh, ww), (14, 9))
    # piecewise-linear palette lookup: sharp-ish bands give cuts large per-pixel differences
    t = np.clip((blobs - 0.5) * 2.2 + 0.5, 0, 1)[..., None]
    low = palette[1] + (palette[0] - palette[1]) * np.clip(t * 2, 0, 1)
    img = np.where(t < 0.5, low, palette[0] + (palette[2] - palette[0]) * np.clip(t * 2 - 1, 0, 1))
    ramp = np.linspace(-18, 18, ww, dtype=np.float32)[None, :, None]
    grain = rng.normal(0, 9, (wh, ww, 1)).astype(np.float32)
    img = np.clip(img + ramp + grain, 0, 255).astype(np.uint8)
    world = Image.fromarray(img)
    draw = ImageDraw.Draw(world)
    chars = []
    n_chars = int(rng.integers(2, 4))
    for k in range(n_chars):
        # characters spread along the world's width, in contrasting hues
        x = ww * (0.25 + 0.5 * k / max(1, n_chars - 1)) + rng.uniform(-0.04, 0.04) * ww
        y = wh * rng.uniform(0.4, 0.6)
        r = fh * rng.uniform(0.16, 0.22)
        colour = tuple(int(c) for c in _hsv(hue + 0.33 + 0.17 * k + rng.uniform(-0.03, 0.03), 0.85, 0.95))
        shape = ("circle", "rect", "ellipse")[k % 3]
        box = [x - r, y - r * (1.4 if shape == "ellipse" else 1), x + r, y + r * (1.4 if shape == "ellipse" else 1)]
        if shape == "rect":
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=3)
        else:
            draw.ellipse(box, fill=colour, outline=(20, 20, 20), width=3)
        draw.ellipse([x - r * 0.35, y - r * 0.45, x - r * 0.1, y - r * 0.2], fill=(250, 250, 250))
        draw.ellipse([x + r * 0.1, y - r * 0.45, x + r * 0.35, y - r * 0.2], fill=(250, 250, 250))
        chars.append(_Character(shape, colour, x, y, r))
    return _World(world, chars)


# ---------------------------------------------------------------------------------------------- camera


@dataclass
class _Camera:
    """A view moving linearly from (x0, y0, w0) to (x1, y1, w1) over ``span`` frames (w: view width)."""

    x0: float
    y0: float
    w0: float
    x1: float
    y1: float
    w1: float
    t0: int
    span: int

    def at(self, t: int) -> tuple[float, float, float]:
        a = min(1.0, max(0.0, (t - self.t0) / max(1, self.span)))
        return (
            self.x0 + (self.x1 - self.x0) * a,
            self.y0 + (self.y1 - self.y0) * a,
            self.w0 + (self.w1 - self.w0) * a,
        )


def _clamp_view(x: float, y: float, vw: float, world: tuple[int, int], aspect: float) -> tuple[float, float]:
    ww, wh = world
    vh = vw / aspect
    return float(np.clip(x, vw / 2 + 1, ww - vw / 2 - 1)), float(np.clip(y, vh / 2 + 1, wh - vh / 2 - 1))


def _framing(rng: np.random.Generator, kind: str, world: _World, frame: tuple[int, int]) -> tuple[float, float, float]:
    """Start view (x, y, width) of a framing: 'wide' or 'close:K' on character K."""
    fw, fh = frame
    ww, wh = world.image.size
    if kind == "wide":
        vw = fw * rng.uniform(1.6, 1.9)
        x, y = ww * rng.uniform(0.35, 0.65), wh * rng.uniform(0.4, 0.6)
    else:
        c = world.characters[int(kind.split(":")[1])]
        vw = fw * rng.uniform(0.85, 1.05)
        x = c.x + rng.uniform(-0.12, 0.12) * vw
        y = c.y + rng.uniform(-0.08, 0.08) * vw
    return (*_clamp_view(x, y, vw, (ww, wh), fw / fh), vw)


def _camera(
    rng: np.random.Generator, kind: str, world: _World, frame: tuple[int, int], t0: int, span: int, fps: float
) -> _Camera:
    fw, fh = frame
    x0, y0, w0 = _framing(rng, kind, world, frame)
    secs = span / fps
    speed = fw * rng.uniform(0.04, 0.1) * secs  # pan distance in world pixels over the shot
    ang = rng.uniform(0, 2 * np.pi)
    w1 = w0 * (1 + rng.uniform(-0.12, 0.12) * min(1.0, secs / 2))
    x1, y1 = _clamp_view(x0 + speed * np.cos(ang), y0 + speed * np.sin(ang), w1, world.image.size, fw / fh)
    return _Camera(x0, y0, w0, x1, y1, w1, t0, span)


def _render_view(world: _World, cam: _Camera, t: int, frame: tuple[int, int]) -> np.ndarray:
    fw, fh = frame
    x, y, vw = cam.at(t)
    s = vw / fw
    data = (s, 0.0, x - vw / 2, 0.0, s, y - fh * s / 2)
    img = world.image.transform((fw, fh), Image.AFFINE, data, resample=Image.BILINEAR)
    return np.asarray(img)


# ----------------------------------------------------------------------------------------------- films


def _plan_shots(
    rng: np.random.Generator,
    n_scenes: int,
    shots_per_scene: tuple[int, int],
    shot_seconds: tuple[float, float],
    fps: float,
    gradual_ratio: float,
) -> list[TruthShot]:
    shots: list[TruthShot] = []
    start = 0
    for scene in range(n_scenes):
        for _ in range(int(rng.integers(shots_per_scene[0], shots_per_scene[1] + 1))):
            n = max(6, int(round(rng.uniform(*shot_seconds) * fps)))
            shots.append(TruthShot(len(shots), start, start + n, scene, "none" if not shots else "cut"))
            start += n
    for prev, shot in zip(shots, shots[1:]):
        if rng.random() >= gradual_ratio:
            continue
        room = min(prev.end_frame - prev.start_frame, shot.end_frame - shot.start_frame) // 2
        length = min(int(rng.integers(10, 21)), room - (room % 2))
        if length < 4:
            continue
        a = shot.start_frame - length // 2
        shot.transition_in = "dissolve" if rng.random() < 0.5 else "fade"
        shot.transition_frames = (a, a + length)
    return shots


def _scene_framings(rng: np.random.Generator, n_shots: int, n_chars: int, dialogue: bool) -> list[str]:
    """Framings of a scene's shots; consecutive shots always differ."""
    if dialogue and n_shots >= 3:
        a, b = rng.choice(n_chars, size=2, replace=False)
        opening = ["wide"] if rng.random() < 0.5 else []
        body = [f"close:{a}" if i % 2 == 0 else f"close:{b}" for i in range(n_shots - len(opening))]
        return opening + body
    options = ["wide"] + [f"close:{k}" for k in range(n_chars)]
    out: list[str] = []
    for _ in range(n_shots):
        out.append(str(rng.choice([o for o in options if not out or o != out[-1]])))
    return out


def make_film(
    path: str | Path,
    seed: int = 0,
    n_scenes: int = 3,
    shots_per_scene: tuple[int, int] = (2, 4),
    shot_seconds: tuple[float, float] = (1.0, 2.5),
    fps: int = 24,
    size: tuple[int, int] = (320, 192),
    gradual_ratio: float = 0.0,
    dialogue: bool = True,
    codec: str = "libx264",
    **kw: Any,
) -> FilmTruth:
    """Render a synthetic multi-shot film to ``path`` and write its truth beside it; deterministic per seed.

    ``size`` is (w, h) and must be even. Extra options: ``noise`` (per-frame noise std, default 3.0),
    ``crf`` (default 18), ``preset`` (x264 preset, default 'veryfast'), ``log_every`` (frames between
    progress logs, default 2000).
    """
    noise = float(kw.pop("noise", 3.0))
    crf, preset = int(kw.pop("crf", 18)), str(kw.pop("preset", "veryfast"))
    log_every = int(kw.pop("log_every", 2000))
    if kw:
        raise TypeError(f"make_film got unexpected options: {sorted(kw)}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even, got {size}")
    rng = np.random.default_rng(seed)
    shots = _plan_shots(rng, n_scenes, shots_per_scene, shot_seconds, fps, gradual_ratio)
    hue0 = rng.random()
    worlds = [_make_world(rng, hue0 + k * 0.618034, size) for k in range(n_scenes)]
    cameras = []
    for scene in range(n_scenes):
        members = [s for s in shots if s.scene == scene]
        kinds = _scene_framings(rng, len(members), len(worlds[scene].characters), dialogue and len(members) >= 3)
        for s, kind in zip(members, kinds):
            pad = 12  # frames of camera motion beyond the shot, used by transitions
            t0 = s.start_frame - pad
            cameras.append(_camera(rng, kind, worlds[scene], size, t0, s.end_frame + pad - t0, fps))
    noise_bank = [rng.normal(0, noise, (size[1], size[0], 1)).astype(np.float32) for _ in range(7)]
    n_frames = shots[-1].end_frame

    def view(i: int, t: int) -> np.ndarray:
        return _render_view(worlds[shots[i].scene], cameras[i], t, size).astype(np.float32)

    enc = _Encoder(path, size, fps, codec, crf=crf, preset=preset)
    try:
        cur = 0
        for t in range(n_frames):
            while t >= shots[cur].end_frame:
                cur += 1
            # a gradual transition opening the next shot may begin inside the current one
            j = cur + 1 if cur + 1 < len(shots) and _inside(shots[cur + 1], t) else cur
            sj = shots[j]
            if _inside(sj, t):
                a, b = sj.transition_frames
                if sj.transition_in == "dissolve":
                    alpha = (t - a + 0.5) / (b - a)
                    img = view(j - 1, t) * (1 - alpha) + view(j, t) * alpha
                elif t < sj.start_frame:  # fade out of the previous shot
                    img = view(j - 1, t) * (1 - (t - a + 0.5) / (sj.start_frame - a))
                else:  # fade in
                    img = view(j, t) * ((t - sj.start_frame + 0.5) / (b - sj.start_frame))
            else:
                img = view(cur, t)
            img = np.clip(img + noise_bank[t % len(noise_bank)], 0, 255).astype(np.uint8)
            enc.write(img)
            if log_every and t and t % log_every == 0:
                log.info("make_film %s: %d/%d frames", path, t, n_frames)
    finally:
        enc.close()
    truth = FilmTruth(fps, 1, size[0], size[1], n_frames, shots, seed=seed, codec=codec)
    Path(path).with_suffix(".json").write_text(truth.to_json())
    return truth


def _inside(shot: TruthShot, t: int) -> bool:
    return shot.transition_frames is not None and shot.transition_frames[0] <= t < shot.transition_frames[1]


# --------------------------------------------------------------------------------------- odd inputs


def draw_frame_code(rgb: np.ndarray, value: int) -> None:
    """Draw ``value`` as black/white bars across the top half of ``rgb`` (in place)."""
    h, w = rgb.shape[:2]
    for bit in range(_CODE_BITS):
        x0, x1 = bit * w // _CODE_BITS, (bit + 1) * w // _CODE_BITS
        rgb[: h // 2, x0:x1] = 255 if (value >> bit) & 1 else 0


def read_frame_code(rgb: np.ndarray) -> int:
    """The value drawn by ``draw_frame_code`` (robust to scaling and lossy compression)."""
    h, w = rgb.shape[:2]
    luma = rgb[: h // 2].mean(axis=(0, 2))
    value = 0
    for bit in range(_CODE_BITS):
        x0, x1 = bit * w // _CODE_BITS, (bit + 1) * w // _CODE_BITS
        centre = luma[x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4 or x1]
        if centre.mean() > 127:
            value |= 1 << bit
    return value


def make_simple_video(
    path: str | Path,
    n_frames: int = 48,
    size: tuple[int, int] = (160, 96),
    fps: int = 24,
    codec: str = "libx264",
    rotation: int = 0,
    vfr: bool = False,
    seed: int = 0,
) -> list[float]:
    """A small video whose frames encode their own index (``read_frame_code``); returns frame times (s).

    The top half carries the index code; the bottom half a moving gradient with a red marker in its
    left corner (so orientation can be checked). ``rotation`` sets the display matrix (degrees
    counter-clockwise, as FFmpeg reports it). ``vfr`` spaces frames irregularly (millisecond time base).
    """
    w, h = size
    rng = np.random.default_rng(seed)
    if vfr:
        gaps = rng.choice([20, 40, 70], size=n_frames)  # milliseconds
        pts = np.concatenate([[0], np.cumsum(gaps[:-1])]).astype(int)
        time_base = Fraction(1, 1000)
    else:
        pts, time_base = None, None
    enc = _Encoder(path, size, fps, codec, rotation=rotation, time_base=time_base)
    xs = np.linspace(0, 255, w, dtype=np.float32)
    try:
        for i in range(n_frames):
            rgb = np.zeros((h, w, 3), np.uint8)
            draw_frame_code(rgb, i)
            band = (xs + 7 * i) % 256
            rgb[h // 2 :, :, 1] = band[None, :].astype(np.uint8)
            rgb[h // 2 :, :, 2] = 255 - band[None, :].astype(np.uint8)
            m = max(2, min(w, h) // 6)
            rgb[h - m :, :m] = (255, 0, 0)
            enc.write(rgb, None if pts is None else int(pts[i]))
    finally:
        enc.close()
    if pts is not None:
        return [float(p) / 1000 for p in pts]
    return [i / fps for i in range(n_frames)]


def make_audio_only(path: str | Path, seconds: float = 1.0, rate: int = 44100) -> None:
    """An audio-only file (AAC tone) at ``path``; the container follows the suffix (.mp4, .m4a)."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("aac", rate=rate)
    n = int(seconds * rate)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    frame_size = 1024
    try:
        for k in range(0, n, frame_size):
            chunk = tone[k : k + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
