"""Encode scene shards into latent shards once: VAE latents of shots and keyframes, UMT5 caption embeddings.

A Ray Data job: shard files are rows, a CPU task expands each into its scene samples, an actor pool
(``num_actors`` actors, one GPU each when CUDA is present) loads the VAE and text encoder once per actor
and encodes whole scenes; the driver writes latent shards (``curation.shard_writer.ShardWriter``, atomic) and
``latents.json``. The output layout is described in ``training/data.py``.

Frames are resampled to ``fps``, cut to ``max_frames``, resized to cover ``height`` x ``width`` and
centre-cropped. A shot's shot-cache keyframe is the middle frame of those encoded frames, at the training
resolution, as the sampler keeps the middle frame of each generated round (not the curation's smaller
analysis JPEG, which would be upsampled). ``clip.npy`` holds the CLIP image embeddings of these keyframes and
``clip_text.npy`` those of the captions (same embedder, ``embed``; only when it has a text tower), so training
can retrieve shot-cache keyframes by text-image similarity as sampling does. A shot without a caption gets
the empty caption.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from curation.errors import ConfigError, ModelUnavailable
from curation.shard_writer import ShardWriter
from curation.video import iter_frames
from training.config import PrecomputeConfig
from training.data import EMPTY_TEXT, LATENT_INDEX

log = logging.getLogger(__name__)


def scene_shards(inputs: list[str]) -> list[str]:
    """Shard files of curated datasets (folders with ``shards/``) or tar files / globs."""
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found += sorted(glob.glob(os.path.join(item, "shards", "*.tar")) or glob.glob(os.path.join(item, "*.tar")))
        else:
            found += sorted(glob.glob(item))
    if not found:
        raise ConfigError(f"no scene shards found in {inputs}")
    return found


def read_scene_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{key, json, mp4: [bytes]}`` of the scene samples of one shard."""
    import webdataset as wds

    rows = []
    for sample in wds.WebDataset(row["url"], shardshuffle=False, empty_check=False):
        n = len(json.loads(sample["json"])["shots"])
        rows.append(
            {
                "key": sample["__key__"],
                "json": sample["json"],
                "mp4": [sample[f"{i:03d}.mp4"] for i in range(n)],
            }
        )
    return rows


