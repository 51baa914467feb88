"""The training loop: one function, top to bottom, run in one process or per Ray Train worker.

Per optimizer step: ``grad_accum`` micro-batches of ``micro_batch`` samples of one latent layout each
(``batching.BatchStream``; built ahead by a background thread, ``prefetch.PrefetchedStream``), forward under
autocast, flow-matching loss on the target tokens, backward; then clip, AdamW step, warmup and decay schedule,
EMA update, logging (overall and per cache mode; ``run_log``), validation (``validation``), periodic
checkpoints. Noise is drawn from a generator seeded by ``(seed, rank, step, micro)`` and batches are a function
of the stream position (waiting samples included), so a resumed run reproduces the uninterrupted loss curve
exactly.

Run folder: ``checkpoints/step-NNNNNNNN/state.pt`` (model, optimizer, scheduler, EMA, data position and RNG
states of every rank), ``metrics.jsonl`` (one line per step, written by rank 0), ``tensorboard/`` (event
files), ``validation.jsonl`` and ``validation/step_NNNNNN/`` (held-out loss and sampled MP4s) and ``model/``
(the final EMA weights, loadable with ``CacheGuidedWan.from_pretrained``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import random
import shutil
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from curation.errors import ConfigError

from .batching import BatchStream
from .config import SAMPLING_DEFAULTS_FILE, ModelConfig, OptimConfig, TrainConfig
from .data import LATENT_INDEX, LatentDataset, SampleStream, StreamState, TrainingSample
from .flow import add_noise, velocity_target
from .model import CacheGuidedWan, build_model
from .prefetch import PrefetchedStream, batch_tensors, sample_tensors
from .run_log import RunLog, check_loggers
from .validation import (
    VALIDATION_LOG,
    ValidationVideos,
    append_validation,
    held_out_scenes,
    truncate_log,
    validation_loss,
    validation_samples,
)

log = logging.getLogger(__name__)


class EMA:
    """Exponential moving average of the (local) parameters; works unchanged on DDP and FSDP shards."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the EMA weights into ``model``."""
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in saved:
                        p.copy_(saved[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n, t in state.items():
            self.shadow[n].copy_(t)


def sample_to_batch(sample: TrainingSample, device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors with a batch dimension of one for ``flow_matching_loss`` (``prefetch.sample_tensors``) on ``device``."""
    return {k: v.to(device) for k, v in sample_tensors(sample).items()}


def _built(batches: BatchStream, step: int) -> tuple[list[TrainingSample], dict[str, torch.Tensor]]:
    """The next micro-batch of ``batches`` and its CPU tensors, built in the loop (``data.prefetch=0``)."""
    samples = batches.next(step)
    return samples, batch_tensors(samples)


def flow_matching_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator, per_sample: bool = False
) -> torch.Tensor:
    """MSE between the predicted and true velocity on target tokens; caches are noised at their levels.
    A scalar, or with ``per_sample`` the (B,) MSE of each sample of the batch."""

    def noise(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    x0 = batch["target"]
    eps = noise(x0)
    temporal, shots = batch["temporal"], batch["shot_cache"]
    pred = model(
        add_noise(x0, eps, batch["timestep"]),
        batch["timestep"],
        batch["text"],
        temporal_cache=add_noise(temporal, noise(temporal), batch["temporal_timestep"]),
        temporal_timestep=batch["temporal_timestep"],
        shot_cache=add_noise(shots, noise(shots), batch["shot_timesteps"]),
        shot_timestep=batch["shot_timesteps"],
    )
    if per_sample:
        return F.mse_loss(pred.float(), velocity_target(x0, eps).float(), reduction="none").flatten(1).mean(1)
    return F.mse_loss(pred.float(), velocity_target(x0, eps).float())


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip gradients to a global L2 norm of ``max_norm`` (0: no clipping); returns the norm before clipping.

    Under FSDP (``FullyShardedDataParallel``, what Ray Train's ``prepare_model`` builds) each rank holds a
    shard of every gradient, so the norm is FSDP's ``clip_grad_norm_``: the shards' squared norms all-reduced,
    the same norm and scale on every rank. Under DDP (and one process) the gradients are full and already
    averaged over ranks, so ``torch.nn.utils.clip_grad_norm_`` of the local gradients is the global norm.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    limit = max_norm if max_norm > 0 else float("inf")
    if isinstance(model, FullyShardedDataParallel):
        return float(model.clip_grad_norm_(limit))
    return float(torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], limit))


def lr_factor(step: int, o: OptimConfig) -> float:
    """Learning-rate multiplier at optimizer ``step``: linear warmup from 0 over ``warmup_steps``, then
    ``lr_schedule`` decay (cosine or linear) to ``min_lr_ratio`` at ``max_steps``, or constant."""
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if o.lr_schedule == "cosine" else 1.0 - progress
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * decay


def add_lora(model: CacheGuidedWan, m: ModelConfig) -> CacheGuidedWan:
    """``model`` with LoRA adapters (peft) on ``m.lora_targets`` when ``m.lora_rank > 0``; then only the
    adapters and the compressed-cache embeddings require gradients (full fine-tuning otherwise)."""
    if m.lora_rank > 0:
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha or m.lora_rank, target_modules=m.lora_targets)
        inject_adapter_in_model(lora, model.transformer)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name or name.startswith("cache_patch_embeddings."))
    return model


def merge_lora(state: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """A plain ``CacheGuidedWan`` state dict from one with peft LoRA layers: W = W0 + (alpha / r) B A."""
    if m.lora_rank == 0:
        return state
    scale = (m.lora_alpha or m.lora_rank) / m.lora_rank
    out = {}
    for key, value in state.items():
        if "lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, kind = key.split(".base_layer.")
            if kind == "weight":
                a, b = state[f"{prefix}.lora_A.default.weight"], state[f"{prefix}.lora_B.default.weight"]
                value = value + scale * (b.float() @ a.float()).to(value.dtype)
            key = f"{prefix}.{kind}"
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ state


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def latest_checkpoint(out_dir: str) -> str | None:
    found = sorted(glob.glob(os.path.join(out_dir, "checkpoints", "step-*", "state.pt")))
    return os.path.dirname(found[-1]) if found else None


def _unwrap(model: torch.nn.Module) -> CacheGuidedWan:
    return getattr(model, "module", model)


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, ema, stream, cfg: TrainConfig, rank, world_size):
    """Write ``state.pt`` (rank 0) with every rank's data position and RNG; EMA shards per rank under FSDP."""
    model_state, optim_state = _full_state(model, optimizer)
    streams = _gather(dataclasses.asdict(stream.state), world_size)
    pending = _gather(stream.pending, world_size)
    rngs = _gather(_rng_state(), world_size)
    fsdp = cfg.distributed.strategy == "fsdp" and world_size > 1
    if fsdp and ema is not None:
        os.makedirs(ckpt_dir, exist_ok=True)
        torch.save(ema.state_dict(), os.path.join(ckpt_dir, f"ema-rank{rank}.pt"))
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        state = {
            "step": step,
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None and not fsdp else None,
            "streams": streams,
            "pending": pending,
            "rng": rngs,
            "world_size": world_size,
            "config": cfg.model_dump(mode="json"),
        }
        tmp = os.path.join(ckpt_dir, "state.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(ckpt_dir, "state.pt"))
        old = sorted(glob.glob(os.path.join(os.path.dirname(ckpt_dir), "step-*")))[: -cfg.keep_checkpoints]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        log.info("saved checkpoint %s", ckpt_dir)
    if world_size > 1:
        dist.barrier()


def check_weights(expected: dict[str, torch.Size], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``ConfigError`` naming missing, unexpected and wrongly shaped weights of ``found`` (a state dict
    read from ``source``) against ``expected`` (name -> shape of the model being loaded)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    common = sorted(set(found) & set(expected))
    shapes = [
        f"{k} {tuple(found[k].shape)} != {tuple(expected[k])}"
        for k in common
        if tuple(found[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items
        ]
        raise ConfigError(
            f"weights in {source} do not match the model being loaded: {'; '.join(parts)}. The run folder was "
            "written for another model config: use a new out_dir, or resume=false to start over"
        )


def load_checkpoint(ckpt_dir, model, optimizer, scheduler, ema, stream, cfg: TrainConfig, rank, world_size) -> int:
    """Restore everything ``save_checkpoint`` wrote; returns the step to continue from.

    Weights load strictly: a checkpoint of another model config raises ``ConfigError`` naming the mismatch."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = torch.load(os.path.join(ckpt_dir, "state.pt"), map_location="cpu", weights_only=False)
    if state["world_size"] != world_size:
        raise ValueError(f"checkpoint {ckpt_dir} was written by {state['world_size']} workers, not {world_size}")
    inner = _unwrap(model)
    with torch.device("meta"):
        expected = {
            k: v.shape for k, v in add_lora(type(inner).from_config(inner.config), cfg.model).state_dict().items()
        }
    check_weights(expected, state["model"], ckpt_dir)
    set_model_state_dict(model, state["model"], options=StateDictOptions(full_state_dict=True, strict=True))
    # parameters unused so far (cache levels not yet reached) have no Adam state: not an error
    set_optimizer_state_dict(
        model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True, strict=False)
    )
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        fsdp_file = os.path.join(ckpt_dir, f"ema-rank{rank}.pt")
        ema.load_state_dict(state["ema"] if state["ema"] is not None else torch.load(fsdp_file, weights_only=True))
    stream.state = StreamState(**state["streams"][rank])
    stream.pending = state.get("pending", [[]] * world_size)[rank]
    _set_rng_state(state["rng"][rank])
    log.info("resumed from %s at step %d", ckpt_dir, state["step"])
    return int(state["step"])


# ------------------------------------------------------------------------------------------------ loop


def train_loop(
    cfg: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    wrap=None,
    report=None,
) -> list[dict[str, Any]]:
    """Train per ``cfg``; returns the per-step records (rank 0 also appends them to ``metrics.jsonl``).

    ``wrap(model)`` applies DDP/FSDP (Ray Train's ``prepare_model``); ``report(metrics)`` is called at
    every log step (Ray Train's ``report``)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.data.latents is None:
        from curation.errors import ConfigError

        raise ConfigError("data.latents is not set: point it at a folder written by `filmweaver precompute`")
    check_loggers(cfg)
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    model = add_lora(build_model(cfg.model.name), cfg.model).to(device)
    if cfg.model.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    if wrap is not None:
        model = wrap(model)
    inner = _unwrap(model)
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, o))
    ema = EMA(model, o.ema_decay) if o.ema_decay > 0 else None
    dataset = LatentDataset(cfg.data.latents)
    held_out = held_out_scenes(len(dataset), cfg)
    stream_args = {
        "history_frames": inner.schedule_capacity,
        "shot_t_range": inner.config.shot_cache_t_range,
        "temporal_t_range": inner.config.temporal_cache_t_range,
    }
    stream = SampleStream(
        dataset,
        cfg.data,
        cfg.curriculum,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        scenes=[i for i in range(len(dataset)) if i not in set(held_out)] if held_out else None,
        **stream_args,
    )
    batches = BatchStream(stream, o.micro_batch)
    val_samples = validation_samples(cfg, held_out, stream_args) if held_out else []
    sample_videos = held_out and cfg.validation.sample and rank == 0
    videos = ValidationVideos(cfg, held_out, inner, device) if sample_videos else None
    step = 0
    ckpt = latest_checkpoint(cfg.out_dir) if cfg.resume else None
    if ckpt is not None:
        step = load_checkpoint(ckpt, model, optimizer, scheduler, ema, batches, cfg, rank, world_size)
        # the schedule follows this run's config (e.g. a longer max_steps), not the one the checkpoint was saved under
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * lr_factor(step, o)

    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    os.makedirs(cfg.out_dir, exist_ok=True)
    if rank == 0:  # lines of steps after the checkpoint (an interrupted run) are redone now
        for path in (metrics_path, os.path.join(cfg.out_dir, VALIDATION_LOG)):
            truncate_log(path, step)
    run_log = RunLog(cfg, rank, start_step=step)
    source = (
        PrefetchedStream(batches, step, o.grad_accum, cfg.data.prefetch, pin=device.type == "cuda")
        if cfg.data.prefetch
        else None
    )
    history: list[dict[str, Any]] = []
    window: dict[str, list[float]] = defaultdict(list)
    window_samples = window_tokens = 0
    t_last = time.perf_counter()
    log.info(
        "training %s (%.1fM parameters) on %s x%d from step %d to %d",
        cfg.model.name,
        sum(p.numel() for p in inner.parameters()) / 1e6,
        device,
        world_size,
        step,
        o.max_steps,
    )
    try:
        while step < o.max_steps:
            modes, losses = [], []
            for micro in range(o.grad_accum):
                samples, tensors = source.next(step) if source is not None else _built(batches, step)
                batch = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
                seed = int(np.random.SeedSequence([cfg.seed, rank, step, micro]).generate_state(1)[0])
                gen = torch.Generator(device).manual_seed(seed)
                sync = micro == o.grad_accum - 1 or not hasattr(model, "no_sync")
                with contextlib.nullcontext() if sync else model.no_sync(), autocast:
                    per_sample = flow_matching_loss(model, batch, gen, per_sample=True)
                (per_sample.mean() / o.grad_accum).backward()
                modes.extend(s.mode for s in samples)
                losses.extend(per_sample.tolist())
                window_samples += len(samples)
                first = samples[0]
                window_tokens += len(samples) * inner.sequence_tokens(
                    first.target.shape, first.temporal.shape[1], len(first.shot_cache)
                )
            grad_norm = clip_gradients(model, o.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1

            record = {"step": step, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0], "modes": modes}
            record["grad_norm"] = grad_norm
            if world_size > 1:
                reduced = torch.tensor([record["loss"]], device=device)
                dist.all_reduce(reduced)
                record["loss"] = reduced.item() / world_size
            history.append(record)
            for mode, value in zip(modes, losses):
                window[mode].append(value)
            window["all"].extend(losses)
            if rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if step % cfg.log_every == 0 or step == o.max_steps:
                now = time.perf_counter()
                counts = torch.tensor([window_samples, window_tokens], dtype=torch.float64, device=device)
                if world_size > 1:
                    dist.all_reduce(counts)
                elapsed = max(now - t_last, 1e-9)
                summary = {f"loss/{m}": float(np.mean(v)) for m, v in window.items()}
                summary.update(
                    step=step,
                    lr=record["lr"],
                    grad_norm=grad_norm,
                    steps_per_s=cfg.log_every / elapsed,
                    samples_per_s=counts[0].item() / elapsed,
                    tokens_per_s=counts[1].item() / elapsed,
                )
                t_last, window_samples, window_tokens = now, 0, 0
                if rank == 0:
                    log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(summary.items())))
                run_log.scalars(step, summary)
                if report is not None:
                    report(summary)
                window.clear()
            if val_samples and (step % cfg.validation.every_steps == 0 or step == o.max_steps):
                with ema.applied(model) if ema is not None else contextlib.nullcontext():
                    val = validation_loss(model, val_samples, device, autocast, cfg.seed)
                    if videos is not None:
                        val.update(videos.write(step))
                if rank == 0:
                    log.info("step %d validation %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(val.items())))
                    append_validation(cfg.out_dir, step, val)
                run_log.scalars(step, val)
            if step % cfg.checkpoint_every == 0 or step == o.max_steps:
                ckpt_dir = os.path.join(cfg.out_dir, "checkpoints", f"step-{step:08d}")
                position = source if source is not None else batches
                save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, ema, position, cfg, rank, world_size)
    finally:
        if source is not None:
            source.close()
        run_log.close()

    export_model(model, optimizer, ema, os.path.join(cfg.out_dir, "model"), rank, cfg.model)
    if rank == 0:
        with open(os.path.join(cfg.out_dir, "model", SAMPLING_DEFAULTS_FILE), "w") as f:
            json.dump(sampling_defaults(cfg), f, indent=2)
    return history


def sampling_defaults(cfg: TrainConfig) -> dict[str, Any]:
    """The ``SampleConfig`` values that match a run's training data, read by ``filmweaver sample``: the VAE /
    text encoder the latents were made with (``latents.json``), their frame size and rate, the chunk length,
    text length, timestep shift and shot-cache size of ``cfg.data``."""
    with open(os.path.join(cfg.data.latents, LATENT_INDEX)) as f:
        pre = json.load(f)["config"]
    encoders = pre["checkpoint"]
    if os.path.exists(encoders):
        encoders = os.path.abspath(encoders)
    return {
        "encoders": encoders,
        "height": pre["height"],
        "width": pre["width"],
        "fps": int(round(pre["fps"])),
        "chunk_frames": cfg.data.chunk_frames,
        "text_len": cfg.data.text_len,
        "shift": cfg.data.timestep_shift,
        "shot_cache_size": cfg.data.shot_cache_size,
    }


def export_model(model, optimizer, ema, path: str, rank: int, m: ModelConfig | None = None) -> None:
    """Save the EMA (or raw) weights as a ``CacheGuidedWan`` checkpoint folder (rank 0 writes); LoRA adapters
    (``m.lora_rank > 0``) are merged into the weights."""
    # written inside the context: on CPU the full state dict's tensors are the parameters themselves, which
    # get the raw weights back when the context exits
    with ema.applied(model) if ema is not None else contextlib.nullcontext():
        state, _ = _full_state(model, optimizer)
        if rank == 0:
            inner = _unwrap(model)
            export = CacheGuidedWan.from_config(inner.config)
            export.load_state_dict(merge_lora(state, m or ModelConfig()))
            export.save_pretrained(path)
            log.info("saved %s weights to %s", "EMA" if ema is not None else "final", path)


# ------------------------------------------------------------------------------------------------ entry points


def _ray_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: the same loop, with DDP/FSDP from ``prepare_model``."""
    import ray.train
    import ray.train.torch
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    cfg = TrainConfig.model_validate(config)
    ctx = ray.train.get_context()
    # cache-level embeddings go unused in samples without (enough) history
    kwargs = {"find_unused_parameters": True}
    if cfg.distributed.strategy == "fsdp":
        kwargs = {"auto_wrap_policy": ModuleWrapPolicy({WanTransformerBlock}), "use_orig_params": True}

    def wrap(model):
        return ray.train.torch.prepare_model(
            model, parallel_strategy=cfg.distributed.strategy, parallel_strategy_kwargs=kwargs
        )

    train_loop(
        cfg,
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        wrap=wrap,
        report=ray.train.report,
    )


def run_training(cfg: TrainConfig) -> list[dict[str, Any]] | None:
    """One process when ``distributed.num_workers == 1``, else a Ray Train ``TorchTrainer`` (DDP or FSDP;
    gloo on CPU). Returns the per-step records of the single-process run."""
    check_loggers(cfg)
    if cfg.distributed.num_workers == 1:
        return train_loop(cfg)
    use_gpu = cfg.distributed.use_gpu if cfg.distributed.use_gpu is not None else torch.cuda.is_available()
    if cfg.distributed.strategy == "fsdp" and not use_gpu:
        raise ConfigError(
            "distributed.strategy=fsdp needs GPU workers (Ray Train's FSDP is GPU-only): set "
            "distributed.use_gpu=true on a GPU cluster, or distributed.strategy=ddp on CPUs"
        )
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.ray_session import require_resources, start_ray

    n = cfg.distributed.num_workers  # fail now rather than wait forever for workers Ray cannot place
    require_resources(f"distributed.num_workers={n}", cpus=n, gpus=n if use_gpu else 0)
    start_ray()
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=cfg.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=cfg.distributed.num_workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="filmweaver-train", storage_path=os.path.abspath(os.path.join(cfg.out_dir, "ray"))),
    )
    trainer.fit()
    return None
