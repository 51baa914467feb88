"""Ablation "w/o S": new-shot consistency with the shot cache vs without, tiny model trained briefly on CPU.

Synthetic scenes (``training.synthetic``): each scene has a random background and a square whose colour the
caption names. The tiny model is trained on precomputed latents of training scenes (curriculum: temporal,
then all four modes); then, for held-out scenes (other seed: backgrounds never seen), a new shot is
generated from the scene's caption either with the scene's real keyframe in the shot cache (a reference
entry, mode 'shot') or with no cache (mode 'none'). The tiny VAE has random weights, so decoded pixels
carry no colour; consistency is measured in latent space, where the VAE encoding keeps it: cosine
similarity of the 2x2-pooled latents of the generated chunk (mean over its frames) and of the reference
keyframe, and the mean absolute error of per-channel latent means (the scene's colours).

Run: ``.venv/bin/python benchmarks/ablation_shot_cache.py [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from curation.embed import FallbackEmbedder
from inference.config import SampleConfig, StoryScript
from inference.sampler import CacheGuidedSampler
from inference.story import StorySession
from pipelines.precompute import precompute
from training.config import TrainConfig
from training.encoders import save_tiny_checkpoint
from training.synthetic import write_synthetic_scenes
from training.trainer import run_training

SIZE = 32


def eval_scenes(root: str, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(caption, keyframe RGB) of the first shot of each held-out scene."""
    shard = write_synthetic_scenes(os.path.join(root, "eval"), n_scenes=n, shots=1, frames=9, size=SIZE, seed=seed)
    out = []
    for s, sample in enumerate(wds.WebDataset(shard, shardshuffle=False, empty_check=False)):
        colour = ["red", "green", "blue", "yellow"][s % 4]
        out.append((f"a {colour} square walks in a room", np.asarray(Image.open(io.BytesIO(sample["000.jpg"])))))
    return out


def pooled(latents: np.ndarray) -> np.ndarray:
    """L2-normalised 2x2 average pool of latents (C, F, h, w), averaged over frames."""
    c, _, h, w = latents.shape
    v = latents.mean(1).reshape(c, 2, h // 2, 2, w // 2).mean((2, 4)).ravel()
    return v / np.linalg.norm(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 training steps, 4 held-out scenes (about 2 minutes)")
    ap.add_argument("--steps", type=int, default=1500, help="training steps (ignored with --quick)")
    ap.add_argument("--eval-scenes", type=int, default=8, help="held-out scenes")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    steps, n_eval = (40, 4) if args.quick else (args.steps, args.eval_scenes)
    root = args.work or tempfile.mkdtemp(prefix="ablation-")
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    t0 = time.perf_counter()
    write_synthetic_scenes(os.path.join(root, "scenes"), n_scenes=8, shots=3, frames=13, size=SIZE, seed=0)
    ckpt = save_tiny_checkpoint(os.path.join(root, "ckpt"))
    from training.config import PrecomputeConfig

    pre = PrecomputeConfig(checkpoint=ckpt, height=SIZE, width=SIZE, max_frames=13, text_len=16)
    precompute([os.path.join(root, "scenes")], os.path.join(root, "latents"), pre, engine="local")
    t_data = time.perf_counter() - t0

    cfg = TrainConfig.model_validate(
        {
            "out_dir": os.path.join(root, "train"),
            "precision": "fp32",
            "log_every": max(1, steps // 10),
            "checkpoint_every": steps,
            "model": {"name": "tiny"},
            "data": {
                "latents": os.path.join(root, "latents"),
                "chunk_frames": 2,
                "shot_cache_size": 2,
                "negative_rate": 0.1,
                "text_len": 16,
                "timestep_shift": 1.0,
            },
            "curriculum": {
                "stage2_step": steps // 5,
                "stage2_mix": {"none": 0.2, "temporal": 0.2, "shot": 0.4, "both": 0.2},
            },
            "optim": {
                "lr": 1e-3,
                "warmup_steps": 10,
                "max_steps": steps,
                "grad_accum": 1,
                "ema_decay": 0.9 if args.quick else 0.99,
            },
        }
    )
    t0 = time.perf_counter()
    history = run_training(cfg)
    t_train = time.perf_counter() - t0
    first = np.mean([h["loss"] for h in history[: max(1, steps // 10)]])
    last = np.mean([h["loss"] for h in history[-max(1, steps // 10) :]])

    embedder = FallbackEmbedder()
    base = SampleConfig(
        checkpoint=os.path.join(cfg.out_dir, "model"),
        encoders=ckpt,
        height=SIZE,
        width=SIZE,
        chunk_frames=2,
        num_steps=20,
        shift=1.0,
        guidance_scale=3.0,
        text_len=16,
        device="cpu",
    )
    base.embed.backend = "fallback"
    sampler = CacheGuidedSampler(base, embedder=embedder)
    results: dict[str, dict[str, list[float]]] = {"with S": {"cos": [], "err": []}, "w/o S": {"cos": [], "err": []}}
    t0 = time.perf_counter()
    chunks = 0
    for i, (caption, key) in enumerate(eval_scenes(root, n_eval, seed=1)):
        ref_path = os.path.join(root, f"ref{i}.png")
        Image.fromarray(key).save(ref_path)
        ref_latent = sampler.encoders.encode_frames(key[None]).astype(np.float32)
        for name, shot in (("with S", {"references": [ref_path]}), ("w/o S", {})):
            script = StoryScript.model_validate({"shots": [{"prompt": caption, **shot}]})
            session = StorySession.create(os.path.join(root, "sessions", f"{i}-{name[:2]}"), base, script)
            (record,) = session.run(sampler)
            assert record["modes"] == (["shot"] if shot else ["none"])
            chunks += 1
            latents = np.load(os.path.join(session.round_dir(0), "latents.npy"))[0]
            results[name]["cos"].append(float(pooled(latents) @ pooled(ref_latent)))
            err = np.abs(latents.mean(axis=(1, 2, 3)) - ref_latent.mean(axis=(1, 2, 3))).mean()
            results[name]["err"].append(float(err))
    t_sample = time.perf_counter() - t0

    print(
        f"data {t_data:.0f}s, training {steps} steps {t_train:.0f}s (loss {first:.3f} -> {last:.3f}), "
        f"sampling {t_sample / chunks:.2f}s per chunk ({base.num_steps} steps, CFG) on CPU"
    )
    print(f"held-out scenes: {n_eval}")
    print("| setting | latent consistency to reference (cosine, higher is better) | latent colour error (lower) |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {np.mean(r['cos']):.3f} ± {np.std(r['cos']):.3f} | {np.mean(r['err']):.3f} |")
    err = {name: np.mean(r["err"]) for name, r in results.items()}
    print(f"colour error with/without S: {err['with S'] / err['w/o S']:.2f}x")


if __name__ == "__main__":
    main()
