"""Analysis-pass throughput and memory: decode + detect + keyframes + embed, default shot backend.

1. Speed: frames/s of the analysis pass (``ProbeVideo`` -> ``ShotSplitter`` -> ``Embedder``) divided by
   frames/s of a bare PyAV decode of the same file scaled to the same analysis size (same interpolation,
   same decoder threads). Both are timed in this run, interleaved, ``--repeats`` times; medians are reported.
   Target: >= 0.8.
2. Memory: peak RSS (``ru_maxrss``) of the analysis pass on a long 720p video divided by peak RSS on a short
   one, each in a fresh subprocess. Target: <= 1.2.

Test videos are cheap synthetic 720p films (textured shots panning, hard cuts every 2-8 s, x264 ultrafast),
cached under the temp dir. Run::

    .venv/bin/python benchmarks/throughput.py                      # 3 min speed film, 3 vs 30 min memory
    .venv/bin/python benchmarks/throughput.py --long-minutes 10    # quicker memory ratio
    .venv/bin/python benchmarks/throughput.py --skip-memory
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.config import CurateConfig  # noqa: E402
from curation.embed import Embedder  # noqa: E402
from curation.records import VideoRecord  # noqa: E402
from curation.shots import ShotSplitter  # noqa: E402
from curation.stage import VideoUnit, run_stage  # noqa: E402
from curation.video import ProbeVideo, analysis_size  # noqa: E402

log = logging.getLogger("throughput")

SIZE = (1280, 720)
FPS = 24


def cheap_film(path: Path, minutes: float, size: tuple[int, int] = SIZE, fps: int = FPS, seed: int = 0) -> Path:
    """A synthetic film of textured panning shots with hard cuts, encoded fast; cached at ``path``."""
    if path.exists():
        return path
    import cv2
    import imageio_ffmpeg

    rng = np.random.default_rng(seed)
    w, h = size
    n = int(minutes * 60 * fps)
    tmp = path.with_suffix(".part.mp4")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"),
        *("-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "ultrafast"),
        *("-crf", "23", "-pix_fmt", "yuv420p", str(tmp)),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    bases = []
    for k in range(12):  # a few distinct textured worlds, twice the frame size so the camera can pan
        field = cv2.resize(rng.random((9, 16, 3), dtype=np.float32), (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
        detail = rng.normal(0, 0.08, (2 * h, 2 * w, 1)).astype(np.float32)
        tint = np.array([np.cos(k), np.cos(k + 2.1), np.cos(k + 4.2)], np.float32) * 0.25
        bases.append((np.clip(field + detail + tint, 0, 1) * 255).astype(np.uint8))
    t, cuts = 0, 0
    t0 = time.perf_counter()
    while t < n:
        length = min(n - t, int(rng.uniform(2.0, 8.0) * fps))
        base = bases[cuts % len(bases)]
        x, y = rng.integers(0, w // 2), rng.integers(0, h // 2)
        dx, dy = rng.uniform(-3, 3), rng.uniform(-2, 2)
        for k in range(length):
            xi = int(np.clip(x + dx * k, 0, w - 1))
            yi = int(np.clip(y + dy * k, 0, h - 1))
            proc.stdin.write(np.ascontiguousarray(base[yi : yi + h, xi : xi + w]).tobytes())
        t += length
        cuts += 1
        if cuts % 50 == 0:
            log.info("%s: %d/%d frames (%.0f s)", path.name, t, n, time.perf_counter() - t0)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {tmp}")
    tmp.rename(path)
    return path


def bare_decode(path: Path, size: tuple[int, int], threads: int) -> tuple[int, float]:
    """(frames, seconds) of a bare PyAV decode scaled to ``size`` as RGB arrays."""
    import av

    t0 = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for frame in container.decode(stream):
            frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
            n += 1
    return n, time.perf_counter() - t0


def analysis_pass(path: Path, stages: list) -> tuple[int, float, int]:
    """(frames, seconds, shots) of probe -> shots -> embed on ``path``."""
    t0 = time.perf_counter()
    units = [VideoUnit(VideoRecord(video_id="", uri=str(path)))]
    for stage in stages:
        units = [r for u in units for r in run_stage(stage, u)]
        if not units or not isinstance(units[0], VideoUnit):
            raise RuntimeError(f"{stage.name} rejected {path}: {units}")
    seconds = time.perf_counter() - t0
    unit = units[0]
    return unit.shots[-1].end_frame, seconds, len(unit.shots)


def make_stages(config: CurateConfig) -> list:
    return [ProbeVideo(config), ShotSplitter(config), Embedder(config)]


def rss_child(path: str) -> None:
    """Run the analysis pass once in this process and print its peak RSS (KiB) as JSON."""
    config = CurateConfig.model_validate({"embed": {"backend": "fallback"}})
    frames, seconds, shots = analysis_pass(Path(path), make_stages(config))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"frames": frames, "seconds": seconds, "shots": shots, "maxrss_kib": peak}))


def measure_rss(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed-minutes", type=float, default=3.0, help="length of the film timed for speed")
    ap.add_argument("--short-minutes", type=float, default=3.0, help="short film of the memory ratio")
    ap.add_argument("--long-minutes", type=float, default=30.0, help="long film of the memory ratio")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of each of decode and analysis")
    ap.add_argument("--skip-memory", action="store_true", help="only the speed ratio")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "filmweaver-bench"), help="film cache")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.rss_child:
        logging.getLogger().setLevel(logging.WARNING)
        rss_child(args.rss_child)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def film(minutes: float) -> Path:
        return cheap_film(cache / f"throughput-{minutes:g}m-{SIZE[0]}x{SIZE[1]}.mp4", minutes)

    config = CurateConfig.model_validate({"embed": {"backend": "fallback"}})
    stages = make_stages(config)
    speed_film = film(args.speed_minutes)
    size = analysis_size(*SIZE, config.video.analysis_short_side)
    threads = config.video.decode_threads
    log.info("speed: %s at %dx%d, backend %s, %d cores", speed_film.name, *size, stages[1].backend, os.cpu_count())
    bare_decode(speed_film, size, threads)  # warm the page cache
    decode_fps, pass_fps = [], []
    shots = 0
    for r in range(args.repeats):
        n, s = bare_decode(speed_film, size, threads)
        decode_fps.append(n / s)
        n2, s2, shots = analysis_pass(speed_film, stages)
        pass_fps.append(n2 / s2)
        log.info("repeat %d: bare decode %.1f fps, analysis pass %.1f fps", r, n / s, n2 / s2)
    d, p = statistics.median(decode_fps), statistics.median(pass_fps)
    print(f"film: {speed_film.name} ({n} frames, {shots} shots), analysis size {size[0]}x{size[1]}")
    print(f"bare PyAV decode: {d:.1f} frames/s   analysis pass: {p:.1f} frames/s   ratio: {p / d:.3f}")
    if args.skip_memory:
        return
    short, long_ = film(args.short_minutes), film(args.long_minutes)
    a, b = measure_rss(short), measure_rss(long_)
    for name, m in (("short", a), ("long", b)):
        print(
            f"{name}: {m['frames']} frames, {m['shots']} shots, {m['seconds']:.1f} s, "
            f"peak RSS {m['maxrss_kib'] / 1024:.1f} MiB"
        )
    ratio = b["maxrss_kib"] / a["maxrss_kib"]
    print(f"peak RSS ratio {args.long_minutes:g} min / {args.short_minutes:g} min: {ratio:.3f}")


if __name__ == "__main__":
    main()
