"""GPU check of the cache-guided model: training-step speed, MFU and memory; LoRA step; sampler per mode.

The ``wan2.1-1.3b`` shape with random weights in bf16 at 480p (60x104 latents) with full caches (3 shot-cache
keyframes, a temporal cache filled to the schedule's capacity of 16 latent frames):

1. Training step on a 21-latent-frame target (81 frames), with and without gradient checkpointing:
   seconds per step, tokens/s, MFU and peak memory (an out-of-memory step is reported, not fatal).
2. LoRA step (rank 64 on attention and FFN linears, gradient checkpointing): the same numbers and the
   trainable parameters.
3. Sampler: seconds per chunk (``SampleConfig`` defaults: 5 latent frames, 50 Euler steps, CFG) for each cache
   mode none / temporal / shot / both, and the VAE decode of a chunk (random Wan2.1-shape VAE).

MFU = model FLOPs per step / time / the GPU's dense bf16 peak, where model FLOPs are 3x the forward FLOPs
(forward + backward), counted from the model: 2 x (weights x tokens) of every linear layer (text-side ones on
text tokens) plus 4 L^2 d of self-attention and 4 L T d of cross-attention per block; recomputation by
gradient checkpointing is not counted (PaLM's MFU, not HFU).

Run on a GPU machine: ``bash benchmarks/gpu_check.sh`` (writes bench_out/gpu_check.{log,json}).
Smoke run on a CPU: ``python benchmarks/gpu_check.py --preset tiny --device cpu --height 64 --width 64``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))

from train_step import PEAK_BF16_TFLOPS, batch, run  # noqa: E402

from training.config import ModelConfig  # noqa: E402
from training.model import CacheGuidedWan  # noqa: E402
from training.trainer import add_lora  # noqa: E402


def forward_flops(model: CacheGuidedWan, tokens: int, target_tokens: int, text_len: int) -> float:
    """Forward FLOPs of one sample: linear layers by the tokens they see, plus attention (see module doc)."""
    wan = model.transformer
    flops = 0.0
    for name, mod in wan.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if "attn2.to_k" in name or "attn2.to_v" in name or name.startswith("condition_embedder.text_embedder"):
            n = text_len
        elif name.startswith("proj_out"):
            n = target_tokens
        else:
            n = tokens
        flops += 2.0 * mod.weight.numel() * n
    conv = wan.patch_embedding
    flops += 2.0 * conv.weight.numel() * tokens
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    flops += model.config.num_layers * (4.0 * tokens**2 * inner + 4.0 * tokens * text_len * inner)
    return flops


def train_step_stats(model, b, steps: int, device, peak_tflops: float | None) -> dict:
    """Seconds per AdamW step (after one warm-up), tokens/s, MFU and peak memory; 'OOM' when it does not fit."""
    packed = model.pack(b["target"], 1.0, b["temporal"], 1.0, b["shot_cache"], 1.0)
    tokens, target = packed.hidden.shape[1], packed.counts["target"]
    try:
        sec = run(model, b, steps, device, device.type == "cuda")
    except torch.cuda.OutOfMemoryError:
        return {"status": "OOM", "tokens": tokens}
    flops = 3.0 * forward_flops(model, tokens, target, b["text"].shape[1])
    out = {
        "status": "ok",
        "tokens": tokens,
        "segments": packed.counts,
        "s_per_step": round(sec, 4),
        "tokens_per_s": round(tokens / sec),
        "model_tflop_per_step": round(flops / 1e12, 4),
        "mfu": round(flops / sec / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def wan_shape_encoders(path: str, text_dim: int, tiny_vae: bool) -> str:
    """A random encoder checkpoint: Wan2.1's VAE shape (``AutoencoderKLWan()`` defaults; the tiny one with
    ``tiny_vae``) and a one-layer UMT5 of width ``text_dim`` on a tiny vocabulary (text encoding is not timed)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from training.encoders import save_tiny_checkpoint

    save_tiny_checkpoint(path, z_dim=16 if not tiny_vae else 4, text_dim=32)
    if not tiny_vae:
        AutoencoderKLWan().save_pretrained(os.path.join(path, "vae"))
    cfg = UMT5Config(vocab_size=20, d_model=text_dim, d_kv=64, d_ff=256, num_layers=1, num_heads=4)
    UMT5EncoderModel(cfg).save_pretrained(os.path.join(path, "text_encoder"))
    return path


