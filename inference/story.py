"""Multi-round story sessions: a script of shots run round by round, every round saved so a session resumes.

Session folder::

    session.json            sampling config + the rounds of the script (grows when a session is extended)
    rounds/NNN/video.mp4    the round's frames: its shot's latents decoded as one sequence (Wan's VAE is causal in
                            time, ratio r = 4), so a shot of L latents has 1 + r*(L-1) frames (N chunks of F
                            latents: 4NF-3) and a round adds r frames per latent (the shot's first round: r*L-3)
              keyframe.png  the round's middle frame (enters the shot cache as a keyframe of its shot)
              latents.npy   the round's chunk latents (chunks, C, F, h, w) float32
              cache.npz     shot cache and temporal cache *after* the round
              round.json    round record, written last: a round is complete when it exists
    shots/NNN.mp4           each shot (its rounds concatenated); story.mp4: all shots in order

A round's noise depends only on (seed, round, chunk) and the caches are saved exactly, so a resumed
session produces the same frames as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from curation.errors import ConfigError

from .config import SampleConfig, ShotSpec, StoryScript
from .sampler import chunk_seed
from .shot_cache import ShotCache
from .temporal_cache import TemporalCache

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    """H.264 MP4 of uint8 frames (F, H, W, 3) with PyAV, written atomically."""
    from training.synthetic import encode_mp4

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode_mp4(np.ascontiguousarray(frames), fps))
    os.replace(tmp, path)


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


class StorySession:
    """A story being generated in ``out_dir``: its config, its rounds, and the completed rounds on disk."""

    def __init__(self, out_dir: str, config: SampleConfig, rounds: list[ShotSpec]):
        self.out_dir, self.config, self.rounds = out_dir, config, rounds

    # ------------------------------------------------------------------------------------------ files

    @classmethod
    def create(cls, out_dir: str, config: SampleConfig, script: StoryScript) -> StorySession:
        """A new session; refuses a folder that already holds one (use ``open`` to continue it)."""
        if os.path.exists(os.path.join(out_dir, SESSION_FILE)):
            raise ConfigError(f"{out_dir} already holds a story session: continue it with --continue {out_dir}")
        session = cls(out_dir, config, list(script.shots))
        session.save()
        return session

    @classmethod
    def open(cls, out_dir: str, more: StoryScript | None = None) -> StorySession:
        """An existing session, its script extended by the rounds of ``more``."""
        path = os.path.join(out_dir, SESSION_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{out_dir} holds no story session ({SESSION_FILE} missing)")
        with open(path) as f:
            data = json.load(f)
        session = cls(
            out_dir, SampleConfig.model_validate(data["config"]), [ShotSpec.model_validate(r) for r in data["rounds"]]
        )
        if more is not None:
            session.rounds += more.shots
            session.save()
        return session

    def save(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        data = {
            "config": self.config.model_dump(mode="json"),
            "rounds": [r.model_dump(mode="json") for r in self.rounds],
        }
        _write_json(os.path.join(self.out_dir, SESSION_FILE), data)

    def round_dir(self, index: int) -> str:
        return os.path.join(self.out_dir, "rounds", f"{index:03d}")

    def record(self, index: int) -> dict | None:
        """The record of a completed round, else None."""
        path = os.path.join(self.round_dir(index), "round.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def completed(self) -> int:
        """Number of leading rounds that are complete on disk."""
        n = 0
        while n < len(self.rounds) and self.record(n) is not None:
            n += 1
        return n

    def _load_state(self, done: int, capacity: int, schedule) -> tuple[ShotCache, TemporalCache, int]:
        temporal = TemporalCache(capacity, schedule)
        if done == 0:
            return ShotCache(), temporal, -1
        with np.load(os.path.join(self.round_dir(done - 1), "cache.npz")) as state:
            arrays = dict(state)
        if arrays["temporal"].size:
            temporal.frames = arrays["temporal"]
        shot_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("shot_")}
        return ShotCache.from_state(shot_arrays), temporal, int(self.record(done - 1)["shot"])

    # ------------------------------------------------------------------------------------------ running

    def run(self, sampler, max_rounds: int | None = None) -> list[dict]:
        """Generate the pending rounds (at most ``max_rounds``), then write the shot and story videos.
        Returns the records of the rounds generated now."""
        cfg = self.config
        done = self.completed()
        shot_cache, temporal, shot = self._load_state(
            done, sampler.model.schedule_capacity, sampler.model.config.temporal_schedule
        )
        stop = len(self.rounds) if max_rounds is None else min(len(self.rounds), done + max_rounds)
        if done:
            log.info("resuming %s after round %d of %d", self.out_dir, done, len(self.rounds))
        records = []
        for r in range(done, stop):
            spec = self.rounds[r]
            t0 = time.perf_counter()
            if not spec.extend:
                shot += 1
                temporal.clear()
            pinned = [shot_cache.add(sampler.reference_entry(ref)) for ref in spec.references]
            retrieved = shot_cache.retrieve(
                sampler.clip_text(spec.prompt) if len(shot_cache) else None,
                cfg.shot_cache_size,
                exclude_shot=shot,
                pinned=pinned,
            )
            shot_latents = shot_cache.latents(retrieved)
            chunks, modes = [], []
            for c in range(spec.chunks):
                latents, mode = sampler.generate_chunk(spec.prompt, temporal, shot_latents, chunk_seed(cfg.seed, r, c))
                temporal.push(latents)
                chunks.append(latents)
                modes.append(mode)
                log.info("round %d/%d chunk %d/%d (%s) done", r + 1, len(self.rounds), c + 1, spec.chunks, mode)
            video = self._decode_round(r, np.stack(chunks), sampler)
            key = video[len(video) // 2]
            shot_cache.add(sampler.keyframe_entry(key, shot))
            records.append(
                self._save_round(
                    r,
                    shot,
                    spec,
                    np.stack(chunks),
                    video,
                    key,
                    shot_cache,
                    temporal,
                    modes,
                    retrieved,
                    time.perf_counter() - t0,
                )
            )
        if self.completed() == len(self.rounds):
            self.assemble(sampler)
        return records

    def _save_round(self, r, shot, spec, latents, video, key, shot_cache, temporal, modes, retrieved, seconds) -> dict:
        d = self.round_dir(r)
        os.makedirs(d, exist_ok=True)
        write_mp4(os.path.join(d, "video.mp4"), video, self.config.fps)
        Image.fromarray(key).save(os.path.join(d, "keyframe.png"))
        np.save(os.path.join(d, "latents.npy"), latents)
        temporal_frames = temporal.frames if temporal.frames is not None else np.zeros((0,), np.float32)
        state = {f"shot_{k}": v for k, v in shot_cache.state().items()}
        with open(os.path.join(d, "cache.npz.tmp"), "wb") as f:
            np.savez(f, temporal=temporal_frames, **state)
        os.replace(os.path.join(d, "cache.npz.tmp"), os.path.join(d, "cache.npz"))
        record = {
            "round": r,
            "shot": shot,
            "prompt": spec.prompt,
            "extend": spec.extend,
            "modes": modes,
            "frames": int(len(video)),
            "shot_cache": [
                {
                    "index": i,
                    "shot": shot_cache.entries[i].shot,
                    "source": shot_cache.entries[i].source,
                    "label": shot_cache.entries[i].label,
                }
                for i in retrieved
            ],
            "seconds": round(seconds, 3),
        }
        _write_json(os.path.join(d, "round.json"), record)
        return record

    def _latents(self, rounds: range) -> np.ndarray | None:
        """Latents (C, L, h, w) of completed ``rounds`` joined in time (their chunks in order); None if empty."""
        parts = [np.concatenate(list(np.load(os.path.join(self.round_dir(q), "latents.npy"))), 1) for q in rounds]
        return np.concatenate(parts, 1) if parts else None

    def _decode_round(self, r: int, chunks: np.ndarray, sampler) -> np.ndarray:
        """Frames of round ``r`` from its chunk latents (N, C, F, h, w): the latents of its shot so far are
        decoded as one sequence and the frames of the shot's earlier rounds dropped, so rounds and chunks join
        without a restart of the VAE's causal cache (no lost frames, no jump) at their boundaries."""
        first = r
        while first > 0 and self.rounds[first].extend:
            first -= 1
        latents = np.concatenate(list(chunks), 1)
        before = self._latents(range(first, r))
        if before is None:
            return sampler.decode(latents)
        return sampler.decode(np.concatenate([before, latents], 1), skip_latents=before.shape[1])

    def shots(self) -> list[list[int]]:
        """Round indices of each shot of the completed rounds."""
        out: list[list[int]] = []
        for r in range(self.completed()):
            if self.record(r)["extend"]:
                out[-1].append(r)
            else:
                out.append([r])
        return out

    def assemble(self, sampler) -> None:
        """Write ``shots/NNN.mp4`` (each shot's latents decoded as one sequence) and ``story.mp4``."""
        os.makedirs(os.path.join(self.out_dir, "shots"), exist_ok=True)
        videos = []
        for s, rounds in enumerate(self.shots()):
            video = sampler.decode(self._latents(range(rounds[0], rounds[-1] + 1)))
            write_mp4(os.path.join(self.out_dir, "shots", f"{s:03d}.mp4"), video, self.config.fps)
            videos.append(video)
        write_mp4(os.path.join(self.out_dir, "story.mp4"), np.concatenate(videos), self.config.fps)
        log.info("wrote %d shots and story.mp4 to %s", len(videos), self.out_dir)