def fit_frame(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (cover) and centre-crop an RGB frame to ``height`` x ``width``."""
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    img = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return img[top : top + height, left : left + width]


def clip_frames(mp4: bytes, cfg: PrecomputeConfig) -> np.ndarray:
    """Frames (F, H, W, 3) of a shot clip resampled to ``cfg.fps``, at most ``cfg.max_frames``."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(mp4)
        f.flush()
        frames, next_t = [], 0.0
        for frame in iter_frames(f.name):
            if frame.time_s + 0.5 / cfg.fps < next_t:
                continue  # drop frames between sampling instants
            frames.append(fit_frame(frame.rgb, cfg.height, cfg.width))
            next_t += 1.0 / cfg.fps
            if len(frames) >= cfg.max_frames:
                break
    if not frames:
        raise ValueError("clip has no frames")
    return np.stack(frames)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class SceneEncoder:
    """Ray actor (or plain callable): one scene row in, one latent sample row out."""

    def __init__(self, config: dict[str, Any]):
        from training.encoders import WanEncoders

        self.cfg = PrecomputeConfig.model_validate(config)
        from curation.embed import load_embedder

        self.enc = WanEncoders(self.cfg.checkpoint, self.cfg.device, self.cfg.text_len)
        self.empty_text = self.enc.encode_text([""])[0]
        self.embedder = load_embedder(self.cfg.embed)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        record = json.loads(row["json"])
        captions = [s.get("caption") or "" for s in record["shots"]]
        texts = self.enc.encode_text(captions)
        out: dict[str, Any] = {"key": row["key"], "empty_text": _npy(self.empty_text)}
        latents, keyframes, key_rgbs = [], [], []
        ratio = self.enc.temporal_ratio
        for i, shot in enumerate(record["shots"]):
            frames = clip_frames(row["mp4"][i], self.cfg)
            z = self.enc.encode_frames(frames)
            key_rgb = frames[(1 + (len(frames) - 1) // ratio * ratio) // 2]  # middle of the encoded frames
            shot["latent_frames"] = int(z.shape[1])
            latents.append(_npy(z))
            keyframes.append(_npy(self.enc.encode_frames(key_rgb[None])))
            key_rgbs.append(key_rgb)
        out["clip"] = _npy(self.embedder.embed_images(key_rgbs).astype(np.float32))
        out["clip_text"] = None
        try:
            out["clip_text"] = _npy(self.embedder.embed_texts(captions).astype(np.float32))
        except ModelUnavailable as exc:
            log.warning("no caption embeddings (training retrieves shot-cache keyframes by image): %s", exc)
        record["latent"] = {
            "checkpoint": self.cfg.checkpoint,
            "height": self.cfg.height,
            "width": self.cfg.width,
            "fps": self.cfg.fps,
            "keyframe": "middle encoded frame",
            "embedder": self.embedder.model_id,
        }
        out.update(
            json=json.dumps(record).encode(), latents=latents, keyframes=keyframes, texts=[_npy(t) for t in texts]
        )
        return out


def latent_sample(row: dict[str, Any]) -> dict[str, Any]:
    """The WebDataset sample of an encoded scene row."""
    sample: dict[str, Any] = {"__key__": row["key"], "json": row["json"], "clip.npy": row["clip"]}
    if row.get("clip_text") is not None:
        sample["clip_text.npy"] = row["clip_text"]
    for i, (z, k, t) in enumerate(zip(row["latents"], row["keyframes"], row["texts"])):
        sample[f"{i:03d}.latent.npy"] = z
        sample[f"{i:03d}.keyframe.npy"] = k
        sample[f"{i:03d}.text.npy"] = t
    return sample


def encoded_rows(shards: list[str], config: PrecomputeConfig, engine: str = "ray") -> Iterator[dict[str, Any]]:
    """Encoded scene rows: a Ray Data stream with an encoder actor pool, or in this process (``local``)."""
    if engine == "local":
        encoder = SceneEncoder(config.model_dump())
        for url in shards:
            for row in read_scene_rows({"url": url}):
                yield encoder(row)
        return
    import ray
    import torch

    from .ray_session import start_ray

    start_ray()
    gpus = 1 if (config.device != "cpu" and torch.cuda.is_available()) else 0
    ds = ray.data.from_items([{"url": u} for u in shards]).flat_map(read_scene_rows)
    ds = ds.map(SceneEncoder, fn_constructor_args=(config.model_dump(),), concurrency=config.num_actors, num_gpus=gpus)
    yield from ds.iter_rows()


def precompute(inputs: list[str], out_dir: str, config: PrecomputeConfig, engine: str = "ray") -> dict[str, Any]:
    """Encode the scene shards of ``inputs`` into a latent dataset in ``out_dir``; returns its index.

    ``engine='ray'`` runs the Ray Data job (``ray.init()`` when needed); ``'local'`` encodes in this process."""
    shards = scene_shards(inputs)
    os.makedirs(out_dir, exist_ok=True)
    keys: dict[str, list[str]] = {}
    writer = ShardWriter(out_dir, prefix="latents", max_bytes=config.max_shard_bytes)
    committed = []
    for row in encoded_rows(shards, config, engine):
        if not os.path.exists(os.path.join(out_dir, EMPTY_TEXT)):
            with open(os.path.join(out_dir, EMPTY_TEXT), "wb") as f:
                f.write(row["empty_text"])
        keys.setdefault(writer.write(latent_sample(row)), []).append(row["key"])
        info = writer.roll_if_full()
        if info is not None:
            committed.append(info)
        log.info("encoded scene %s (%d so far)", row["key"], sum(map(len, keys.values())))
    info = writer.close()
    if info is not None:
        committed.append(info)
    index = {
        "config": config.model_dump(),
        "inputs": shards,
        "shards": [{**vars(c), "keys": keys[os.path.basename(c.url)]} for c in committed],
    }
    with open(os.path.join(out_dir, LATENT_INDEX), "w") as f:
        json.dump(index, f, indent=1)
    n = sum(s["nsamples"] for s in index["shards"])
    log.info("wrote %d scenes in %d latent shards to %s", n, len(committed), out_dir)
    return index
