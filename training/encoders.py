"""Wan's VAE (``AutoencoderKLWan``) and UMT5 text encoder, loaded from a diffusers Wan checkpoint.

Latents are normalised with the VAE config's ``latents_mean``/``latents_std`` (as Wan's pipeline does), so
the trainer and the sampler work on unit-scale latents. ``save_tiny_checkpoint`` writes a tiny random
checkpoint in the same layout (vae/, text_encoder/, tokenizer/) for tests.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``curation.embed.resolve_device`` as a ``torch.device`` ('auto': CUDA when available, else CPU)."""
    from curation.embed import resolve_device as device_name

    return torch.device(device_name(device))


class WanEncoders:
    """VAE + tokenizer + text encoder of one checkpoint, loaded once (per Ray actor)."""

    def __init__(self, checkpoint: str, device: str = "auto", text_len: int = 512):
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.device = resolve_device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        log.info("loading VAE and text encoder from %s on %s", checkpoint, self.device)
        self.vae = AutoencoderKLWan.from_pretrained(checkpoint, subfolder="vae", torch_dtype=torch.float32)
        self.vae.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint, subfolder="tokenizer")
        self.text_encoder = UMT5EncoderModel.from_pretrained(checkpoint, subfolder="text_encoder", torch_dtype=dtype)
        self.text_encoder.to(self.device).eval()
        self.text_len = text_len
        cfg = self.vae.config
        self.mean = torch.tensor(cfg.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, device=self.device).view(1, -1, 1, 1, 1)
        self.temporal_ratio = 2 ** sum(cfg.temperal_downsample)
        self.spatial_ratio = 2 ** (len(cfg.dim_mult) - 1)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Normalised latents (C, 1 + (F-1)//r, H/s, W/s) float16 of uint8 frames (F, H, W, 3).

        Frames past the last ``1 + k*r`` are dropped (the VAE is causal in time with ratio r)."""
        n = 1 + (len(frames) - 1) // self.temporal_ratio * self.temporal_ratio
        x = torch.from_numpy(np.array(frames[:n], dtype=np.uint8)).to(self.device)
        x = x.permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        z = self.vae.encode(x).latent_dist.mean
        return ((z - self.mean) / self.std)[0].to(torch.float16).cpu().numpy()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, F, H, W, 3) of normalised latents (B, C, F', h, w)."""
        z = latents.to(self.device, torch.float32) * self.std + self.mean
        x = self.vae.decode(z).sample.clamp(-1, 1)
        return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> list[np.ndarray]:
        """One float16 (n_tokens, D) embedding per text, cut at its true length (Wan pads with zeros later)."""
        batch = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.text_len,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        hidden = self.text_encoder(ids, mask).last_hidden_state
        lengths = mask.sum(1).tolist()
        return [hidden[i, : max(1, n)].float().cpu().numpy().astype(np.float16) for i, n in enumerate(lengths)]


def save_tiny_checkpoint(path: str, z_dim: int = 4, text_dim: int = 32, seed: int = 0) -> str:
    """Write a tiny random Wan-layout checkpoint (vae/, text_encoder/, tokenizer/) to ``path``."""
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    vae.save_pretrained(os.path.join(path, "vae"))
    words = [
        "a",
        "the",
        "man",
        "woman",
        "red",
        "blue",
        "green",
        "room",
        "street",
        "walks",
        "sits",
        "looks",
        "at",
        "door",
        "window",
        "car",
        "dog",
    ]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(os.path.join(path, "tokenizer"))
    cfg = UMT5Config(vocab_size=len(vocab), d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    UMT5EncoderModel(cfg).save_pretrained(os.path.join(path, "text_encoder"))
    return path
