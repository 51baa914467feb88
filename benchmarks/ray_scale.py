"""The Ray executor at scale, measured in one run; each section is one function, chosen with ``--sections``.

    .venv/bin/python benchmarks/ray_scale.py --sections parallelism --workers 1 2 [--videos 8]

Parallelism: wall time of the Ray executor on the same synthetic films with 1, 2, 4, ... worker processes
(the CPUs of a local Ray started for each measurement; ``ray.init`` is timed apart and not counted).
Reported per worker count: throughput (seconds of video per wall second), its ratio to 1 worker and the
share of linear (ratio / workers; goal >= 0.8), the stage CPU busy share from ``run.json`` (stage task
seconds / (graph seconds x CPUs)), the stage tasks in flight on average while stages ran (stage task
seconds / stage window: how many CPUs the scheduler kept busy with stage work; far less sensitive to other
load on the machine than wall times), and how the sink commits meanwhile: seconds to the first commit, the
longest gap between commits, and how many commits happened before the last stage task ended (starved
commits all land at the end). A measurement with more workers than the machine's cores is printed but
says nothing about scaling: it is marked ``oversubscribed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.config import load_config  # noqa: E402
from curation.journal import PARTS_DIR  # noqa: E402
from curation.shard_writer import TMP_SUFFIX  # noqa: E402
from filmweaver_testing.films import make_film  # noqa: E402
from pipelines.curate import run_ray  # noqa: E402

# weight-free embedder (no CLIP weights offline), no face model: the stages are decode/detect/export bound
PARALLELISM_SETTINGS = ["embed.backend=fallback", "filters.faces=false", "shots.backend=scenedetect"]


def films(folder: str, n: int, seconds: float) -> list[str]:
    """``n`` synthetic films of about ``seconds`` each at 320x180 (cached in ``folder``)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    shots = max(2, round(seconds / 2.5))
    for seed in range(n):
        path = os.path.join(folder, f"film{seed:03d}-{seconds:g}s.mp4")
        if not os.path.exists(path):
            make_film(path, seed=300 + seed, n_scenes=2, shots_per_scene=(shots // 2, shots // 2 + 1), size=(320, 180))
        paths.append(path)
    return paths


def commit_times(out: str) -> list[float]:
    """Modification times of the journal's commit markers (one per committed part), sorted."""
    parts = Path(out) / PARTS_DIR
    return sorted(p.stat().st_mtime for p in parts.glob("*.json") if TMP_SUFFIX not in p.name)


def one_parallelism_run(inputs: list[str], out: str, settings: list[str], workers: int) -> dict[str, Any]:
    """Curate ``inputs`` with a local Ray of ``workers`` CPUs into a fresh ``out``."""
    import ray

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
    init_s = time.perf_counter() - t0
    try:
        start = time.time()
        t0 = time.perf_counter()
        summary = run_ray(inputs, out, load_config(None, settings), videos_per_write=1)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    run = json.loads((Path(out) / "run.json").read_text())
    commits = [t - start for t in commit_times(out)]
    stage_end = run["ray"]["stage_window"][1] - start
    gaps = [b - a for a, b in zip([0.0, *commits], commits)]
    window = run["ray"]["stage_window"]
    busy = sum(n["stage_busy_s"] for n in run["ray"]["nodes_worked"])
    return {
        "workers": workers,
        "ray_init_s": round(init_s, 2),
        "wall_s": round(wall, 2),
        "video_s": round(summary.hours * 3600, 1),
        "scenes_written": summary.scenes_written,
        "stage_cpu_busy_share": run["ray"]["stage_cpu_busy_share"],
        # stage tasks in flight on average between the first stage start and the last stage end: how many
        # CPUs the scheduler kept busy, whatever else loads the machine
        "stage_tasks_in_flight": round(busy / max(1e-9, window[1] - window[0]), 2),
        "commits": len(commits),
        "first_commit_s": round(commits[0], 2) if commits else None,
        "longest_commit_gap_s": round(max(gaps), 2) if gaps else None,
        "commits_before_last_stage_end": sum(c < stage_end for c in commits),
    }


def measure_parallelism(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput with each of ``args.workers`` worker processes, as ratios to the first (1 worker)."""
    inputs = films(os.path.join(args.out, "films"), args.videos, args.film_seconds)
    runs = [
        one_parallelism_run(inputs, os.path.join(args.out, f"ray{w}"), PARALLELISM_SETTINGS, w) for w in args.workers
    ]
    base = runs[0]
    if len({r["scenes_written"] for r in runs}) != 1:
        raise SystemExit(f"the runs disagree on the scenes written: {[r['scenes_written'] for r in runs]}")
    cores = len(os.sched_getaffinity(0))
    for r in runs:
        r["throughput_video_s_per_s"] = round(r["video_s"] / r["wall_s"], 3)
        r["speedup_over_first"] = round(base["wall_s"] / r["wall_s"], 3)
        r["share_of_linear"] = round(r["speedup_over_first"] * base["workers"] / r["workers"], 3)
        r["oversubscribed"] = r["workers"] > cores
    return {"cores": cores, "videos": len(inputs), "runs": runs}


SECTIONS = {"parallelism": measure_parallelism}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    p.add_argument("--out", default="bench_out/ray_scale")
    g = p.add_argument_group("parallelism")
    g.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker processes (CPUs) to measure")
    g.add_argument("--videos", type=int, default=8, help="synthetic films curated by each measurement")
    g.add_argument("--film-seconds", type=float, default=10.0, help="length of each film")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {name: SECTIONS[name](args) for name in args.sections}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
