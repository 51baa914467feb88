"""The invariant of every curated output: each clip in the shards holds exactly the frames its record names.

``check_clips(out)`` opens every shard sample and, for each shot clip member, checks that it has a video
stream, exactly ``clip_end_frame - clip_start_frame`` frames (a range inside the shot's ``[start_frame,
end_frame)``; or the ``max_frames`` cap), and that every frame
matches the source's frame at the same index (PSNR >= ``min_psnr``, and first/last frames closer to their
own source frame than to its neighbours). The source is decoded here independently of ``curation``:
plain PyAV, the stream ``videos.parquet`` names, frames counted from 0 in decode order, scaled to the
clip's size and rotated as displayed.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq

NEIGHBOUR_MARGIN_DB = 0.5


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _decode_clip(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video, f"a clip of {len(data)} bytes has no video stream"
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def source_frames(uri: str, stream_index: int, wanted: set[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Frames ``wanted`` (indices from 0 in decode order) of stream ``stream_index``, RGB at ``size`` (w, h)."""
    out: dict[int, np.ndarray] = {}
    last = max(wanted)
    with av.open(uri) as c:
        stream = c.streams[stream_index]
        for i, frame in enumerate(c.decode(stream)):
            if i in wanted:
                k = int(round((frame.rotation or 0) / 90)) % 4
                w, h = size if k % 2 == 0 else size[::-1]
                rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                out[i] = np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb
            if i > last:
                break
    return out


def _clip(shot: dict) -> tuple[int, int]:
    """The frames ``[a, b)`` a shot's clip holds, as its record says (``clip_start_frame``, ``clip_end_frame``)."""
    return shot["clip_start_frame"], shot["clip_end_frame"]


def check_clips(out: Path, min_psnr: float = 20.0, max_frames: int | None = None) -> int:
    """Assert the invariant over every sample of the curated folder ``out``; returns the clips checked."""
    videos = {
        v["video_id"]: v for v in pq.read_table(out / "manifests" / "videos.parquet").to_pylist() if v["status"] == "ok"
    }
    index = json.loads((out / "index.json").read_text())["shards"]
    checked = 0
    for shard in index:
        with tarfile.open(out / shard["url"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in [n for n in members if n.endswith(".json")]:
            key = name[: -len(".json")]
            sample = json.loads(members[name])
            video = videos[sample["video_id"]]
            clips = sorted(n for n in members if n.startswith(key + ".") and n.endswith(".mp4"))
            assert len(clips) == len(sample["shots"]) >= 1, (key, clips)
            decoded = {s["member"]: _decode_clip(members[f"{key}.{s['member']}.mp4"]) for s in sample["shots"]}
            size = next(iter(decoded.values()))[0].shape[1::-1]
            wanted = {i for s in sample["shots"] for i in range(max(0, _clip(s)[0] - 1), _clip(s)[1] + 1)}
            source = source_frames(video["uri"], video["stream_index"], wanted, size)
            for shot in sample["shots"]:
                frames = decoded[shot["member"]]
                first, end = _clip(shot)
                assert shot["start_frame"] <= first < end <= shot["end_frame"], shot
                n = end - first
                want = n if max_frames is None else min(n, max_frames)
                assert len(frames) == want, f"{key} shot {shot['shot_id']}: {len(frames)} frames, its shot has {want}"
                for k, ours in enumerate(frames):
                    i = first + k
                    quality = psnr(ours, source[i])
                    assert quality >= min_psnr, f"{shot['shot_id']} frame {k} vs source frame {i}: {quality:.1f} dB"
                    if k in (0, len(frames) - 1):
                        near = max((psnr(ours, source[j]) for j in (i - 1, i + 1) if j in source), default=-math.inf)
                        assert near <= quality + NEIGHBOUR_MARGIN_DB, (shot["shot_id"], k, quality, near)
                checked += 1
    return checked
