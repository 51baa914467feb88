"""The journal at archive scale: files written, ``finalize`` time and no-op reruns at 100 to 10,000 videos.

Synthetic parts (no decoding): each video has two scenes of two shots with small stand-in clips (~5 kB a
video), committed the way the Ray sink commits them, one part + one small shard per write task of 8 videos
(``--per-task``). ``max_bytes`` is scaled down with the samples (1 MB: about 25 write tasks' shards per
merged shard, as 1 GB is for 8 real videos of 5 MB). For each archive size:

- ``write``: the parts of every video, as write tasks leave them (files counted before finalize);
- ``finalize 1st``: the first finalize folds every part into the compacted journal and merges the shards;
- ``finalize +1 run``: a later run adds 8 write tasks (64 videos) and finalizes: the incremental cost;
- ``finalize no-op``: a rerun with nothing new;
- ``task journal read``: what a write task reads to skip its earlier attempt's videos (its own parts) against
  reading the whole journal (what every write task did before).

Times are CPU seconds of the benchmark process (``time.process_time``: I/O waits not counted, steady on a
shared box); the no-op reruns are wall seconds of whole CLI processes.

Then a no-op rerun of a real (tiny) curated output through the CLI, local and Ray engines, against the first
run (the Ray engine is not started when the journal says everything is done).

Run: ``.venv/bin/python benchmarks/journal_scale.py [--sizes 100 1000 10000] [--skip-cli]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from curation.finalize import finalize
from curation.journal import DatasetWriter, read_journal, recover
from curation.records import SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.samples import video_result
from curation.stage import Keyframe, SceneUnit, StageStats, VideoUnit

KEYFRAME = Keyframe.encode(np.full((24, 32, 3), 128, np.uint8), 80)


def synthetic_result(n: int, rng: np.random.Generator):
    """One video's records and samples: 2 scenes x 2 shots, ~5 kB of samples."""
    vid = f"v{n:020x}"
    video = VideoRecord(vid, f"/archive/{vid}.mp4", duration_s=60.0, fps_num=24, fps_den=1, width=64, height=48)
    unit = VideoUnit(video)
    scenes = []
    for c in range(2):
        shots = []
        for k in range(2):
            i = 2 * c + k
            shots.append(
                ShotRecord(shot_id(vid, i), vid, i, i * 24, i * 24 + 24, i, i + 1.0, scene_id=scene_id(vid, c))
            )
        unit.shots += shots
        scene = SceneRecord(scene_id(vid, c), vid, c, [s.shot_id for s in shots], shots[0].start_s, shots[-1].end_s)
        unit.scenes.append(scene)
        scenes.append(
            SceneUnit(
                scene,
                video,
                shots,
                keyframes=[KEYFRAME, KEYFRAME],
                embeddings=rng.standard_normal((2, 8)).astype(np.float32),
                clips=[rng.bytes(800), rng.bytes(800)],
            )
        )
    return video_result(unit, scenes, [], rejected=False)


def write_tasks(out: str, run: str, first_video: int, n_videos: int, per_task: int, max_bytes: int) -> None:
    rng = np.random.default_rng(first_video)
    for task, start in enumerate(range(first_video, first_video + n_videos, per_task)):
        writer = DatasetWriter(out, f"scenes-{run}-{task:05d}", max_bytes)
        for n in range(start, min(start + per_task, first_video + n_videos)):
            writer.add(synthetic_result(n, rng))
        writer.add_stats({"write": StageStats(per_task, per_task)})
        writer.close()


def count_files(out: str) -> int:
    return sum(len(files) for _, _, files in os.walk(out))


def timed(fn, *args, **kw) -> tuple[float, object]:
    """CPU seconds of this process spent in ``fn`` (steady on a shared, loaded box) and its result."""
    t0 = time.process_time()
    result = fn(*args, **kw)
    return time.process_time() - t0, result


def scale(n_videos: int, per_task: int, max_bytes: int) -> dict[str, float]:
    out = tempfile.mkdtemp(prefix="fw-journal-")
    try:
        info = {"engine": "bench", "config": {"shards": {"max_bytes": max_bytes, "prefix": "scenes"}}}
        t_write, _ = timed(write_tasks, out, "run1", 0, n_videos, per_task, max_bytes)
        files_before = count_files(out)
        prefix = f"scenes-run1-{(n_videos // per_task) // 2:05d}"
        t_own, own = timed(read_journal, out, prefix)
        t_all, _ = timed(read_journal, out)
        recover(out)
        t_first, run = timed(finalize, out, info)
        files_after = count_files(out)
        write_tasks(out, "run2", n_videos, 8 * per_task, per_task, max_bytes)
        recover(out)
        t_incr, _ = timed(finalize, out, info)
        recover(out)
        t_noop, run = timed(finalize, out, info)
        assert run["counts"]["videos"] == n_videos + 8 * per_task and len(own.finished) == per_task
        return {
            "videos": n_videos,
            "parts": -(-n_videos // per_task),
            "write_s": t_write,
            "files_before": files_before,
            "files_after": files_after,
            "shards_after": run["counts"]["shards"],
            "finalize_first_s": t_first,
            "finalize_incr_s": t_incr,
            "finalize_noop_s": t_noop,
            "task_read_own_s": t_own,
            "task_read_all_s": t_all,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def cli_noop(tmp: str) -> dict[str, float]:
    """Seconds of a first local run, then of no-op reruns with each engine, through the CLI."""
    from filmweaver_testing.films import make_film

    films = []
    for seed in (5, 6, 7, 8):
        path = os.path.join(tmp, f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
        films.append(path)
    settings = [
        "embed.backend=fallback",
        "video.analysis_short_side=96",
        "shots.backend=scenedetect",
        "export.short_side=96",
        "filters.faces=false",
    ]
    out = os.path.join(tmp, "out")
    env = {**os.environ, "RAY_TMPDIR": os.path.join(tmp, "ray"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)

    def curate(engine: str) -> float:
        cmd = [sys.executable, "-m", "pipelines.cli", "curate", *films, "--out", out, "--engine", engine]
        cmd += [a for s in settings for a in ("--set", s)]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        return time.perf_counter() - t0

    return {
        "first local run": curate("local"),
        "no-op rerun, local": curate("local"),
        "no-op rerun, ray": curate("ray"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--per-task", type=int, default=8, help="videos per write task (the Ray sink's default)")
    p.add_argument("--max-bytes", type=int, default=1_000_000)
    p.add_argument("--skip-cli", action="store_true", help="skip the no-op rerun through the CLI")
    args = p.parse_args()
    rows = [scale(n, args.per_task, args.max_bytes) for n in args.sizes]
    cols = [
        ("videos", "{:d}"),
        ("parts", "{:d}"),
        ("files_before", "{:d}"),
        ("files_after", "{:d}"),
        ("shards_after", "{:d}"),
        ("write_s", "{:.2f}"),
        ("finalize_first_s", "{:.3f}"),
        ("finalize_incr_s", "{:.3f}"),
        ("finalize_noop_s", "{:.3f}"),
        ("task_read_own_s", "{:.4f}"),
        ("task_read_all_s", "{:.4f}"),
    ]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---:|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f.format(r[c]) for c, f in cols) + " |")
    if not args.skip_cli:
        with tempfile.TemporaryDirectory(prefix="fw-noop-") as tmp:
            for k, v in cli_noop(tmp).items():
                print(f"{k}: {v:.2f} s")


if __name__ == "__main__":
    main()
