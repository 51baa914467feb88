"""Training samples from latent shards: target chunk, temporal cache, shot cache, caption, timesteps.

A latent dataset (written by ``pipelines/precompute.py``) is a folder with ``latents.json`` (shard list
with the scene keys of each shard), ``empty_text.npy`` and ``shards/latents-NNNNNN.tar``. Each scene sample
holds ``json`` (the scene record; each shot has ``latent_frames``), ``NNN.latent.npy`` (shot latents,
float16 (C, F, H, W), normalised), ``NNN.keyframe.npy`` ((C, 1, H, W)), ``NNN.text.npy`` ((tokens, D)) and
``clip.npy`` (keyframe CLIP image embeddings) and, when the embedder has a text tower, ``clip_text.npy``
(caption CLIP text embeddings, one row per shot). Members are read by tar offset, so scenes are random access.

Sampling is a pure function of ``(seed, rank, sample index)`` plus the stream position, which makes resume
exact: each rank walks its share of a seeded per-epoch permutation of scenes; a scene that cannot make the
requested cache mode (too few shots or frames) is skipped and counted.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field

import fsspec
import numpy as np

from curation.errors import ConfigError

from .config import CACHE_MODES, CurriculumConfig, DataConfig
from .flow import sample_cache_timesteps, sample_target_timestep

log = logging.getLogger(__name__)

LATENT_INDEX = "latents.json"
EMPTY_TEXT = "empty_text.npy"


class LatentDataset:
    """Random access to the scenes of a latent dataset folder."""

    def __init__(self, root: str):
        self.root = root
        path = os.path.join(root, LATENT_INDEX)
        if not os.path.isfile(path):
            raise ConfigError(f"{root} is not a latent dataset (no {LATENT_INDEX}); run `filmweaver precompute`")
        with open(path) as f:
            self.index = json.load(f)
        self.scenes: list[tuple[str, str]] = [
            (os.path.join(root, shard["url"]), key) for shard in self.index["shards"] for key in shard["keys"]
        ]
        if not self.scenes:
            raise ConfigError(f"latent dataset {root} holds no scenes")
        self.empty_text = np.load(os.path.join(root, EMPTY_TEXT))
        self._offsets: dict[str, dict[str, tuple[int, int]]] = {}
        self._records: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def _members(self, url: str) -> dict[str, tuple[int, int]]:
        if url not in self._offsets:
            with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                self._offsets[url] = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
        return self._offsets[url]

    def member(self, i: int, ext: str) -> bytes:
        """Raw bytes of member ``{key}.{ext}`` of scene ``i``."""
        url, key = self.scenes[i]
        offset, size = self._members(url)[f"{key}.{ext}"]
        with fsspec.open(url, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def array(self, i: int, ext: str) -> np.ndarray:
        return np.load(io.BytesIO(self.member(i, ext)), allow_pickle=False)

    def record(self, i: int) -> dict:
        """The scene record (``json`` member) of scene ``i``, cached."""
        if i not in self._records:
            self._records[i] = json.loads(self.member(i, "json"))
        return self._records[i]


@dataclass
class TrainingSample:
    """One training example; caches may be empty (0 frames / 0 entries)."""

    mode: str
    scene: str
    shot: int
    target: np.ndarray  # (C, F, H, W) clean latents
    temporal: np.ndarray  # (C, Fh, H, W) clean history frames, oldest first
    shot_cache: np.ndarray  # (K, C, 1, H, W) clean keyframe latents
    negatives: np.ndarray  # (K,) bool: entry comes from another scene
    text: np.ndarray  # (text_len, D) zero-padded caption embedding
    timestep: float
    temporal_timestep: float
    shot_timesteps: np.ndarray  # (K,)


def mode_for(step: int, curriculum: CurriculumConfig, rng: np.random.Generator) -> str:
    """Cache mode of a sample at optimizer ``step``: 'temporal' in stage 1, the configured mix in stage 2."""
    if step < curriculum.stage2_step:
        return "temporal"
    modes = [m for m in CACHE_MODES if curriculum.stage2_mix.get(m, 0) > 0]
    weights = np.array([curriculum.stage2_mix[m] for m in modes], dtype=np.float64)
    return modes[int(rng.choice(len(modes), p=weights / weights.sum()))]


def pad_text(embedding: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad (or cut) a (tokens, D) embedding to (length, D), as Wan's pipeline does."""
    out = np.zeros((length, embedding.shape[1]), dtype=embedding.dtype)
    n = min(length, len(embedding))
    out[:n] = embedding[:n]
    return out


