"""Validation of a training run: held-out scenes, a fixed set of validation samples and their flow-matching
loss (every ``validation.every_steps`` steps), optionally short sampled MP4s with their CLIP text alignment.

The held-out scenes are a seeded pick of ``validation.scenes`` dataset scenes that the training stream never
uses (neither as targets nor as shot-cache negatives). Each gives one sample per cache mode it can make, built
once with a generator seeded by ``(seed, scene, mode)``, and each sample's noise is seeded by its index, so the
validation loss of the same weights is the same number in every run and on every rank.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch

from curation.errors import ConfigError

from .config import CACHE_MODES, CurriculumConfig, TrainConfig
from .data import LatentDataset, SampleStream, TrainingSample
from .prefetch import sample_tensors

log = logging.getLogger(__name__)

VALIDATION_LOG = "validation.jsonl"


def held_out_scenes(num_scenes: int, cfg: TrainConfig) -> list[int]:
    """Dataset indices of the validation scenes (sorted; empty when validation is off). Raises ``ConfigError``
    when fewer than one scene would be left to train on."""
    v = cfg.validation
    if v.every_steps == 0:
        return []
    if v.scenes >= num_scenes:
        raise ConfigError(
            f"validation.scenes={v.scenes} leaves no training scenes in a dataset of {num_scenes}: lower it, or "
            "set validation.every_steps=0"
        )
    return sorted(int(i) for i in np.random.default_rng([cfg.seed, 17]).choice(num_scenes, v.scenes, replace=False))


def validation_samples(cfg: TrainConfig, scenes: list[int], stream_args: dict[str, Any]) -> list[TrainingSample]:
    """One sample per validation scene and cache mode the scene can make (captions kept: no text dropout).

    ``stream_args`` are the training ``SampleStream``'s model-dependent arguments (history_frames,
    shot_t_range, temporal_t_range)."""
    data = cfg.data.model_copy(update={"text_dropout": 0.0})
    dataset = LatentDataset(cfg.data.latents)
    stream = SampleStream(dataset, data, CurriculumConfig(stage2_step=0), seed=cfg.seed, scenes=scenes, **stream_args)
    samples = []
    for i in scenes:
        for m, mode in enumerate(CACHE_MODES):
            sample = stream.build(i, mode, np.random.default_rng([cfg.seed, i, m, 19]))
            if sample is not None:
                samples.append(sample)
    if not samples:
        raise ConfigError(f"the {len(scenes)} validation scenes make no sample (shots shorter than chunk_frames)")
    return samples


@torch.no_grad()
def validation_loss(model: torch.nn.Module, samples: list[TrainingSample], device, autocast, seed: int) -> dict:
    """Mean flow-matching loss of ``model`` over ``samples``, overall (``val/loss/all``) and per cache mode
    (``val/loss/<mode>``); noise of sample ``j`` is seeded by ``(seed, j)``. Every rank evaluates every
    sample (FSDP needs all ranks in each forward), so all get the same numbers."""
    from .trainer import flow_matching_loss

    was_training = model.training
    model.eval()
    per_mode: dict[str, list[float]] = {}
    try:
        for j, sample in enumerate(samples):
            batch = {k: v.to(device) for k, v in sample_tensors(sample).items()}
            gen_seed = int(np.random.SeedSequence([seed, j, 23]).generate_state(1)[0])
            with autocast:
                loss = flow_matching_loss(model, batch, torch.Generator(device).manual_seed(gen_seed))
            per_mode.setdefault(sample.mode, []).append(loss.item())
    finally:
        model.train(was_training)
    out = {f"val/loss/{mode}": float(np.mean(v)) for mode, v in per_mode.items()}
    out["val/loss/all"] = float(np.mean([x for v in per_mode.values() for x in v]))
    return out


def append_validation(out_dir: str, step: int, record: dict[str, Any]) -> None:
    with open(os.path.join(out_dir, VALIDATION_LOG), "a") as f:
        f.write(json.dumps({"step": step, **record}) + "\n")


def truncate_log(path: str, step: int) -> None:
    """Drop the lines of a JSON-lines log written after ``step`` (by a run interrupted after its last
    checkpoint), so a resumed run appends no duplicate steps."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)
