"""Small synthetic scene shards in the curated-dataset format, for tests and benchmarks of the model side.

Each scene has its own background colour and a moving square ("character") whose colour is the scene's;
shots differ in square size and motion. Captions name the colours. Written with ``webdataset.TarWriter``.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import webdataset as wds
from PIL import Image

from inference.story import encode_mp4

_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 210), "yellow": (220, 200, 40)}


def shot_frames(rng: np.random.Generator, n: int, size: int, background, colour) -> np.ndarray:
    """(n, size, size, 3) uint8 frames: a square moving over a flat background."""
    side = int(rng.integers(size // 6, size // 3))
    pos = rng.uniform(0, size - side, 2)
    vel = rng.uniform(-2, 2, 2)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = background
        y, x = np.clip(pos + i * vel, 0, size - side).astype(int)
        frames[i, y : y + side, x : x + side] = colour
    return frames


def write_synthetic_scenes(
    path: str, n_scenes: int = 3, shots: int = 3, frames: int = 20, size: int = 64, fps: int = 16, seed: int = 0
) -> str:
    """Write one shard of ``n_scenes`` scenes to ``path/shards/scenes-000000.tar``; returns the shard path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(path, "shards"), exist_ok=True)
    shard = os.path.join(path, "shards", "scenes-000000.tar")
    names = list(_COLOURS)
    with wds.TarWriter(shard) as sink:
        for s in range(n_scenes):
            vid = f"vsynth{seed:02d}{s:02d}"
            name = names[s % len(names)]
            background = rng.integers(0, 120, 3)
            sample, records, embeds = {"__key__": f"{vid}-c0000"}, [], []
            for i in range(shots):
                clip = shot_frames(rng, frames, size, background, _COLOURS[name])
                sample[f"{i:03d}.mp4"] = encode_mp4(clip, fps)
                buf = io.BytesIO()
                Image.fromarray(clip[frames // 2]).save(buf, format="JPEG", quality=90)
                sample[f"{i:03d}.jpg"] = buf.getvalue()
                start = i * frames
                records.append(
                    {
                        "shot_id": f"{vid}-s{i:05d}",
                        "index": i,
                        "start_frame": start,
                        "end_frame": start + frames,
                        "start_s": start / fps,
                        "end_s": (start + frames) / fps,
                        "member": f"{i:03d}",
                        "caption": None if i == shots - 1 else f"a {name} square walks in a room",
                    }
                )
                e = rng.normal(size=8) + 3 * np.eye(8)[s % 8]
                embeds.append(e / np.linalg.norm(e))
            sample["json"] = json.dumps({"scene_id": f"{vid}-c0000", "video_id": vid, "shots": records}).encode()
            buf = io.BytesIO()
            np.save(buf, np.asarray(embeds, np.float16))
            sample["clip.npy"] = buf.getvalue()
            sink.write(sample)
    return shard