@dataclass
class StreamState:
    """Position of a rank in the sample stream (saved in checkpoints)."""

    epoch: int = 0
    cursor: int = 0
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class SampleStream:
    """Builds training samples for one rank, deterministically from ``seed`` and its state."""

    def __init__(
        self,
        dataset: LatentDataset,
        data: DataConfig,
        curriculum: CurriculumConfig,
        history_frames: int,
        shot_t_range: tuple[float, float],
        temporal_t_range: tuple[float, float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        scenes: list[int] | None = None,
    ):
        self.ds, self.data, self.curriculum = dataset, data, curriculum
        # the scenes this stream draws targets and negatives from (dataset indices); all by default
        self.scenes = list(range(len(dataset))) if scenes is None else sorted(scenes)
        self.history_frames = history_frames
        self.shot_t_range, self.temporal_t_range = tuple(shot_t_range), tuple(temporal_t_range)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.state = StreamState()
        self._order: tuple[int, list[int]] | None = None
        self._warned_text = False

    def _epoch_order(self) -> list[int]:
        epoch = self.state.epoch
        if self._order is None or self._order[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.scenes))
            self._order = (epoch, [self.scenes[int(i)] for i in perm[self.rank :: self.world_size]])
        return self._order[1]

    def _next_scene(self) -> int:
        order = self._epoch_order()
        if not order:
            raise ConfigError(f"rank {self.rank} of {self.world_size} has no scenes ({len(self.scenes)} to train on)")
        if self.state.cursor >= len(order):
            self.state.epoch += 1
            self.state.cursor = 0
            order = self._epoch_order()
        self.state.cursor += 1
        return order[self.state.cursor - 1]

    def next(self, step: int) -> TrainingSample:
        """The next sample, its cache mode chosen by the curriculum at optimizer ``step``."""
        rng = np.random.default_rng([self.seed, self.rank, self.state.samples, 11])
        mode = mode_for(step, self.curriculum, rng)
        for _ in range(max(2 * len(self.scenes), 8)):
            sample = self.build(self._next_scene(), mode, rng)
            if sample is not None:
                self.state.samples += 1
                return sample
            self.state.skipped[mode] = self.state.skipped.get(mode, 0) + 1
        raise ConfigError(
            f"no scene can make a '{mode}' sample with chunk_frames={self.data.chunk_frames} "
            "(shots too short or scenes with a single shot); lower data.chunk_frames or change the mix"
        )

    def _query(self, i: int, k: int, clip: np.ndarray) -> np.ndarray:
        """CLIP query of shot ``k`` of scene ``i`` for shot-cache retrieval: its caption's text embedding
        (``shot_cache_retrieval='text'``, as the sampler) or its keyframe's image embedding."""
        if self.data.shot_cache_retrieval == "text":
            try:
                return self.ds.array(i, "clip_text.npy")[k].astype(np.float32)
            except KeyError:
                if not self._warned_text:
                    log.warning(
                        "latents in %s have no caption embeddings (clip_text.npy; precompute with an embedder "
                        "that has a text tower): shot-cache keyframes are retrieved by image similarity",
                        self.ds.root,
                    )
                    self._warned_text = True
        return clip[k]

    def build(self, i: int, mode: str, rng: np.random.Generator) -> TrainingSample | None:
        """A sample of ``mode`` from scene ``i``, or None when the scene cannot make one."""
        d = self.data
        rec = self.ds.record(i)
        shots = rec["shots"]
        need_temporal, need_shot = mode in ("temporal", "both"), mode in ("shot", "both")
        if need_shot and len(shots) < 2:
            return None
        min_frames = d.chunk_frames + (1 if need_temporal else 0)
        eligible = [j for j, s in enumerate(shots) if s["latent_frames"] >= min_frames]
        if not eligible:
            return None
        k = eligible[int(rng.integers(len(eligible)))]
        latents = self.ds.array(i, f"{k:03d}.latent.npy")
        start = int(rng.integers(1, latents.shape[1] - d.chunk_frames + 1)) if need_temporal else 0
        target = latents[:, start : start + d.chunk_frames]
        temporal = latents[:, max(0, start - self.history_frames) : start]

        refs, negatives = [], []
        if need_shot:
            clip = self.ds.array(i, "clip.npy").astype(np.float32)
            others = [j for j in range(len(shots)) if j != k]
            sims = clip[others] @ self._query(i, k, clip)
            pool, own = self.scenes, bisect.bisect_left(self.scenes, i)  # negatives: this stream's other scenes
            inside = own < len(pool) and pool[own] == i
            for j in [others[o] for o in np.argsort(-sims, kind="stable")[: d.shot_cache_size]]:
                if len(pool) > 1 and rng.random() < d.negative_rate:
                    other = int(rng.integers(len(pool) - inside))
                    other = pool[other + (inside and other >= own)]
                    n_other = len(self.ds.record(other)["shots"])
                    refs.append(self.ds.array(other, f"{int(rng.integers(n_other)):03d}.keyframe.npy"))
                    negatives.append(True)
                else:
                    refs.append(self.ds.array(i, f"{j:03d}.keyframe.npy"))
                    negatives.append(False)
        shot_cache = np.stack(refs) if refs else np.zeros((0, target.shape[0], 1, *target.shape[2:]), target.dtype)

        text = self.ds.empty_text if rng.random() < d.text_dropout else self.ds.array(i, f"{k:03d}.text.npy")
        return TrainingSample(
            mode=mode,
            scene=self.ds.scenes[i][1],
            shot=k,
            target=target,
            temporal=temporal if need_temporal else temporal[:, :0],
            shot_cache=shot_cache,
            negatives=np.array(negatives, dtype=bool),
            text=pad_text(text, d.text_len),
            timestep=sample_target_timestep(rng, d.timestep_shift),
            temporal_timestep=float(sample_cache_timesteps(rng, self.temporal_t_range, 1)[0]),
            shot_timesteps=sample_cache_timesteps(rng, self.shot_t_range, len(refs)),
        )
