"""Cost of the decode-truth pass: ``curation.video.FrameDecoder`` (stream choice, frame counting, monotonic
times, damage report) against the bare PyAV decode of ``benchmarks/throughput.py``, same file, same analysis
size, interleaved repeats; prints frames/s of each and the ratio of medians. Run::

    .venv/bin/python benchmarks/decode_truth.py FILM.mp4 [--repeats 3] [--size 456x256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import bare_decode  # noqa: E402

from curation.video import FrameDecoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("film", help="video file to decode")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of each decode")
    ap.add_argument("--size", default="456x256", help="analysis size WxH")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    bare, ours = [], []
    for _ in range(args.repeats):
        n, seconds = bare_decode(Path(args.film), size, 0)
        bare.append(n / seconds)
        t0 = time.perf_counter()
        k = sum(1 for _ in FrameDecoder(args.film, size))
        ours.append(k / (time.perf_counter() - t0))
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"bare PyAV decode: {[round(x, 1) for x in bare]} frames/s")
    print(f"FrameDecoder:     {[round(x, 1) for x in ours]} frames/s")
    print(f"ratio of medians: {ratio:.3f}")


if __name__ == "__main__":
    main()