def sampler_stats(model, args, device, work: str) -> dict:
    """Seconds per chunk of ``generate_chunk`` in each cache mode, and of decoding one chunk."""
    from curation.embed import FallbackEmbedder
    from inference.config import SampleConfig
    from inference.sampler import CacheGuidedSampler

    ckpt = wan_shape_encoders(os.path.join(work, "encoders"), model.config.text_dim, args.preset == "tiny")
    cfg = SampleConfig(
        checkpoint="-",
        encoders=ckpt,
        height=args.height,
        width=args.width,
        chunk_frames=args.chunk_frames,
        num_steps=args.sample_steps,
        text_len=args.text_len,
        device=str(device),
    )
    sampler = CacheGuidedSampler(cfg, model=model, embedder=FallbackEmbedder())
    c, f, h, w = sampler.latent_shape
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((3, c, 1, h, w)).astype(np.float32)
    out = {"chunk_latent_frames": f, "solver_steps": cfg.num_steps, "cfg": cfg.guidance_scale != 1.0}
    history = rng.standard_normal((c, model.schedule_capacity, h, w)).astype(np.float32)
    warm = sampler.new_temporal_cache()
    warm.push(history)
    sampler.config = cfg.model_copy(update={"num_steps": 2})
    sampler.generate_chunk("a man walks", warm, keys, seed=0)  # warm-up (kernels, memoised text), 2 steps
    sampler.config = cfg
    for mode in ("none", "temporal", "shot", "both"):
        temporal = sampler.new_temporal_cache()
        if mode in ("temporal", "both"):
            temporal.push(history)
        shot = keys if mode in ("shot", "both") else np.zeros((0,), np.float32)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        latents, used = sampler.generate_chunk("a man walks", temporal, shot, seed=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert used == mode, (used, mode)
        out[f"s_per_chunk_{mode}"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    frames = sampler.decode(latents)
    out["vae_decode_s_per_chunk"] = round(time.perf_counter() - t, 3)
    out["frames_per_chunk"] = int(len(frames))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan2.1-1.3b", help="model shape (random weights): wan2.1-1.3b or tiny")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--frames", type=int, default=21, help="latent frames of the training target (21 = 81 frames)")
    ap.add_argument("--chunk-frames", type=int, default=5, help="latent frames per sampled chunk")
    ap.add_argument("--sample-steps", type=int, default=50, help="Euler steps per sampled chunk")
    ap.add_argument("--text-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    results: dict = {"device": name, "peak_bf16_tflops": peak, "preset": args.preset, "torch": torch.__version__}
    print(f"gpu_check: {args.preset} on {name} at {args.height}x{args.width}", flush=True)
    torch.manual_seed(0)
    model = CacheGuidedWan.from_preset(args.preset).to(device)
    cfg = model.config
    h, w = args.height // 8, args.width // 8
    b = batch(cfg.in_channels, args.frames, h, w, model.schedule_capacity, 3, args.text_len, cfg.text_dim, device)

    def report(key: str, value: dict) -> None:
        results[key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for checkpointing in (True, False):
        if checkpointing:
            model.enable_gradient_checkpointing()
        else:
            model.disable_gradient_checkpointing()
        report(
            f"train_checkpointing_{'on' if checkpointing else 'off'}",
            train_step_stats(model.train(), b, args.steps, device, peak),
        )

    torch.manual_seed(0)
    lora = add_lora(CacheGuidedWan.from_preset(args.preset), ModelConfig(lora_rank=args.lora_rank)).to(device)
    lora.enable_gradient_checkpointing()
    report("lora_step", train_step_stats(lora.train(), b, args.steps, device, peak))
    del lora

    with tempfile.TemporaryDirectory() as work:
        report("sampler", sampler_stats(model.eval(), args, device, work))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
