"""Tokens of the packed temporal cache vs the uncompressed history, and attention FLOPs of a step.

Wan2.1-1.3B shape at 480p (latents 60 x 104), its bundled temporal schedule; 16 history latent frames,
a 5-frame target chunk, 3 shot-cache keyframes. Token counts come from the model's real ``pack``.
Run: .venv/bin/python benchmarks/cache_tokens.py
"""

import torch

from training.model import MODEL_PRESETS, CacheGuidedWan

H, W, HISTORY, CHUNK, KEYFRAMES = 60, 104, 16, 5, 3
big = MODEL_PRESETS["wan2.1-1.3b"]
DIM, LAYERS = big["num_attention_heads"] * big["attention_head_dim"], big["num_layers"]


def attention_flops(tokens: int) -> float:
    """Self-attention FLOPs of one forward over all layers: QK^T and AV (2 * 2 * L^2 * d per layer)."""
    return LAYERS * 4.0 * tokens**2 * DIM


def main() -> None:
    # the real packing code with the 1.3B schedule; the tiny width keeps it cheap (counts do not depend on it)
    model = CacheGuidedWan.from_preset(
        "tiny", in_channels=16, out_channels=16, temporal_schedule=big["temporal_schedule"]
    )
    z = torch.zeros(1, 16, CHUNK, H, W)
    with torch.no_grad():
        packed = model.pack(
            z, 500.0, torch.zeros(1, 16, HISTORY, H, W), 50.0, torch.zeros(1, KEYFRAMES, 16, 1, H, W), 200.0
        )
    c = packed.counts
    per_frame = (H // 2) * (W // 2)
    raw_history = HISTORY * per_frame
    print(f"schedule {big['temporal_schedule']}  (frames, kt, kh, kw) newest first")
    print(
        f"temporal cache, {HISTORY} latent frames at 480p: uncompressed {raw_history} tokens, packed {c['temporal']} "
        f"tokens -> {raw_history / c['temporal']:.2f}x fewer"
    )
    target = c["target"]
    rows = {
        "target only (no cache)": target,
        "target + packed caches": target + c["temporal"] + c["shot"],
        "target + uncompressed caches": target + raw_history + c["shot"],
    }
    base = attention_flops(target)
    for name, n in rows.items():
        flops = attention_flops(n)
        print(f"{name:32s} {n:7d} tokens  attention {flops / 1e12:8.2f} TFLOP/forward  ({flops / base:5.2f}x)")


if __name__ == "__main__":
    main()
