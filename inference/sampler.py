"""The cache-guided sampler: one chunk of latents from a prompt, a temporal cache and a shot cache.

Flow-matching Euler (diffusers ``FlowMatchEulerDiscreteScheduler`` with shifted sigmas) with classifier-free
guidance on text. The cache mode follows from the cache state: no cache ('none', the first chunk of a
story), temporal only ('temporal', extending a shot), shot only ('shot', the first chunk of a new shot) or
both ('both', extending a new shot). Cache latents are noised once per chunk at levels drawn exactly as in
training (``training.flow.sample_cache_timesteps`` over the model config's ``shot_cache_t_range`` and
``temporal_cache_t_range``) and stay fixed over the solver steps. All randomness of a chunk comes from
its ``seed``, drawn on the CPU, so a chunk is reproducible across processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from curation.errors import ConfigError, ModelUnavailable
from training.config import CACHE_MODES
from training.data import pad_text
from training.encoders import WanEncoders, resolve_device
from training.flow import add_noise, sample_cache_timesteps
from training.model import CacheGuidedWan, build_model

from .config import Reference, SampleConfig
from .shot_cache import CacheEntry
from .temporal_cache import TemporalCache

log = logging.getLogger(__name__)


def cache_mode(shot_entries: int, temporal_frames: int) -> str:
    """'none' | 'temporal' | 'shot' | 'both' from the sizes of the two caches."""
    return CACHE_MODES[int(temporal_frames > 0) + 2 * int(shot_entries > 0)]


def chunk_seed(seed: int, round_index: int, chunk: int) -> int:
    """Seed of one chunk: a function of the story seed and the chunk's place only."""
    return int(np.random.SeedSequence([seed, round_index, chunk]).generate_state(1)[0])


@dataclass
class ChunkConditioning:
    """Noisy caches of one chunk (batch of one) and their timesteps (0..1000)."""

    mode: str
    temporal: torch.Tensor | None  # (1, C, Fh, h, w)
    temporal_timestep: torch.Tensor | None  # (1,)
    shot: torch.Tensor | None  # (1, K, C, 1, h, w)
    shot_timestep: torch.Tensor | None  # (1, K)

    def model_kwargs(self, batch: int) -> dict[str, torch.Tensor | None]:
        """Cache arguments of ``CacheGuidedWan.forward``/``pack`` for a batch of ``batch`` copies."""

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.expand(batch, *x.shape[1:])

        return {
            "temporal_cache": rep(self.temporal),
            "temporal_timestep": rep(self.temporal_timestep),
            "shot_cache": rep(self.shot),
            "shot_timestep": rep(self.shot_timestep),
        }


def resolve_encoders(config: SampleConfig) -> str:
    """Folder (or hub id) of the VAE / text encoder: ``config.encoders``, else beside the checkpoint."""
    if config.encoders:
        return config.encoders
    for candidate in (config.checkpoint, os.path.dirname(os.path.abspath(config.checkpoint))):
        if os.path.isdir(os.path.join(candidate, "vae")):
            return candidate
    if not os.path.exists(config.checkpoint) and "/" in config.checkpoint:
        return config.checkpoint  # a hub id of a full diffusers Wan checkpoint
    raise ConfigError(
        f"no VAE/text encoder found for checkpoint {config.checkpoint!r}: set encoders=PATH (--set encoders=...) "
        "to a diffusers Wan checkpoint with vae/, text_encoder/ and tokenizer/"
    )


