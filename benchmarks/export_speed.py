"""Clip export alone: ``cut_clips`` over the kept shots of a curate run, for several encoder settings.

The ranges are the kept shots of a finished ``filmweaver curate`` output (``OUT/manifests/shots.parquet``)
and the source is that run's video, so the work is exactly the export stage's. Each setting is
``threads:encoders:preset`` (x264 threads per clip, clips encoded at once, x264 preset); the settings run
one after another in this process, ``--repeats`` rounds interleaved. Reported per setting: median wall
seconds, CPU seconds of the process (every thread: decoder, writers, x264), clip bytes, failed checks, and a
digest of all clip bytes (equal digests: byte-identical clips).

    OUT=$(mktemp -d)/ds
    filmweaver curate bench_out/real_footage/long-sources-6.6min-720p.mp4 --out $OUT --engine local
    .venv/bin/python benchmarks/export_speed.py $OUT 2:1:veryfast 1:1:veryfast 1:2:veryfast 1:3:veryfast
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.config import CurateConfig  # noqa: E402
from curation.export import cut_clips  # noqa: E402
from curation.video import probe  # noqa: E402


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def kept_ranges(out: Path) -> tuple[str, list[tuple[int, int]]]:
    """The source uri and the ``[start, end)`` frame ranges of the kept shots of a one-video curate output."""
    shots = pq.read_table(out / "manifests" / "shots.parquet").to_pylist()
    videos = pq.read_table(out / "manifests" / "videos.parquet").to_pylist()
    if len(videos) != 1:
        raise SystemExit(f"{out}: {len(videos)} videos; give the output of a one-video run")
    return videos[0]["uri"], sorted((s["start_frame"], s["end_frame"]) for s in shots if s["kept"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="a one-video filmweaver curate output")
    ap.add_argument("settings", nargs="+", help="threads:encoders:preset, e.g. 1:2:veryfast")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    uri, ranges = kept_ranges(args.out)
    video = probe(uri)
    cfg = CurateConfig().export
    print(f"{uri}: {len(ranges)} kept shots, {sum(e - s for s, e in ranges)} frames, short side {cfg.short_side}")
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in args.settings}
    result: dict[str, str] = {}
    for _ in range(args.repeats):
        for setting in args.settings:
            threads, encoders, preset = setting.split(":")
            cpu0, t0 = _cpu_s(), time.perf_counter()
            clips = cut_clips(
                uri, video, ranges, cfg.short_side, cfg.crf, preset, cfg.verify_min_psnr, int(threads), int(encoders)
            )
            runs[setting].append((time.perf_counter() - t0, _cpu_s() - cpu0))
            data = [c.data or b"" for c in clips]
            digest = hashlib.sha1(b"".join(data)).hexdigest()[:12]
            failed = sum(c.failure is not None for c in clips)
            result[setting] = f"{sum(map(len, data)) / 1e6:.2f} MB, {failed} failed checks, digest {digest}"
    print("| threads:encoders:preset | wall s (median) | CPU s (median) | clips |")
    print("|---|---:|---:|---|")
    for setting, times in runs.items():
        wall = statistics.median(t for t, _ in times)
        cpu = statistics.median(c for _, c in times)
        print(f"| {setting} | {wall:.1f} | {cpu:.1f} | {result[setting]} |")


if __name__ == "__main__":
    main()
