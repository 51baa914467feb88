"""Tiny random models (``filmweaver models tiny``) for trying precompute, train, sample and evaluate on a laptop,
offline, in minutes on CPU. Their outputs are noise: they exercise the code paths, not the quality.

Written to ``DIR``::

    encoders/          Wan layout (vae/, text_encoder/, tokenizer/): a 4-channel VAE and a 2-layer UMT5
    clip/tiny-clip.json, clip/tiny-clip.pt    an open_clip model config and its random weights
    precompute.yaml    precompute settings using encoders/ at 64x64, 17 frames, 16 text tokens, CPU
    sample.yaml        sample and evaluate settings: encoders/, the tiny CLIP, 64x64, 4 solver steps, no CFG, CPU
    story.yaml         a three-round story script (a shot, its extension, a new shot)
"""

from __future__ import annotations

import json
import os

import yaml

# open_clip config of a CLIP with 32x32 images, one vision and one text layer (~2 M parameters)
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
SIZE = 64  # frame side in pixels: 8x8 latents with the VAE's stride 8
TEXT_LEN = 16  # as training/configs/tiny.yaml data.text_len
STORY = {
    "shots": [
        {"prompt": "a man walks in a room", "chunks": 2},
        {"prompt": "the man sits at the window", "extend": True},
        {"prompt": "a red car in the street"},
    ]
}


def write_tiny_clip(folder: str, name: str = "tiny-clip", seed: int = 0) -> tuple[str, str]:
    """A random open_clip model of ``TINY_CLIP``: (config JSON path, weights path) in ``folder``."""
    import open_clip
    import torch

    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, f"{name}.json")
    with open(config, "w") as f:
        json.dump(TINY_CLIP, f, indent=2)
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    weights = os.path.join(folder, f"{name}.pt")
    torch.save(open_clip.create_model(name).state_dict(), weights)
    return config, weights


def write_tiny_models(out_dir: str, seed: int = 0) -> dict[str, str]:
    """Write the tiny encoders, the tiny CLIP and settings files using them (absolute paths) into ``out_dir``;
    returns {name: path}."""
    from .encoders import save_tiny_checkpoint

    out_dir = os.path.abspath(out_dir)
    encoders = save_tiny_checkpoint(os.path.join(out_dir, "encoders"), seed=seed)
    clip_config, clip_weights = write_tiny_clip(os.path.join(out_dir, "clip"), seed=seed)
    embed = {"backend": "open_clip", "pretrained": clip_weights, "clip_config_path": clip_config, "device": "cpu"}
    files = {
        "precompute.yaml": {
            "checkpoint": encoders,
            "height": SIZE,
            "width": SIZE,
            "max_frames": 17,
            "text_len": TEXT_LEN,
            "device": "cpu",
        },
        "sample.yaml": {
            "encoders": encoders,
            "height": SIZE,
            "width": SIZE,
            "chunk_frames": 2,
            "num_steps": 4,
            "guidance_scale": 1.0,  # no second (unconditional) pass: half the work
            "text_len": TEXT_LEN,
            "shot_cache_size": 2,
            "device": "cpu",
            "embed": embed,
        },
        "story.yaml": STORY,
    }
    paths = {"encoders": encoders, "clip_config": clip_config, "clip_weights": clip_weights}
    for name, data in files.items():
        paths[name] = os.path.join(out_dir, name)
        with open(paths[name], "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
    return paths
