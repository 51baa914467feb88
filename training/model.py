"""The cache-guided video model: Wan2.1's transformer run on an in-context cache.

The token sequence is ``[shot-cache keyframe tokens | temporal-cache tokens | target tokens]`` with one
timestep per token; the prediction is returned for the target tokens only. The backbone is an unchanged
diffusers ``WanTransformer3DModel`` (``self.transformer``); the only new weights are the patch embeddings of
the compressed temporal-cache levels (after FramePack), initialised so that a compressed token equals the
mean of the base-patch tokens it replaces.

Rotary positions, in base-patch units, put shot-cache keyframe ``k`` at time ``k``, the kept history frames
after them and the target last; with empty caches the target starts at time 0 and the forward equals the
stock Wan forward. Compressed tokens take the mean position of the base patches they cover. Latent
heights and widths must be multiples of the base patch; larger kernels replicate-pad the oldest frames in
time and the bottom/right edges in space.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

SEGMENTS = ("shot", "temporal", "target")

# Oldest diffusers whose WanRotaryPosEmbed has t_dim/h_dim/w_dim (0.34 lacks them); pyproject.toml's floor.
MIN_DIFFUSERS = "0.35"

# Constructor arguments of the two named configs; `tiny` runs on a CPU in seconds.
MODEL_PRESETS: dict[str, dict] = {
    "tiny": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        temporal_schedule=((1, 1, 2, 2), (2, 2, 4, 4), (4, 4, 8, 8)),
    ),
    "wan2.1-1.3b": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=12,
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=8960,
        num_layers=30,
        temporal_schedule=((2, 1, 2, 2), (6, 2, 4, 4), (8, 4, 8, 8)),
    ),
}

_WAN_ARGS = (
    "patch_size",
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "text_dim",
    "freq_dim",
    "ffn_dim",
    "num_layers",
    "cross_attn_norm",
    "qk_norm",
    "eps",
    "rope_max_seq_len",
)


def kernel_name(kernel: Sequence[int]) -> str:
    return "x".join(str(k) for k in kernel)


@dataclass
class PackedSequence:
    """Embedded tokens of one cache state, ready for the transformer blocks.

    ``hidden`` (B, L, D); ``rotary`` (cos, sin) each (1, L, 1, head_dim); ``timesteps`` (B, L) on the
    0..1000 scale; ``segments`` maps ``shot``/``temporal``/``target`` to their slice of the sequence;
    ``target_grid`` is the target's (frames, height, width) in patches.
    """

    hidden: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    timesteps: torch.Tensor
    segments: dict[str, slice]
    target_grid: tuple[int, int, int]

    @property
    def counts(self) -> dict[str, int]:
        """Tokens per segment."""
        return {name: s.stop - s.start for name, s in self.segments.items()}


class CacheGuidedWan(ModelMixin, ConfigMixin):
    """Wan2.1 transformer with a shot cache and a differentially compressed temporal cache in context.

    Constructor arguments are the config (saved as ``config.json`` by ``save_pretrained``): those of
    ``WanTransformer3DModel`` plus ``temporal_schedule``, a list of ``(frames, kt, kh, kw)`` from the newest
    history frames to the oldest (kernels in latent units; history beyond the schedule is dropped), and the
    cache noise ranges on the 1000-step scale, used identically by the trainer and the sampler.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 12,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        temporal_schedule: Sequence[Sequence[int]] = ((2, 1, 2, 2), (6, 2, 4, 4), (8, 4, 8, 8)),
        shot_cache_t_range: tuple[float, float] = (100.0, 400.0),
        temporal_cache_t_range: tuple[float, float] = (0.0, 100.0),
    ) -> None:
        super().__init__()
        local = locals()
        self.transformer = WanTransformer3DModel(**{k: local[k] for k in _WAN_ARGS})
        if not hasattr(self.transformer.rope, "t_dim"):
            import diffusers

            raise ImportError(
                f"diffusers {diffusers.__version__} is too old for FilmWeaver's model (WanRotaryPosEmbed has no "
                f"t_dim): pip install 'diffusers>={MIN_DIFFUSERS}'"
            )
        base = tuple(patch_size)
        self.cache_patch_embeddings = nn.ModuleDict()
        for frames, *kernel in temporal_schedule:
            if frames <= 0 or any(k % b for k, b in zip(kernel, base)):
                raise ValueError(f"temporal_schedule entry {(frames, *kernel)}: kernel must be a multiple of {base}")
            name = kernel_name(kernel)
            if tuple(kernel) != base and name not in self.cache_patch_embeddings:
                self.cache_patch_embeddings[name] = nn.Conv3d(
                    in_channels, self.transformer.patch_embedding.out_channels, kernel, stride=kernel
                )
        self.init_cache_embeddings()

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CacheGuidedWan:
        """Random weights with a named config (``tiny`` or ``wan2.1-1.3b``)."""
        if name not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
        return cls(**{**MODEL_PRESETS[name], **overrides})

    @classmethod
    def from_wan(cls, path: str, subfolder: str | None = "transformer", **overrides) -> CacheGuidedWan:
        """Wrap a pretrained diffusers Wan transformer (local folder or hub id, e.g.
        ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``); the compressed-cache embeddings are initialised from it."""
        wan = WanTransformer3DModel.from_pretrained(path, subfolder=subfolder)
        args = {k: wan.config[k] for k in _WAN_ARGS}
        model = cls(**{**args, **overrides})
        model.transformer = wan
        model.init_cache_embeddings()
        return model

    @torch.no_grad()
    def init_cache_embeddings(self) -> None:
        """Set each compressed kernel to the base kernel tiled over the cells it covers, divided by their
        count, so a compressed token equals the mean of the base tokens it replaces."""
        base = self.transformer.patch_embedding
        for name, conv in self.cache_patch_embeddings.items():
            kernel = [int(k) for k in name.split("x")]
            reps = [k // b for k, b in zip(kernel, base.kernel_size)]
            conv.weight.copy_(base.weight.repeat(1, 1, *reps) / math.prod(reps))
            conv.bias.copy_(base.bias)

    # ------------------------------------------------------------------------------------------ positions

    @property
    def schedule_capacity(self) -> int:
        """Most history latent frames the temporal cache keeps."""
        return sum(int(entry[0]) for entry in self.config.temporal_schedule)

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (1, L, 1, head_dim) for (L, 3) real-valued (t, h, w) positions, as Wan's rotary table."""
        rope = self.transformer.rope
        cos, sin = [], []
        for axis, dim in enumerate((rope.t_dim, rope.h_dim, rope.w_dim)):
            freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
            angles = torch.outer(positions[:, axis].to(torch.float64), freqs)
            cos.append(angles.cos().repeat_interleave(2, dim=1).float())
            sin.append(angles.sin().repeat_interleave(2, dim=1).float())
        return torch.cat(cos, 1)[None, :, None], torch.cat(sin, 1)[None, :, None]

    def _grid(self, frames: int, height: int, width: int, t0: float, device) -> torch.Tensor:
        """(3, frames, h, w) base-patch positions of latent frames starting at time ``t0``."""
        pt, ph, pw = self.config.patch_size
        t = torch.arange(frames // pt, dtype=torch.float64, device=device) + t0
        h = torch.arange(height // ph, dtype=torch.float64, device=device)
        w = torch.arange(width // pw, dtype=torch.float64, device=device)
        return torch.stack(torch.meshgrid(t, h, w, indexing="ij"))

    # ------------------------------------------------------------------------------------------ packing

    def _embed(self, latents: torch.Tensor, kernel: Sequence[int], t0: float):
        """Tokens (B, n, D) and positions (n, 3) of latents (B, C, F, H, W) patchified with ``kernel``."""
        base = tuple(self.config.patch_size)
        kernel = tuple(int(k) for k in kernel)
        if latents.shape[-2] % base[1] or latents.shape[-1] % base[2]:
            raise ValueError(f"latent size {tuple(latents.shape[-2:])} is not a multiple of the patch {base}")
        grid = self._grid(latents.shape[2], latents.shape[3], latents.shape[4], t0, latents.device)
        if kernel == base:
            tokens = self.transformer.patch_embedding(latents)
        else:
            pad = [-s % k for s, k in zip(latents.shape[2:], kernel)]
            # older frames are padded in time (front), bottom/right in space, by replication
            padded = F.pad(latents, (0, pad[2], 0, pad[1], pad[0], 0), mode="replicate")
            tokens = self.cache_patch_embeddings[kernel_name(kernel)](padded)
            rel = [k // b for k, b in zip(kernel, base)]
            gpad = [p // b for p, b in zip(pad, base)]
            grid = F.pad(grid[None], (0, gpad[2], 0, gpad[1], gpad[0], 0), mode="replicate")
            grid = F.avg_pool3d(grid, rel, stride=rel)[0]
        return tokens.flatten(2).transpose(1, 2), grid.flatten(1).T

    def pack(
        self,
        target: torch.Tensor,
        timestep: torch.Tensor,
        temporal_cache: torch.Tensor | None = None,
        temporal_timestep: torch.Tensor | None = None,
        shot_cache: torch.Tensor | None = None,
        shot_timestep: torch.Tensor | None = None,
    ) -> PackedSequence:
        """Embed one cache state as a token sequence.

        ``target`` (B, C, F, H, W) noisy latents at ``timestep`` (B,); ``temporal_cache`` (B, C, Fh, H, W)
        the frames before the target, oldest first, noised at ``temporal_timestep`` (B,);
        ``shot_cache`` (B, K, C, 1, Hk, Wk) keyframe latents noised at ``shot_timestep`` (B,) or (B, K).
        Empty caches may be None or have zero frames/entries.
        """
        batch = target.shape[0]
        tokens, positions, steps, segments = [], [], [], {}
        start, t0 = 0, 0.0

        def add(name: str, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
            nonlocal start
            n = 0
            for tok, pos, t in parts:
                tokens.append(tok)
                positions.append(pos)
                steps.append(t.to(tok.device, torch.float32)[:, None].expand(-1, tok.shape[1]))
                n += tok.shape[1]
            segments[name] = slice(start, start + n)
            start += n

        shot_parts = []
        if shot_cache is not None and shot_cache.shape[1] > 0:
            st = _per_entry(shot_timestep, batch, shot_cache.shape[1], "shot_timestep")
            for k in range(shot_cache.shape[1]):
                tok, pos = self._embed(shot_cache[:, k], self.config.patch_size, t0)
                shot_parts.append((tok, pos, st[:, k]))
                t0 += 1
        add("shot", shot_parts)

        temporal_parts = []
        if temporal_cache is not None and temporal_cache.shape[2] > 0:
            tt = _per_entry(temporal_timestep, batch, 1, "temporal_timestep")[:, 0]
            history = temporal_cache[:, :, -self.schedule_capacity :]
            end, levels = history.shape[2], []
            for frames, *kernel in self.config.temporal_schedule:
                begin = max(0, end - int(frames))
                if begin < end:
                    levels.append((begin, end, kernel))
                end = begin
            for begin, end, kernel in reversed(levels):  # oldest level first
                tok, pos = self._embed(history[:, :, begin:end], kernel, t0 + begin)
                temporal_parts.append((tok, pos, tt))
            t0 += history.shape[2]
        add("temporal", temporal_parts)

        tok, pos = self._embed(target, self.config.patch_size, t0)
        add("target", [(tok, pos, _per_entry(timestep, batch, 1, "timestep")[:, 0])])

        pt, ph, pw = self.config.patch_size
        grid = (target.shape[2] // pt, target.shape[3] // ph, target.shape[4] // pw)
        return PackedSequence(
            hidden=torch.cat(tokens, 1).contiguous(),
            rotary=self._rotary(torch.cat(positions, 0)),
            timesteps=torch.cat(steps, 1),
            segments=segments,
            target_grid=grid,
        )

    def sequence_tokens(self, target_shape: Sequence[int], temporal_frames: int = 0, shot_entries: int = 0) -> int:
        """Length of the sequence ``pack`` builds for target latents of ``target_shape`` (..., F, H, W), a
        temporal cache of ``temporal_frames`` history frames and ``shot_entries`` keyframes of the target's
        size: the tokens the transformer blocks process (for tokens/s and FLOP counts)."""
        frames, height, width = (int(x) for x in target_shape[-3:])
        pt, ph, pw = self.config.patch_size
        tokens = (shot_entries * (1 // pt) + frames // pt) * (height // ph) * (width // pw)
        end = min(temporal_frames, self.schedule_capacity)
        for level_frames, kt, kh, kw in self.config.temporal_schedule:
            n = min(int(level_frames), end)
            if n > 0:
                tokens += math.ceil(n / kt) * math.ceil(height / kh) * math.ceil(width / kw)
            end -= n
        return tokens

    # ------------------------------------------------------------------------------------------ forward

    def run_blocks(self, packed: PackedSequence, encoder_hidden_states: torch.Tensor):
        """Transformer blocks over the whole sequence; returns hidden states (B, L, D) and temb (B, L, D)."""
        wan = self.transformer
        batch, length = packed.timesteps.shape
        temb, proj, text, _ = wan.condition_embedder(
            packed.timesteps.flatten(), encoder_hidden_states, None, timestep_seq_len=length
        )
        proj = proj.unflatten(2, (6, -1))
        hidden = packed.hidden
        for block in wan.blocks:
            if torch.is_grad_enabled() and wan.gradient_checkpointing:
                hidden = wan._gradient_checkpointing_func(block, hidden, text, proj, packed.rotary)
            else:
                hidden = block(hidden, text, proj, packed.rotary)
        return hidden, temb

    def head(self, hidden: torch.Tensor, temb: torch.Tensor, packed: PackedSequence) -> torch.Tensor:
        """Output projection of the target tokens only, unpatchified to (B, C, F, H, W)."""
        wan = self.transformer
        seg = packed.segments["target"]
        hidden, temb = hidden[:, seg], temb[:, seg]
        shift, scale = (wan.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        hidden = (wan.norm_out(hidden.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(hidden)
        hidden = wan.proj_out(hidden)
        f, h, w = packed.target_grid
        pt, ph, pw = self.config.patch_size
        hidden = hidden.reshape(hidden.shape[0], f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def forward(
        self,
        target: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temporal_cache: torch.Tensor | None = None,
        temporal_timestep: torch.Tensor | None = None,
        shot_cache: torch.Tensor | None = None,
        shot_timestep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow-matching velocity (B, C, F, H, W) for the target; arguments as in ``pack``."""
        packed = self.pack(target, timestep, temporal_cache, temporal_timestep, shot_cache, shot_timestep)
        hidden, temb = self.run_blocks(packed, encoder_hidden_states)
        return self.head(hidden, temb, packed)


def _per_entry(t: torch.Tensor | float | None, batch: int, entries: int, name: str) -> torch.Tensor:
    """A timestep argument as (B, entries)."""
    if t is None:
        raise ValueError(f"{name} is required when its segment is not empty")
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim == 1:
        t = t[:, None].expand(batch, entries)
    if t.shape != (batch, entries):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({batch},) or ({batch}, {entries})")
    return t


def build_model(spec: str, **overrides) -> CacheGuidedWan:
    """A model from a preset name, a FilmWeaver checkpoint folder (``config.json`` of this class) or a
    diffusers Wan checkpoint (folder or hub id with a ``transformer`` subfolder)."""
    if spec in MODEL_PRESETS:
        return CacheGuidedWan.from_preset(spec, **overrides)
    if os.path.isfile(os.path.join(spec, "config.json")):
        with open(os.path.join(spec, "config.json")) as f:
            if json.load(f).get("_class_name") == CacheGuidedWan.__name__:
                return load_checkpoint_strict(spec)
        return CacheGuidedWan.from_wan(spec, subfolder=None, **overrides)
    return CacheGuidedWan.from_wan(spec, **overrides)


def load_checkpoint_strict(path: str) -> CacheGuidedWan:
    """A FilmWeaver checkpoint folder loaded with every weight present and of the config's shape; raises
    ``ConfigError`` naming the mismatched weights otherwise (diffusers would warn and keep random weights)."""
    from curation.errors import ConfigError

    model, info = CacheGuidedWan.from_pretrained(path, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems or info.get("error_msgs"):
        detail = "; ".join(f"{k.replace('_', ' ')}: {list(v)[:5]}" for k, v in problems.items())
        raise ConfigError(
            f"checkpoint {path} does not match its config.json: {detail or info['error_msgs']}; it was written "
            "for another model config or is damaged"
        )
    return model
