"""Ray executor overhead and CPU scaling on ~10 minutes of synthetic video, measured in one run.

    .venv/bin/python benchmarks/ray_overhead.py [--minutes 10] [--out bench_out/ray_overhead]

Reports wall time of the Ray executor with 1 CPU ÷ the local executor (the overhead of Ray itself: task
scheduling, pickling units between stages, worker start-up; target ≤ 1.25), and throughput (seconds of video
per wall second) of the Ray executor with 1 vs 2 CPUs. ``ray.init`` is timed apart and not counted.
Default stages with the weight-free fallback embedder (no CLIP weights offline).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time

from curation.config import load_config
from filmweaver_testing.films import make_film
from pipelines.curate import run_ray
from pipelines.local import run_local

SETTINGS = ["embed.backend=fallback"]
FILM_MINUTES = 1.0  # each film lasts about a minute; a run curates ``--minutes`` of them


def films(folder: str, minutes: float) -> list[str]:
    """Synthetic films of ~1 minute each (cached in ``folder``)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for seed in range(max(1, round(minutes / FILM_MINUTES))):
        path = os.path.join(folder, f"film{seed:02d}.mp4")
        if not os.path.exists(path):
            # 8 scenes of 3-5 shots of 1-2.5 s: about a minute
            make_film(path, seed=100 + seed, n_scenes=8, shots_per_scene=(3, 5), shot_seconds=(1, 2.5), size=(640, 360))
        paths.append(path)
    return paths


def timed(fn, out: str) -> tuple[float, object]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = fn(out)
    return time.perf_counter() - t0, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of synthetic video")
    p.add_argument("--out", default="bench_out/ray_overhead")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    config = load_config(None, SETTINGS)
    inputs = films(os.path.join(args.out, "films"), args.minutes)
    local_s, local = timed(lambda o: run_local(inputs, o, config), os.path.join(args.out, "local"))
    video_s = local.hours * 3600
    results = {"video_seconds": round(video_s, 1), "local_s": round(local_s, 2)}
    for cpus in (1, 2):
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        results[f"ray_init_{cpus}cpu_s"] = round(time.perf_counter() - t0, 2)
        try:
            wall, summary = timed(lambda o: run_ray(inputs, o, config), os.path.join(args.out, f"ray{cpus}"))
        finally:
            ray.shutdown()
        assert summary.scenes_written == local.scenes_written, "the engines disagree"
        results[f"ray_{cpus}cpu_s"] = round(wall, 2)
        results[f"ray_{cpus}cpu_video_s_per_s"] = round(video_s / wall, 2)
    results["local_video_s_per_s"] = round(video_s / local_s, 2)
    results["overhead_ray1_over_local"] = round(results["ray_1cpu_s"] / local_s, 3)
    results["overhead_ray2_over_local"] = round(results["ray_2cpu_s"] / local_s, 3)
    results["speedup_2cpu_over_1cpu"] = round(results["ray_1cpu_s"] / results["ray_2cpu_s"], 3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
