"""Ablation "w/o S": new-shot consistency with the shot cache vs without, tiny model trained briefly on CPU.

Synthetic scenes (``filmweaver_testing.scene_shards``): each scene has a random flat background and a moving
square whose colour the caption names (4 colours), so the caption tells the character but not the setting: only
the shot cache can. The tiny model is trained on precomputed latents of ``--train-scenes`` scenes (curriculum:
temporal, then all four modes); then, for held-out scenes (other seed: backgrounds never seen), a new shot
is generated from the scene's caption either with the scene's real keyframe in the shot cache (a reference
entry, mode 'shot') or with no cache (mode 'none').

Two measures, on the held-out scenes:

- Held-out loss (the main one): flow-matching loss of new-shot targets with the scene's own keyframes in the
  shot cache ("with S"), with no shot cache ("w/o S", mode 'none') and with another scene's keyframes
  ("wrong S"), each target with the same noise and timestep. A model that uses the cache predicts the new
  shot better with S, and worse with the wrong S.
- Generation consistency in latent space: the generated chunk's latents (mean over frames, 2x2-pooled,
  centred on the references' mean) against every reference keyframe: centred cosine to its own, top-1
  retrieval of its own among all (chance 1/N), and the error of per-channel latent means. The "real next
  shot" row scores the held-out scenes' real second shots the same way: the ceiling of these measures.
  With the tiny random VAE that ceiling is near chance (its latents barely see flat colours), so this
  table needs a real (pretrained) VAE to show the effect in generated shots; not done here (no GPU).

Run: ``.venv/bin/python benchmarks/ablation_shot_cache.py [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from curation.embed import FallbackEmbedder
from filmweaver_testing.scene_shards import write_synthetic_scenes
from inference.config import SampleConfig, StoryScript
from inference.sampler import CacheGuidedSampler
from inference.story import StorySession
from pipelines.precompute import precompute
from training.config import PrecomputeConfig, TrainConfig
from training.data import LatentDataset, SampleStream
from training.encoders import save_tiny_checkpoint
from training.model import build_model
from training.trainer import flow_matching_loss, run_training, sample_to_batch

SIZE = 32


def eval_scenes(shard: str) -> list[tuple[str, str, np.ndarray]]:
    """(scene key, caption, keyframe RGB) of the first shot of each held-out scene."""
    out = []
    for sample in wds.WebDataset(shard, shardshuffle=False, empty_check=False):
        caption = json.loads(sample["json"])["shots"][0]["caption"]
        out.append((sample["__key__"], caption, np.asarray(Image.open(io.BytesIO(sample["000.jpg"])))))
    return out


def calibrate_latents(ckpt: str, shard: str) -> None:
    """Set the tiny VAE's ``latents_mean``/``latents_std`` to the statistics of the training keyframes.

    Real Wan VAEs ship such statistics; with the random tiny VAE's defaults (0, 1) the scenes differ by
    ~0.006 in normalised latent space, far below the diffusion noise, and no model could tell them apart.
    """
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(ckpt, subfolder="vae")
    frames = [
        np.asarray(Image.open(io.BytesIO(v)))
        for sample in wds.WebDataset(shard, shardshuffle=False, empty_check=False)
        for k, v in sample.items()
        if k.endswith(".jpg")
    ]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[:, :, None].float() / 127.5 - 1.0
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    vae.register_to_config(latents_mean=z.mean((0, 2, 3, 4)).tolist(), latents_std=z.std((0, 2, 3, 4)).tolist())
    vae.save_pretrained(os.path.join(ckpt, "vae"))


def pooled(latents: np.ndarray) -> np.ndarray:
    """2x2 average pool of latents (C, F, h, w), averaged over frames, flattened."""
    c, _, h, w = latents.shape
    return latents.astype(np.float64).mean(1).reshape(c, 2, h // 2, 2, w // 2).mean((2, 4)).ravel()


def scores(generated: list[np.ndarray], refs: list[np.ndarray]) -> dict[str, list[float]]:
    """Centred-cosine consistency, top-1 retrieval and colour error of each generated chunk to its reference."""
    g, r = np.stack([pooled(x) for x in generated]), np.stack([pooled(x) for x in refs])
    mu = r.mean(0)
    g, r = g - mu, r - mu
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    sims = g @ r.T
    own = np.arange(len(refs))
    err = [float(np.abs(x.mean((1, 2, 3)) - y.mean((1, 2, 3))).mean()) for x, y in zip(generated, refs)]
    return {"cos": sims[own, own].tolist(), "top1": (sims.argmax(1) == own).astype(float).tolist(), "err": err}


def clustered(diff: np.ndarray, clusters: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences, its standard error clustered by scene, and the two-sided p-value.

    Cluster-robust (CR1) variance of a mean: sum over clusters of the squared sums of residuals, times
    G/(G-1) / n^2; p from Student's t with G-1 degrees of freedom (G clusters), as is usual with few clusters.
    """
    from scipy import stats

    mean = float(diff.mean())
    groups = np.unique(clusters)
    g, n = len(groups), len(diff)
    sums = np.array([(diff[clusters == c] - mean).sum() for c in groups])
    se = float(np.sqrt(g / max(g - 1, 1) * (sums**2).sum()) / n)
    p = float(2 * stats.t.sf(abs(mean) / se, df=max(g - 1, 1))) if se > 0 else float("nan")
    return mean, se, p


