"""End-to-end speed: ``filmweaver curate`` with the default settings vs ``scenedetect detect-adaptive split-video``.

The input is a long real-like video: the real-footage set's films (``benchmarks/real_footage.py``: real shots
joined by hard cuts, dissolves and fades) concatenated, looped to ``--minutes`` and scaled to 1280x720 at 25
frames/s (x264). Both commands run on the same file in fresh subprocesses, interleaved ``--repeats`` times;
the ratio of median wall times is reported (target: curate / split-video <= 0.5). ``filmweaver curate`` runs
its defaults (local engine, default shot backend, weight-free embedder unless CLIP weights are cached, no
captioner); ``split-video`` re-encodes every detected scene with FFmpeg, as a user of PySceneDetect would.

    .venv/bin/python benchmarks/curate_speed.py                 # 6.6 minutes of 720p, one repeat
    .venv/bin/python benchmarks/curate_speed.py --minutes 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_footage import OUT, build  # noqa: E402
from curation.video import probe  # noqa: E402


def long_video(minutes: float) -> Path:
    """The real-footage films looped to ``minutes`` at 1280x720, 25 frames/s; cached in the set's folder."""
    import imageio_ffmpeg

    path = OUT / f"long-{minutes:g}min-720p.mp4"
    if path.exists():
        return path
    films = build()
    parts = [f.path for kind in ("shots", "scenes") for f in films[kind]]
    listing = OUT / "long-list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    tmp = path.with_suffix(".part.mp4")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-f", "concat", "-safe", "0"),
        *("-i", str(listing), "-t", str(minutes * 60), "-vf", "scale=1280:720:flags=bicubic", "-r", "25"),
        *("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(tmp)),
    ]
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    return path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.6)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra curate --set KEY=VALUE")
    args = ap.parse_args()
    video = long_video(args.minutes)
    info = probe(str(video))
    print(f"input: {video.name}, {info.width}x{info.height}, {info.n_frames} frames, {info.duration_s:.1f} s")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    curate_s, split_s = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            sets = [x for kv in args.overrides for x in ("--set", kv)]
            cmd = [str(bin_dir / "filmweaver"), "curate", str(video), "--out", f"{tmp}/ds", *sets]
            curate_s.append(timed(cmd, env))
            cmd = [str(bin_dir / "scenedetect"), "-i", str(video), "-o", f"{tmp}/split", "-q"]
            split_s.append(timed([*cmd, "detect-adaptive", "split-video"], env))
            n_split = len(list(Path(f"{tmp}/split").glob("*.mp4")))
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"repeat {r}: curate {curate_s[-1]:.1f} s, scenedetect split-video {split_s[-1]:.1f} s ({n_split} clips)")
    c, s = statistics.median(curate_s), statistics.median(split_s)
    print(f"curate / split-video = {c:.1f} / {s:.1f} = **{c / s:.3f}** (target <= 0.5)")


if __name__ == "__main__":
    main()
