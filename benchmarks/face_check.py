"""Cost of the scene filter's MTCNN face check per ``filters.face_threads``, with equal face counts.

Keyframes as the pipeline holds them: frames of a real video spread over its length, scaled to the analysis
size (``video.analysis_short_side``) and JPEG-encoded at ``keyframes.jpeg_quality``. ``SceneFilter.count_faces``
runs on them with each setting in turn, ``--reps`` rounds interleaved (so a change in the box's load hits
every setting alike): ``torch`` is the old way (one batch of 16 at a time on torch's own threads), a number
N is ``face_threads=N`` (N batches at once, one torch thread each; 0: torch's thread count). Printed:
milliseconds per keyframe (median over rounds) per setting, the ratio to the first, and whether every setting
found the same faces in every keyframe (the verdicts depend on nothing else).

    python benchmarks/face_check.py [VIDEO] [--keyframes 64] [--settings torch,1,0] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.config import CurateConfig  # noqa: E402
from curation.filters import SceneFilter  # noqa: E402
from curation.stage import Keyframe  # noqa: E402
from curation.video import analysis_size, iter_frames, probe  # noqa: E402

DEFAULT_VIDEO = ROOT / "bench_out" / "real_footage" / "long-sources-6.6min-720p.mp4"  # benchmarks/curate_speed.py


def keyframes(path: str, n: int, config: CurateConfig) -> list[Keyframe]:
    """``n`` frames spread over the video, at analysis size, JPEG-encoded as the shot splitter holds them."""
    video = probe(path)
    size = analysis_size(video.width, video.height, config.video.analysis_short_side)
    total = video.container_n_frames or int(video.duration_s * (video.fps or 0)) or n
    step = max(1, total // n)
    out = []
    for frame in iter_frames(path, size):
        if frame.index % step == 0:
            out.append(Keyframe.encode(frame.rgb, config.keyframes.jpeg_quality))
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(DEFAULT_VIDEO))
    parser.add_argument("--keyframes", type=int, default=64)
    parser.add_argument("--settings", default="torch,1,0", help="comma-separated: torch, or face_threads values")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    config = CurateConfig()
    config.filters.device = "cpu"
    keys = keyframes(args.video, args.keyframes, config)
    images = [k.rgb() for k in keys]
    stage = SceneFilter(config)
    stage.count_faces(images[:2])  # first call: one-off set-up
    settings = args.settings.split(",")
    ms: dict[str, list[float]] = {s: [] for s in settings}
    counts: dict[str, list[int]] = {}
    for _ in range(args.reps):
        for s in settings:
            t0 = time.perf_counter()
            counts[s] = torch_batches(stage, images) if s == "torch" else threads(stage, images, int(s))
            ms[s].append((time.perf_counter() - t0) * 1000 / len(images))
    stage.close()
    first = statistics.median(ms[settings[0]])
    print(f"{len(images)} keyframes of {Path(args.video).name} at {images[0].shape[1]}x{images[0].shape[0]}")
    for s in settings:
        med = statistics.median(ms[s])
        name = "torch threads" if s == "torch" else f"face_threads={s} ({stage.face_workers if s == '0' else s})"
        print(f"{name}: {med:.1f} ms/keyframe (rounds {[round(x) for x in ms[s]]}), {med / first:.2f}x")
    same = all(counts[s] == counts[settings[0]] for s in settings)
    print(f"faces found: {sum(counts[settings[0]])}; same counts in every keyframe for every setting: {same}")


def threads(stage: SceneFilter, images: list, n: int) -> list[int]:
    stage.config.face_threads = n
    return stage.count_faces(images)


def torch_batches(stage: SceneFilter, images: list, batch: int = 16) -> list[int]:
    """The face check before ``face_threads``: one batch at a time on torch's intra-op threads."""
    out = []
    for b in range(0, len(images), batch):
        _, probs = stage.mtcnn.detect(np.stack(images[b : b + batch]))
        out += [sum(1 for q in p if q is not None and q >= stage.config.face_min_prob) for p in probs]
    return out


if __name__ == "__main__":
    main()