def held_out_loss(
    model_dir: str, latents: str, cfg: TrainConfig, samples: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flow-matching loss per new-shot target of held-out scenes with S, without S and with a wrong S,
    and the scene index of each target (for standard errors clustered by scene)."""
    model = build_model(model_dir).eval()
    data = cfg.data.model_copy(update={"latents": latents, "negative_rate": 0.0, "text_dropout": 0.0})
    c = model.config
    stream = SampleStream(
        LatentDataset(latents), data, cfg.curriculum, model.schedule_capacity, c.shot_cache_t_range, (0, 0)
    )
    n = len(stream.ds)
    losses: dict[str, list[float]] = {"with S": [], "w/o S": [], "wrong S": []}
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    with torch.no_grad():
        for k in range(samples):
            batch = sample_to_batch(stream.build(k % n, "shot", rng), cpu)
            other = sample_to_batch(stream.build((k + 1 + int(rng.integers(n - 1))) % n, "shot", rng), cpu)
            variants = {
                "with S": batch,
                "w/o S": {
                    **batch,
                    "shot_cache": batch["shot_cache"][:, :0],
                    "shot_timesteps": batch["shot_timesteps"][:, :0],
                },
                "wrong S": {**batch, "shot_cache": other["shot_cache"]},
            }
            for name, b in variants.items():
                losses[name].append(flow_matching_loss(model, b, torch.Generator().manual_seed(k)).item())
    return {name: np.asarray(v) for name, v in losses.items()}, np.arange(samples) % n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 training steps, 8 + 4 scenes (seconds; a smoke run)")
    ap.add_argument("--steps", type=int, default=20000, help="training steps (ignored with --quick)")
    ap.add_argument("--train-scenes", type=int, default=64, help="training scenes (3 shots each)")
    ap.add_argument("--eval-scenes", type=int, default=16, help="held-out scenes")
    ap.add_argument("--work", help="working folder (default: a temporary one); a rerun reuses its encoded data")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores; 1 on a busy box)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    steps, n_train, n_eval = (40, 8, 4) if args.quick else (args.steps, args.train_scenes, args.eval_scenes)
    root = args.work or tempfile.mkdtemp(prefix="ablation-")
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    t0 = time.perf_counter()
    shards = {
        name: write_synthetic_scenes(os.path.join(root, name), n_scenes=n, shots=3, frames=13, size=SIZE, seed=seed)
        for name, n, seed in (("train", n_train, 0), ("eval", n_eval, 1))
    }
    ckpt = os.path.join(root, "ckpt")
    if not all(os.path.isfile(os.path.join(root, f"{name}-latents", "latents.json")) for name in shards):
        save_tiny_checkpoint(ckpt)
        calibrate_latents(ckpt, shards["train"])
        pre = PrecomputeConfig(checkpoint=ckpt, height=SIZE, width=SIZE, max_frames=13, text_len=16)
        pre.embed.backend = "fallback"
        for name in shards:
            precompute([os.path.join(root, name)], os.path.join(root, f"{name}-latents"), pre, engine="local")
    t_data = time.perf_counter() - t0

    cfg = TrainConfig.model_validate(
        {
            "out_dir": os.path.join(root, "model"),
            "precision": "fp32",
            "log_every": max(1, steps // 10),
            "checkpoint_every": steps,
            "model": {"name": "tiny"},
            "data": {
                "latents": os.path.join(root, "train-latents"),
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
    model_dir = os.path.join(cfg.out_dir, "model")
    loss, loss_scene = held_out_loss(model_dir, os.path.join(root, "eval-latents"), cfg, samples=25 * n_eval)

    embedder = FallbackEmbedder()
    base = SampleConfig(
        checkpoint=model_dir,
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
    generated: dict[str, list[np.ndarray]] = {"with S": [], "w/o S": [], "real next shot": []}
    refs = []
    eval_ds = LatentDataset(os.path.join(root, "eval-latents"))
    position = {key: i for i, (_, key) in enumerate(eval_ds.scenes)}
    t0 = time.perf_counter()
    for i, (key, caption, keyframe) in enumerate(eval_scenes(shards["eval"])):
        ref_path = os.path.join(root, f"ref{i}.png")
        Image.fromarray(keyframe).save(ref_path)
        refs.append(sampler.encoders.encode_frames(keyframe[None]).astype(np.float32))
        for name, shot in (("with S", {"references": [ref_path]}), ("w/o S", {})):
            script = StoryScript.model_validate({"shots": [{"prompt": caption, **shot}]})
            session = StorySession.create(os.path.join(root, "sessions", f"{i}-{'S' if shot else 'noS'}"), base, script)
            (record,) = session.run(sampler)
            assert record["modes"] == (["shot"] if shot else ["none"])
            generated[name].append(np.load(os.path.join(session.round_dir(0), "latents.npy"))[0])
        real = eval_ds.array(position[key], "001.latent.npy")[:, : base.chunk_frames].astype(np.float32)
        generated["real next shot"].append(real)
    chunks = 2 * n_eval
    t_sample = time.perf_counter() - t0

    print(
        f"data {t_data:.0f}s, training {steps} steps {t_train:.0f}s (loss {first:.3f} -> {last:.3f}), "
        f"sampling {t_sample / chunks:.2f}s per chunk ({base.num_steps} steps, CFG) on CPU"
    )
    print(f"training scenes: {n_train}, held-out scenes: {n_eval}")
    print("\nHeld-out loss of new-shot targets (lower is better; s.e. clustered by scene):")
    print("| setting | loss | vs with S | paired difference ± s.e. | p |")
    print("|---|---:|---:|---:|---:|")
    for name, v in loss.items():
        mean, se, p = clustered(v - loss["with S"], loss_scene)
        cells = "| |" if name == "with S" else f"| {mean:+.4f} ± {se:.4f} | {p:.2g} |"
        print(f"| {name} | {v.mean():.4f} | {v.mean() / loss['with S'].mean():.3f}x {cells}")
    print(f"\nGeneration consistency in latent space (one shot per held-out scene; retrieval chance {1 / n_eval:.3f}):")
    print("| setting | consistency to own reference (centred cosine) | retrieval top-1 | latent colour error |")
    print("|---|---:|---:|---:|")
    table = {name: scores(g, refs) for name, g in generated.items()}
    for name, r in table.items():
        se = {m: np.std(v, ddof=1) / np.sqrt(len(v)) for m, v in r.items()}
        print(
            f"| {name} | {np.mean(r['cos']):.3f} ± {se['cos']:.3f} | {np.mean(r['top1']):.3f} ± {se['top1']:.3f} "
            f"| {np.mean(r['err']):.3f} ± {se['err']:.3f} |"
        )
    print("\nPaired differences with S minus w/o S (one pair per scene, so the s.e. is clustered by scene):")
    print("| measure | better when | difference ± s.e. | p | significant at 5% |")
    print("|---|---|---:|---:|---|")
    scene = np.arange(n_eval)
    for m, label, better in (
        ("cos", "consistency", "higher"),
        ("top1", "retrieval top-1", "higher"),
        ("err", "colour error", "lower"),
    ):
        mean, se, p = clustered(np.asarray(table["with S"][m]) - np.asarray(table["w/o S"][m]), scene)
        print(f"| {label} | {better} | {mean:+.3f} ± {se:.3f} | {p:.2g} | {'yes' if p < 0.05 else 'no'} |")


if __name__ == "__main__":
    main()
