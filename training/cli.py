"""``filmweaver train`` and ``filmweaver precompute`` (heavy imports happen inside the commands)."""

from __future__ import annotations

import argparse
import os

from curation.config import add_config_arguments

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the cache-guided model on a latent dataset")
    add_config_arguments(
        p,
        f"YAML training config, or a bundled name ({', '.join(bundled_configs())})",
        "data.latents=LATENTS_DIR, optim.max_steps=100, distributed.num_workers=2",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("precompute", help="encode scene shards to VAE latents and text embeddings (Ray Data)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="curated dataset folders or scene shard files/globs")
    p.add_argument("--out", required=True, help="latent dataset folder")
    add_config_arguments(
        p,
        "YAML file with precompute settings (see training/config.py)",
        "checkpoint=/models/Wan2.1-T2V-1.3B-Diffusers, num_actors=4",
    )
    p.add_argument("--engine", choices=["ray", "local"], default="ray", help="Ray Data job (default) or in-process")
    p.set_defaults(func=cmd_precompute)


def bundled_configs() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def _config_path(name: str | None) -> str | None:
    if name is not None and not os.path.exists(name) and name in bundled_configs():
        return os.path.join(CONFIG_DIR, f"{name}.yaml")
    return name


def cmd_train(args: argparse.Namespace) -> int:
    from curation.config import load_config
    from training.config import TrainConfig

    cfg = load_config(_config_path(args.config), args.overrides, cls=TrainConfig)
    from training.trainer import run_training  # torch and diffusers: after the config is known to be valid

    history = run_training(cfg)
    if history:
        print(f"trained {len(history)} steps, last loss {history[-1]['loss']:.4f}; model in {cfg.out_dir}/model")
    else:
        print(f"training finished; model in {cfg.out_dir}/model")
    return 0


def cmd_precompute(args: argparse.Namespace) -> int:
    from curation.config import load_config
    from pipelines.errors import check_hub_model, check_output_dir
    from training.config import PrecomputeConfig

    cfg = load_config(args.config, args.overrides, cls=PrecomputeConfig)
    check_output_dir(args.out)
    check_hub_model(cfg.checkpoint, "checkpoint", ("vae", "text_encoder", "tokenizer"))
    from pipelines.precompute import precompute  # torch and diffusers: after the inputs are checked

    index = precompute(args.inputs, args.out, cfg, engine=args.engine)
    n = sum(s["nsamples"] for s in index["shards"])
    print(f"wrote {n} scenes in {len(index['shards'])} latent shards to {args.out}")
    return 0
