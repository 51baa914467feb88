"""The options of the Ray executor, defined once for ``python -m pipelines.curate`` and ``filmweaver curate``.

Importing this module imports no Ray, so the ``filmweaver`` command line starts fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from curation.errors import ConfigError

# option (its dest) -> default; each is the ``run_ray`` keyword of the same name
DEFAULTS: dict[str, Any] = {
    "address": None,
    "num_cpus": None,
    "actors": "auto",
    "max_failures": 3,
    "videos_per_write": 8,
}


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``ray engine`` option group (``--address``, ``--num-cpus``, ``--max-failures``, ...)."""
    g = p.add_argument_group("ray engine")
    g.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this run (default: all)")
    g.add_argument(
        "--actors",
        choices=["auto", "on", "off"],
        default=DEFAULTS["actors"],
        help="model stages in actor pools: 'auto' when the cluster has GPUs",
    )
    g.add_argument(
        "--max-failures",
        type=int,
        default=DEFAULTS["max_failures"],
        help="worker crashes (segfault, out-of-memory kill) a video may cause before it is quarantined in the "
        "same run; also the runs that may end with a video unfinished before it is quarantined",
    )
    g.add_argument(
        "--videos-per-write",
        type=int,
        default=DEFAULTS["videos_per_write"],
        help="videos gathered by each shard-writing task",
    )


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """``run_ray`` keyword arguments from options added by ``add_ray_arguments``."""
    if args.max_failures < 1:
        raise ConfigError(f"--max-failures must be at least 1, not {args.max_failures}")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise ConfigError(f"--num-cpus must be at least 1, not {args.num_cpus}")
    if args.videos_per_write < 1:
        raise ConfigError(f"--videos-per-write must be at least 1, not {args.videos_per_write}")
    options = {dest: getattr(args, dest) for dest in DEFAULTS}
    options["actors"] = {"auto": None, "on": True, "off": False}[args.actors]
    return options


def ray_options_given(args: argparse.Namespace) -> list[str]:
    """The Ray options set to something other than their default, as flags (``--num-cpus`` ...)."""
    return ["--" + dest.replace("_", "-") for dest, default in DEFAULTS.items() if getattr(args, dest) != default]
