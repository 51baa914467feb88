"""Calibrate the shot filters on real footage: a labelled set built from ``real_sources.real_videos()``.

Classes (every clip is encoded with H.264 at its source's frame rate, at most 640 px wide):

- ``real``: 3 s segments of real footage at several offsets of every source; split by the old frame
  difference into ``calm`` (mean absolute luma difference of consecutive frames < 3.0 on 0-255, per shot:
  the shots the old ``static`` filter, threshold 0.3, put at risk) and ``moving``;
- ``still``: one real frame held 3 s; ``slideshow``: four real frames of different sources, 1 s each;
- ``text``: a real segment with burnt-in text drawn on every frame (subtitle lines, a top caption, a corner
  logo; OpenCV's Hershey fonts, white with a black outline);
- ``black``: 2 s of black; ``fade``: a real frame fading to black over 2 s.

Each clip goes through the analysis pass (probe + shot splitter, which measures flow and frozen) and the
shot filter (keyframe scores, verdicts) with the default config (``--set`` to try others). Reported per
class: how many shots each verdict got; the targets: calm shots kept >= 95%, stills and slideshows
rejected >= 95%, text shots flagged (``text_area > filters.max_text_area``) >= 90%, and the cost of all
scores divided by the analysis pass <= 0.15, in one run. The analysis pass is what the pipeline does to
every video before filtering: probe, the shot splitter's decode/detection/keyframes (its motion-score time
taken out) and the keyframe embedding with the default embedder's architecture (open_clip ViT-B-32, here
with random weights: the same cost, no download; ``--fallback-embedder`` uses the weight-free one).

    python benchmarks/filters_real.py [--out bench_out/filters_real] [--set filters.max_frozen=0.8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_sources import real_videos  # noqa: E402
from curation.config import CurateConfig, load_config  # noqa: E402
from curation.embed import Embedder  # noqa: E402
from curation.filters import ShotFilter  # noqa: E402
from curation.shots import ShotSplitter  # noqa: E402
from curation.stage import VideoUnit  # noqa: E402
from curation.video import probe  # noqa: E402

SEGMENT_S = 3.0
MAX_WIDTH = 640
CALM_DIFF = 3.0  # old frame-difference score (0-255) below which a real shot counts as calm
NEAR_STILL_DIFF = 0.1  # ... and below which it is itself near-still (reported apart, no target)
TEXTS = ["We have to leave tonight.", "I told you, it is not mine!", "BREAKING NEWS  live", "Chapter 3"]


def _read(path: Path, start_s: float, seconds: float) -> tuple[list[np.ndarray], float]:
    """RGB frames of ``[start_s, start_s + seconds)`` (scaled to at most MAX_WIDTH) and the frame rate."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in c.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else len(frames) / fps
            if t < start_s:
                continue
            if t >= start_s + seconds:
                break
            rgb = frame.to_ndarray(format="rgb24")
            if rgb.shape[1] > MAX_WIDTH:
                h = round(rgb.shape[0] * MAX_WIDTH / rgb.shape[1]) // 2 * 2
                rgb = cv2.resize(rgb, (MAX_WIDTH, h), interpolation=cv2.INTER_AREA)
            frames.append(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
    return frames, fps


def _write(path: Path, frames: list[np.ndarray], fps: float) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=round(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _old_motion(frames: list[np.ndarray]) -> float:
    g = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames]
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(g, g[1:])])) if len(g) > 1 else 0.0


