"""Training-step speed and peak memory.

CPU: the ``tiny`` model, steps/s and peak RSS. CUDA (when available): the ``wan2.1-1.3b`` shape with random
weights at 480p, a 21-latent-frame target plus caches (3 keyframes, 16 history frames packed), bf16 autocast,
gradient checkpointing: tokens/s, MFU against the GPU's dense bf16 peak, peak memory.
Run: .venv/bin/python benchmarks/train_step.py [--steps N]
"""

import argparse
import resource
import time

import torch

from training.model import CacheGuidedWan
from training.trainer import flow_matching_loss

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def batch(c, f, h, w, hist, keys, text_len, text_dim, device):
    return {
        "target": torch.randn(1, c, f, h, w, device=device),
        "temporal": torch.randn(1, c, hist, h, w, device=device),
        "shot_cache": torch.randn(1, keys, c, 1, h, w, device=device),
        "text": torch.randn(1, text_len, text_dim, device=device),
        "timestep": torch.tensor([500.0], device=device),
        "temporal_timestep": torch.tensor([50.0], device=device),
        "shot_timesteps": torch.full((1, keys), 250.0, device=device),
    }


def run(model, b, steps, device, bf16):
    """Seconds per AdamW step over the trainable parameters, after one warm-up step (peak memory reset after it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator(device).manual_seed(0)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = flow_matching_loss(model, b, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model = CacheGuidedWan.from_preset("tiny").train()
    b = batch(4, 2, 8, 8, 3, 2, 16, 32, cpu)  # 64 px frames: 2-frame target, 3 history frames, 2 keyframes
    tokens = model.pack(b["target"], 1.0, b["temporal"], 1.0, b["shot_cache"], 1.0).hidden.shape[1]
    sec = run(model, b, args.steps, cpu, False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"tiny / CPU ({torch.get_num_threads()} threads): {tokens} tokens/sample, {1 / sec:.1f} steps/s, "
        f"{tokens / sec:.0f} tokens/s, peak RSS {rss:.0f} MiB"
    )

    if not torch.cuda.is_available():
        print("CUDA not available: the wan2.1-1.3b GPU benchmark was not run")
        return
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    model = CacheGuidedWan.from_preset("wan2.1-1.3b").to(dev).train()
    model.enable_gradient_checkpointing()
    b = batch(16, 21, 60, 104, 16, 3, 512, 4096, dev)
    packed = model.pack(b["target"], 1.0, b["temporal"], 1.0, b["shot_cache"], 1.0)
    n_tok = packed.hidden.shape[1]
    sec = run(model, b, max(3, args.steps // 4), dev, True)
    params = sum(p.numel() for p in model.parameters())
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    # 6 N per token for the linear layers (+1 forward recomputed by checkpointing: 8 N), attention 4 L^2 d per
    # layer forward, x3 for backward (+1 recompute)
    flops = 8 * params * n_tok + 4 * model.config.num_layers * 4 * n_tok**2 * inner
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    mfu = f"{flops / sec / (peak * 1e12):.1%}" if peak else "n/a (unknown GPU peak)"
    print(
        f"wan2.1-1.3b / {name}: {n_tok} tokens/sample ({packed.counts}), {sec:.2f} s/step, "
        f"{n_tok / sec:.0f} tokens/s, MFU {mfu}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    )


if __name__ == "__main__":
    main()
