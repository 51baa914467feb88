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

import io
import json
import logging
import os
import shutil
import time
from typing import Any

import av
import numpy as np
from PIL import Image
from pydantic import ValidationError

from curation.errors import ConfigError

from .config import SampleConfig, ShotSpec, StoryScript
from .shot_cache import ShotCache
from .temporal_cache import TemporalCache

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 MP4 bytes of uint8 frames (F, H, W, 3)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    """H.264 MP4 of uint8 frames (F, H, W, 3) with PyAV, written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode_mp4(np.ascontiguousarray(frames), fps))
    os.replace(tmp, path)


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# Settings ``sample --continue --set`` may change: they act on the rounds still to come and never make the
# saved rounds, caches and latents inconsistent (resolution, chunk length, seed and text length would).
CONTINUE_SETTABLE = frozenset(
    {
        "checkpoint",
        "encoders",
        "device",
        "num_steps",
        "shift",
        "guidance_scale",
        "negative_prompt",
        "shot_cache_size",
        "embed.device",
        "embed.batch_size",
        "embed.pretrained",
        "embed.clip_config_path",
    }
)
# Settings naming files: stored as absolute paths so a session continues from any working directory.
PATH_SETTINGS = ("checkpoint", "encoders", "embed.pretrained", "embed.clip_config_path")


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def absolute_paths(config: SampleConfig) -> SampleConfig:
    """``config`` with every setting of ``PATH_SETTINGS`` that names an existing local path made absolute
    (hub ids and preset names, which are not local paths, are kept as they are)."""
    data = config.model_dump()
    for key in PATH_SETTINGS:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        if node.get(leaf) and os.path.exists(node[leaf]):
            node[leaf] = os.path.abspath(node[leaf])
    return SampleConfig.model_validate(data)


def check_references(rounds: list[ShotSpec]) -> list[ShotSpec]:
    """Rounds with absolute reference image paths; ``ConfigError`` for a reference that is not an image file."""
    out = []
    for spec in rounds:
        refs = []
        for ref in spec.references:
            path = os.path.abspath(ref.image)
            try:
                with Image.open(path) as im:
                    im.verify()
            except (OSError, SyntaxError) as exc:
                raise ConfigError(f"reference image of round {spec.prompt!r} cannot be read: {path} ({exc})") from None
            refs.append(ref.model_copy(update={"image": path}))
        out.append(spec.model_copy(update={"references": refs}))
    return out


class StorySession:
    """A story being generated in ``out_dir``: its config, its rounds, and the completed rounds on disk.

    ``session.json`` changes only when a ``run`` succeeds: a new session is written once its sampler is built
    (so a model that fails to load leaves nothing), and rounds appended by ``open(more=...)`` or settings
    changed by ``open(overrides=...)`` are written after their rounds are generated. Rounds left on disk by a
    failed extension are removed when the session is opened again."""

    def __init__(self, out_dir: str, config: SampleConfig, rounds: list[ShotSpec]):
        self.out_dir, self.config, self.rounds = os.path.abspath(out_dir), config, rounds
        self._unsaved = False  # rounds or settings changed in memory, written after a successful run

    # ------------------------------------------------------------------------------------------ files

    @classmethod
    def new(cls, out_dir: str, config: SampleConfig, script: StoryScript) -> StorySession:
        """A new session, validated (paths made absolute, references readable) but not yet written; ``run``
        writes it. Refuses a folder holding a session with generated rounds (use ``open`` to continue it);
        one whose first round never finished is replaced."""
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ConfigError(f"{out_dir} is a file, not a folder: choose another --out")
        if os.path.exists(os.path.join(out_dir, SESSION_FILE)):
            if cls.open(out_dir).completed():
                raise ConfigError(f"{out_dir} already holds a story session: continue it with --continue {out_dir}")
            log.info("%s holds a session with no finished round: it is replaced", out_dir)
        session = cls(out_dir, absolute_paths(config), check_references(list(script.shots)))
        session._unsaved = True
        return session

    @classmethod
    def create(cls, out_dir: str, config: SampleConfig, script: StoryScript) -> StorySession:
        """``new`` and written at once."""
        session = cls.new(out_dir, config, script)
        session.save()
        return session

    @classmethod
    def open(cls, out_dir: str, more: StoryScript | None = None, overrides: list[str] | None = None) -> StorySession:
        """An existing session, its script extended by the rounds of ``more`` and its settings changed by
        ``overrides`` (``dotted.key=value``, only keys in ``CONTINUE_SETTABLE``); both are written by the
        next successful ``run``."""
        path = os.path.join(out_dir, SESSION_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{out_dir} holds no story session ({SESSION_FILE} missing)")
        with open(path) as f:
            data = json.load(f)
        session = cls(
            out_dir, SampleConfig.model_validate(data["config"]), [ShotSpec.model_validate(r) for r in data["rounds"]]
        )
        session._drop_unsaved_rounds()
        if overrides:
            session.config = absolute_paths(session._overridden(overrides))
            session._unsaved = True
        if more is not None:
            session.rounds += check_references(list(more.shots))
            session._unsaved = True
        return session

    def _overridden(self, overrides: list[str]) -> SampleConfig:
        from curation.config import apply_overrides, validation_problems

        before = self.config.model_dump(mode="json")
        after = apply_overrides(self.config.model_dump(mode="json"), overrides)
        try:
            config = SampleConfig.model_validate(after)
        except ValidationError as exc:
            raise ConfigError(f"invalid --set: {validation_problems(exc)}") from None
        old, new = _flat(before), _flat(config.model_dump(mode="json"))
        fixed = sorted(k for k in new if new[k] != old.get(k) and k not in CONTINUE_SETTABLE)
        if fixed:
            raise ConfigError(
                f"--continue cannot change {', '.join(fixed)}: the saved rounds were made with them; start a new "
                f"session with --out (settable on --continue: {', '.join(sorted(CONTINUE_SETTABLE))})"
            )
        return config

    def _drop_unsaved_rounds(self) -> None:
        """Remove round folders beyond the session's rounds: left by an extension whose run failed."""
        index = len(self.rounds)
        while os.path.isdir(self.round_dir(index)):
            shutil.rmtree(self.round_dir(index))
            log.info("removed round %d of %s: left by a failed extension", index, self.out_dir)
            index += 1

    def save(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        data = {
            "config": self.config.model_dump(mode="json"),
            "rounds": [r.model_dump(mode="json") for r in self.rounds],
        }
        _write_json(os.path.join(self.out_dir, SESSION_FILE), data)
        self._unsaved = False

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
        from .sampler import chunk_seed

        cfg = self.config
        if self._unsaved and self.record(0) is None:
            self.save()  # a new session: written before its rounds, once the sampler is built
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
        if self._unsaved:  # the appended rounds and changed settings, now that their rounds are generated
            self.save()
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