def _draw_text(frame: np.ndarray, k: int) -> np.ndarray:
    out = frame.copy()
    h, w = out.shape[:2]
    font = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX][k % 3]
    scale = w / 640 * [0.9, 0.7, 1.1][k % 3]
    kind = k % 3
    text = TEXTS[k % len(TEXTS)]
    if kind == 0:  # two subtitle lines at the bottom
        lines, y0 = [text, TEXTS[(k + 1) % len(TEXTS)]], h - int(60 * scale)
    elif kind == 1:  # a caption at the top
        lines, y0 = [text], int(40 * scale)
    else:  # a corner logo and a subtitle
        lines, y0 = ["FW TV", text], h - int(30 * scale)
    for i, line in enumerate(lines):
        (tw, th), _ = cv2.getTextSize(line, font, scale, 2)
        x = 12 if (kind == 2 and i == 0) else (w - tw) // 2
        y = int(12 + th + 6) if (kind == 2 and i == 0) else y0 + i * int(th * 1.6)
        cv2.putText(out, line, (x, y), font, scale, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(out, line, (x, y), font, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def build_set(folder: Path) -> list[dict]:
    """Write the calibration clips into ``folder``; returns ``[{path, label, source}]`` (cached in set.json)."""
    listing = folder / "set.json"
    if listing.exists():
        return json.loads(listing.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    items: list[dict] = []
    stills: list[np.ndarray] = []
    sources = {k: v for k, v in real_videos().items() if k != "megamind_damaged"}
    for name, path in sources.items():
        duration = probe(str(path)).duration_s
        offsets = np.arange(0.0, max(duration - SEGMENT_S, 0.0) + 1e-6, max(SEGMENT_S, duration / 6))[:6]
        for j, start in enumerate(offsets):
            frames, fps = _read(path, float(start), SEGMENT_S)
            if len(frames) < 8:
                continue
            label = "calm" if _old_motion(frames) < CALM_DIFF else "moving"
            clip = folder / f"{label}_{name}_{j}.mp4"
            _write(clip, frames, fps)
            items.append({"path": str(clip), "label": label, "source": name})
            if j < 2:
                mid = frames[len(frames) // 2]
                still = folder / f"still_{name}_{j}.mp4"
                _write(still, [mid] * int(3 * round(fps)), fps)
                items.append({"path": str(still), "label": "still", "source": name})
                stills.append(mid)
                text = folder / f"text_{name}_{j}.mp4"
                _write(text, [_draw_text(f, j + len(items)) for f in frames], fps)
                items.append({"path": str(text), "label": "text", "source": name})
    rng = np.random.default_rng(0)
    for k in range(8):
        picks = rng.choice(len(stills), 4, replace=False)
        size = (stills[picks[0]].shape[1], stills[picks[0]].shape[0])
        frames = [cv2.resize(stills[i], size) for i in picks for _ in range(25)]
        clip = folder / f"slideshow_{k}.mp4"
        _write(clip, frames, 25)
        items.append({"path": str(clip), "label": "slideshow", "source": "mixed"})
    for k in range(4):
        base = stills[k * 3 % len(stills)]
        black = folder / f"black_{k}.mp4"
        _write(black, [np.zeros_like(base)] * 50, 25)
        items.append({"path": str(black), "label": "black", "source": "-"})
        fade = folder / f"fade_{k}.mp4"
        _write(fade, [(base * (1 - i / 49)).astype(np.uint8) for i in range(50)], 25)
        items.append({"path": str(fade), "label": "fade", "source": "-"})
    listing.write_text(json.dumps(items, indent=1))
    return items


def random_clip_checkpoint(folder: Path) -> str:
    """A ViT-B-32 open_clip checkpoint with random weights: the default embedder's architecture and cost
    (no download; its embeddings are meaningless, only its time is used)."""
    path = folder / "vit_b_32_random.pt"
    if not path.exists():
        import open_clip
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return str(path)


def run(items: list[dict], config: CurateConfig) -> dict:
    """Analysis pass (probe, shot splitter, embedder) + shot filter on every clip; verdict counts per class
    and the cost of the scores."""
    import torch

    torch.set_num_threads(1)  # one thread per worker for every model, as a Ray worker with one CPU runs them
    config.filters.faces = False
    config.filters.mode = "score"  # the same verdicts, and text_area measured on every shot (text_hits)
    splitter, embedder, shot_filter = ShotSplitter(config), Embedder(config), ShotFilter(config)
    verdicts: dict[str, Counter] = defaultdict(Counter)
    text_hits: Counter = Counter()  # shots whose text_area passes max_text_area, whatever their first reason
    scores: dict[str, list[dict]] = defaultdict(list)
    t_pass = t_motion = t_key = t_embed = 0.0
    for item in items:
        t0 = time.perf_counter()
        video = probe(item["path"])
        unit = VideoUnit(video)
        before = splitter.score_seconds
        unit = splitter.process(unit)
        t_pass += time.perf_counter() - t0
        t_motion += splitter.score_seconds - before
        t0 = time.perf_counter()
        (unit,) = embedder.process_batch([unit])
        t_embed += time.perf_counter() - t0
        before = shot_filter.score_seconds
        filtered = shot_filter.process(unit)
        t_key += shot_filter.score_seconds - before
        if not isinstance(filtered, VideoUnit):  # the whole clip rejected (too small)
            verdicts["skipped"][f"{Path(item['path']).name}: {filtered.reason}"] += 1
            continue
        for shot in filtered.shots:
            label = item["label"]
            if label in ("calm", "moving"):  # per shot, by the old frame-difference score (ShotRecord.motion)
                label = "calm" if shot.motion < CALM_DIFF else "moving"
                if shot.motion < NEAR_STILL_DIFF:  # a source that is a still itself (a filmed static screen)
                    label = "near-still"
            verdicts[label][shot.verdict or "kept"] += 1
            limit = config.filters.max_text_area
            text_hits[label] += shot.text_area is not None and limit is not None and shot.text_area > limit
            scores[label].append(
                {
                    "clip": Path(item["path"]).name,
                    "flow": shot.flow,
                    "frozen": shot.frozen,
                    "text": shot.text_area,
                    "old_motion": shot.motion,
                    "verdict": shot.verdict,
                }
            )
    analysis = t_pass - t_motion + t_embed
    return {
        "verdicts": {k: dict(v) for k, v in sorted(verdicts.items())},
        "seconds": {
            "analysis_pass": analysis,
            "shot_pass": t_pass - t_motion,
            "embedding": t_embed,
            "motion_scores": t_motion,
            "keyframe_scores": t_key,
        },
        "cost_ratio": (t_motion + t_key) / analysis,
        "cost_ratio_without_embedding": (t_motion + t_key) / (t_pass - t_motion),
        "text_flagged": {k: [text_hits[k], sum(c.values())] for k, c in verdicts.items() if k != "skipped"},
        "scores": scores,
    }


def _rate(counts: dict, keys: set[str] | None = None, exclude: set[str] | None = None) -> tuple[float, int]:
    n = sum(counts.values())
    if keys is not None:
        hit = sum(v for k, v in counts.items() if k in keys)
    else:
        hit = sum(v for k, v in counts.items() if k not in (exclude or set()))
    return (hit / n if n else float("nan")), n


def report(result: dict) -> str:
    v = result["verdicts"]
    calm, _ = _rate(v.get("calm", {}), exclude={"frozen", "low-motion", "text-overlay", "blurry"})
    moving, _ = _rate(v.get("moving", {}), {"kept"})
    still = _rate(v.get("still", {}), exclude={"kept"})
    slides = _rate(v.get("slideshow", {}), exclude={"kept"})
    hits, n_text = result["text_flagged"].get("text", [0, 0])
    text = (hits / n_text if n_text else float("nan")), n_text
    false_text = {k: f"{h}/{n}" for k, (h, n) in result["text_flagged"].items() if k != "text" and h}
    lines = ["| class | shots | verdicts |", "|---|---|---|"]
    lines += [
        f"| {k} | {sum(c.values())} | {', '.join(f'{r} {n}' for r, n in sorted(c.items()))} |" for k, c in v.items()
    ]
    s = result["seconds"]
    lines += [
        "",
        f"- calm real shots kept by the score filters (frozen, motion, text, sharpness): {calm:.1%} (target >= 95%); "
        f"moving real shots kept (all filters): {moving:.1%}",
        f"- stills rejected: {still[0]:.1%} of {still[1]}; slideshow shots rejected: {slides[0]:.1%} of {slides[1]} "
        "(target >= 95%)",
        f"- text-overlay shots flagged (text_area > max_text_area): {text[0]:.1%} of {text[1]} (target >= 90%); "
        f"other shots flagged: {false_text or 'none'}",
        f"- cost of all scores / analysis pass: {result['cost_ratio']:.3f} (target <= 0.15): motion "
        f"{s['motion_scores']:.1f} s + keyframe {s['keyframe_scores']:.1f} s over {s['analysis_pass']:.1f} s "
        f"(probe + shot splitting {s['shot_pass']:.1f} s + CLIP embedding {s['embedding']:.1f} s); without the "
        f"embedding: {result['cost_ratio_without_embedding']:.3f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "filters_real")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--fallback-embedder", action="store_true", help="embed with the weight-free fallback instead of ViT-B-32"
    )
    args = parser.parse_args()
    items = build_set(args.out / "clips")
    print(f"calibration set: {Counter(i['label'] for i in items)}")
    clip = (
        []
        if args.fallback_embedder
        else ["embed.backend=open_clip", f"embed.pretrained={random_clip_checkpoint(args.out)}"]
    )
    config = load_config(None, ["shots.backend=scenedetect", "embed.device=cpu", *clip, *args.overrides])
    result = run(items, config)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(report(result))


if __name__ == "__main__":
    main()
