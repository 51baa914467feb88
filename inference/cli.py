"""``filmweaver sample`` and ``filmweaver evaluate`` (heavy imports happen inside the commands)."""

from __future__ import annotations

import argparse

from curation.config import add_config_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate a multi-shot story from a script (or continue a session)")
    p.add_argument("--checkpoint", help="FilmWeaver model folder (a trainer's model/), preset or Wan checkpoint")
    p.add_argument("--script", help="story script YAML (shots: prompt, chunks, extend, references, characters)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="new session folder")
    where.add_argument(
        "--continue",
        dest="resume",
        metavar="DIR",
        help="resume a session; with --script, its rounds are appended to the story",
    )
    add_config_arguments(
        p,
        "YAML file with sampling settings (see inference/config.py SampleConfig)",
        "num_steps=30, shot_cache_size=3, encoders=PATH, embed.pretrained=PATH",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="consistency, text alignment and SCuts of story sessions (Table 1)")
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session folders written by `filmweaver sample`")
    add_config_arguments(
        p,
        "YAML file with embed settings (the `embed` section of SampleConfig)",
        "embed.pretrained=/path/to/open_clip_pytorch_model.bin",
    )
    p.add_argument(
        "--min-scene-len",
        type=int,
        default=None,
        help="SCuts: AdaptiveDetector's minimum scene length in frames (default: PySceneDetect's, as StreamingT2V; "
        "the old value here was 4)",
    )
    p.add_argument("--json", dest="json_out", help="also write the scores as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_sample(args: argparse.Namespace) -> int:
    from curation.config import load_config
    from curation.errors import ConfigError
    from inference.config import SampleConfig, load_script, with_training_defaults
    from inference.sampler import CacheGuidedSampler
    from inference.story import StorySession

    script = load_script(args.script) if args.script else None
    if args.resume:
        if args.checkpoint or args.config or args.overrides:
            raise ConfigError("--continue uses the session's own settings; drop --checkpoint/--config/--set")
        session = StorySession.open(args.resume, more=script)
    else:
        if script is None or not args.checkpoint:
            raise ConfigError("a new session needs --checkpoint and --script")
        overrides = [*args.overrides, f"checkpoint={args.checkpoint}"]
        config = with_training_defaults(load_config(args.config, overrides, cls=SampleConfig))
        session = StorySession.create(args.out, config, script)
    records = session.run(CacheGuidedSampler(session.config))
    for rec in records:
        modes = "/".join(rec["modes"])
        print(f"round {rec['round']}: shot {rec['shot']} {modes} {rec['frames']} frames {rec['seconds']:.1f}s")
    print(f"{session.completed()} rounds in {session.out_dir} (story.mp4, shots/, rounds/)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from curation.config import load_config
    from curation.embed import load_embedder
    from inference.config import SampleConfig
    from inference.metrics import evaluate_session, results_table

    config = load_config(args.config, args.overrides, cls=SampleConfig)
    embedder = load_embedder(config.embed)
    results = [evaluate_session(s, embedder, min_scene_len=args.min_scene_len) for s in args.sessions]
    print(results_table(results))
    print(f"\nembedder: {embedder.model_id}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"embedder": embedder.model_id, "stories": [dataclasses.asdict(r) for r in results]}, f, indent=2)
    return 0