class CacheGuidedSampler:
    """Composes the model, VAE, text encoder, CLIP embedder and scheduler; generates and decodes chunks."""

    def __init__(
        self,
        config: SampleConfig,
        model: CacheGuidedWan | None = None,
        encoders: WanEncoders | None = None,
        embedder=None,
    ):
        from diffusers import FlowMatchEulerDiscreteScheduler

        from curation.embed import load_embedder

        self.config = config
        self.device = resolve_device(config.device)
        if model is None:
            if not config.checkpoint:
                raise ConfigError("no model checkpoint given: pass --checkpoint")
            model = build_model(config.checkpoint)
        self.model = model.to(self.device).eval()
        self.encoders = encoders or WanEncoders(resolve_encoders(config), str(self.device), config.text_len)
        self.embedder = embedder or load_embedder(config.embed)
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.shift)
        ratio = self.encoders.spatial_ratio
        patch = self.model.config.patch_size
        if config.height % (ratio * patch[1]) or config.width % (ratio * patch[2]):
            raise ConfigError(
                f"height/width {config.height}x{config.width} must be multiples of {ratio * patch[1]} (VAE x patch)"
            )
        self.latent_shape = (
            self.model.config.in_channels,
            config.chunk_frames,
            config.height // ratio,
            config.width // ratio,
        )
        self._text: dict[str, torch.Tensor] = {}
        self._has_text_tower = True
        self._bf16 = self.device.type == "cuda"

    def new_temporal_cache(self) -> TemporalCache:
        return TemporalCache(self.model.schedule_capacity, self.model.config.temporal_schedule)

    # ------------------------------------------------------------------------------------------ conditioning

    def text_states(self, prompt: str) -> torch.Tensor:
        """UMT5 embedding (1, text_len, D) of a prompt, zero-padded as in training (memoised)."""
        if prompt not in self._text:
            emb = self.encoders.encode_text([prompt])[0]
            self._text[prompt] = torch.from_numpy(pad_text(emb, self.config.text_len).astype(np.float32))[None]
        return self._text[prompt].to(self.device)

    def clip_text(self, prompt: str) -> np.ndarray | None:
        """CLIP text embedding of a prompt, or None when the embedder has no text tower (logged once)."""
        if not self._has_text_tower:
            return None
        try:
            return self.embedder.embed_texts([prompt])[0]
        except ModelUnavailable as exc:
            log.warning("shot-cache retrieval falls back to the most recent keyframes: %s", exc)
            self._has_text_tower = False
            return None

    def condition(self, temporal: TemporalCache, shot_latents: np.ndarray, seed: int) -> ChunkConditioning:
        """Noisy caches of a chunk; noise levels drawn as the trainer draws them (same function and ranges)."""
        rng = np.random.default_rng([seed, 1])
        gen = torch.Generator().manual_seed(seed + 1)
        cfg = self.model.config
        k, fh = (len(shot_latents) if shot_latents.ndim > 1 else 0), len(temporal)
        out = ChunkConditioning(cache_mode(k, fh), None, None, None, None)
        if fh:
            x0 = torch.from_numpy(temporal.frames)[None]
            t = torch.tensor(sample_cache_timesteps(rng, cfg.temporal_cache_t_range, 1), dtype=torch.float32)
            out.temporal = add_noise(x0, torch.randn(x0.shape, generator=gen), t).to(self.device)
            out.temporal_timestep = t.to(self.device)
        if k:
            x0 = torch.from_numpy(shot_latents)[None]
            t = torch.tensor(sample_cache_timesteps(rng, cfg.shot_cache_t_range, k), dtype=torch.float32)[None]
            out.shot = add_noise(x0, torch.randn(x0.shape, generator=gen), t).to(self.device)
            out.shot_timestep = t.to(self.device)
        return out

    # ------------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate_chunk(
        self, prompt: str, temporal: TemporalCache, shot_latents: np.ndarray, seed: int
    ) -> tuple[np.ndarray, str]:
        """Denoise one chunk; returns its clean latents (C, F, h, w) float32 and the cache mode used."""
        cfg = self.config
        cond = self.condition(temporal, shot_latents, seed)
        x = torch.randn((1, *self.latent_shape), generator=torch.Generator().manual_seed(seed)).to(self.device)
        guided = cfg.guidance_scale != 1.0
        text = self.text_states(prompt)
        if guided:
            text = torch.cat([text, self.text_states(cfg.negative_prompt)])
        batch = text.shape[0]
        kwargs = cond.model_kwargs(batch)
        self.scheduler.set_timesteps(cfg.num_steps, device=self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self._bf16 else contextlib.nullcontext()
        for t in self.scheduler.timesteps:
            with autocast:
                v = self.model(x.expand(batch, *x.shape[1:]), t.expand(batch), text, **kwargs).float()
            if guided:
                v = v[1:] + cfg.guidance_scale * (v[:1] - v[1:])
            x = self.scheduler.step(v, t, x).prev_sample
        return x[0].float().cpu().numpy(), cond.mode

    def decode(self, latents: np.ndarray, skip_latents: int = 0) -> np.ndarray:
        """uint8 frames of latents (C, L, h, w) decoded as one sequence: 1 + r*(L-1) frames (H, W, 3), r the VAE's
        temporal ratio (Wan: 4). Wan's VAE is causal in time and decodes its first latent as a single image, so
        a shot's chunks must be decoded together (chunk by chunk they lose r-1 frames and jump at each join).
        ``skip_latents=k`` drops the frames of the first k latents (1 + r*(k-1)), keeping r per later latent."""
        frames = self.encoders.decode_latents(torch.from_numpy(latents)[None])[0].numpy()
        skip = 0 if skip_latents <= 0 else 1 + self.encoders.temporal_ratio * (skip_latents - 1)
        return frames[skip:]

    # ------------------------------------------------------------------------------------------ shot cache

    def keyframe_entry(
        self, frame: np.ndarray, shot: int, source: str = "keyframe", label: str | None = None
    ) -> CacheEntry:
        """A shot-cache entry of an RGB frame at the output size: VAE latent of the frame alone + CLIP embedding."""
        latent = self.encoders.encode_frames(frame[None])
        return CacheEntry(latent, self.embedder.embed_images([frame])[0], shot, source, label)

    def reference_entry(self, ref: Reference) -> CacheEntry:
        """A user reference image as a shot-cache entry (resized to cover the frame, centre-cropped)."""
        from pipelines.precompute import fit_frame

        try:
            rgb = np.asarray(Image.open(ref.image).convert("RGB"))
        except OSError as exc:
            raise ConfigError(f"cannot read reference image {ref.image}: {exc}") from None
        frame = fit_frame(rgb, self.config.height, self.config.width)
        return self.keyframe_entry(frame, shot=-1, source="reference", label=ref.label)
