"""``filmweaver sample`` and ``filmweaver evaluate`` (heavy imports happen inside the commands)."""

from __future__ import annotations

import argparse
import os

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
        help="resume a session; with --script, its rounds are appended to the story (written once they succeed)",
    )
    add_config_arguments(
        p,
        "YAML file with sampling settings (see inference/config.py SampleConfig), or a bundled name "
        f"({', '.join(bundled_configs())}: small frames, few steps)",
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


CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def bundled_configs() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def config_path(name: str | None) -> str | None:
    """``name`` itself when it is a file (or None), else the bundled config of that name."""
    if name is not None and not os.path.exists(name) and name in bundled_configs():
        return os.path.join(CONFIG_DIR, f"{name}.yaml")
    return name


def cmd_sample(args: argparse.Namespace) -> int:
    from curation.config import load_config
    from curation.errors import ConfigError
    from inference.config import SampleConfig, load_script, with_training_defaults
    from pipelines.errors import check_output_dir

    script = load_script(args.script, continuation=bool(args.resume)) if args.script else None
    if args.resume:
        from inference.story import CONTINUE_SETTABLE, StorySession

        if args.checkpoint or args.config:
            raise ConfigError(
                "--continue uses the session's own settings: drop --checkpoint/--config (--set may change "
                f"{', '.join(sorted(CONTINUE_SETTABLE))})"
            )
        session = StorySession.open(args.resume, more=script, overrides=args.overrides)
    else:
        if script is None or not args.checkpoint:
            raise ConfigError("a new session needs --checkpoint and --script")
        check_output_dir(args.out)
        overrides = [*args.overrides, f"checkpoint={args.checkpoint}"]
        config = with_training_defaults(load_config(config_path(args.config), overrides, cls=SampleConfig))
        from inference.story import StorySession  # torch: after the settings are checked

        session = StorySession.new(args.out, config, script)
    from inference.sampler import CacheGuidedSampler

    sampler = CacheGuidedSampler(session.config)  # loads the model: a failure here writes nothing
    records = session.run(sampler)
    for rec in records:
        modes = "/".join(rec["modes"])
        print(f"round {rec['round']}: shot {rec['shot']} {modes} {rec['frames']} frames {rec['seconds']:.1f}s")
    print(f"{session.completed()} rounds in {session.out_dir} (story.mp4, shots/, rounds/)")
    return 0


def check_finished_session(path: str) -> None:
    """Raise ``ConfigError`` unless ``path`` is a story session whose rounds are all generated."""
    from curation.errors import ConfigError
    from inference.story import StorySession

    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a folder (evaluate takes session folders written by `filmweaver sample`)")
    session = StorySession.open(path)
    done = session.completed()
    if done < len(session.rounds) or not os.path.isfile(os.path.join(path, "story.mp4")):
        raise ConfigError(
            f"session {path} is not finished ({done} of {len(session.rounds)} rounds): "
            f"finish it with `filmweaver sample --continue {path}`"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from curation.config import load_config
    from curation.embed import load_embedder
    from inference.config import SampleConfig
    from inference.metrics import evaluate_session, results_table

    for session in args.sessions:
        check_finished_session(session)
    config = load_config(args.config, args.overrides, cls=SampleConfig)
    embedder = load_embedder(config.embed)
    results = [evaluate_session(s, embedder, min_scene_len=args.min_scene_len) for s in args.sessions]
    print(results_table(results))
    print(f"\nembedder: {embedder.model_id}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"embedder": embedder.model_id, "stories": [dataclasses.asdict(r) for r in results]}, f, indent=2)
    return 0
