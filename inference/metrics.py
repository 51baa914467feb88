"""Evaluation of generated stories: FilmWeaver's consistency and text alignment, StreamingT2V's SCuts.

- Overall consistency: mean cosine similarity of CLIP image embeddings over all pairs of keyframes that
  belong to *different* shots (1.0 for identical frames).
- Character consistency: the same over crops of one character (boxes on keyframes), averaged over characters.
- Text alignment: mean cosine similarity of each shot's prompt (CLIP text) with its keyframes.
- SCuts: scene cuts found by PySceneDetect's adaptive detector inside each generated shot, summed over the
  story's shots (a shot should contain none).
Similarities are reported on the raw cosine scale (-1..1); the paper's tables multiply by 100.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from curation.errors import ModelUnavailable

log = logging.getLogger(__name__)

METRICS = ("overall_consistency", "character_consistency", "text_alignment", "scuts")


def cross_group_similarity(groups: list[np.ndarray]) -> float | None:
    """Mean cosine over pairs of L2-normalised rows from different groups; None with fewer than 2 groups."""
    groups = [g for g in groups if len(g)]
    sims = [float(x @ y) for i, a in enumerate(groups) for b in groups[i + 1 :] for x in a for y in b]
    return float(np.mean(sims)) if sims else None


def overall_consistency(embedder, keyframes: list[list[np.ndarray]]) -> float | None:
    """Pairwise CLIP similarity of keyframes across shots (``keyframes[s]`` are RGB uint8 frames of shot s)."""
    return cross_group_similarity([embedder.embed_images(frames) for frames in keyframes])


def crop_box(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop of an RGB frame by a relative box (x0, y0, x1, y1) in 0..1 (at least one pixel)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    left, top = min(int(x0 * w), w - 1), min(int(y0 * h), h - 1)
    right, bottom = max(left + 1, int(round(x1 * w))), max(top + 1, int(round(y1 * h)))
    return np.ascontiguousarray(image[top:bottom, left:right])


def character_consistency(embedder, crops: dict[str, list[tuple[int, np.ndarray]]]) -> float | None:
    """Mean over characters of the cross-shot CLIP similarity of their crops (``name -> [(shot, crop)]``)."""
    scores = []
    for name, items in crops.items():
        shots = sorted({s for s, _ in items})
        groups = [embedder.embed_images([c for s2, c in items if s2 == s]) for s in shots]
        score = cross_group_similarity(groups)
        if score is not None:
            scores.append(score)
        else:
            log.info("character %r appears in fewer than two shots; not scored", name)
    return float(np.mean(scores)) if scores else None


def text_alignment(embedder, prompts: list[str], keyframes: list[list[np.ndarray]]) -> float | None:
    """Mean CLIP text-image cosine of each shot's prompt with its keyframes."""
    sims = []
    for prompt, frames in zip(prompts, keyframes):
        if frames:
            sims.extend((embedder.embed_images(frames) @ embedder.embed_texts([prompt])[0]).tolist())
    return float(np.mean(sims)) if sims else None


def count_cuts(video_path: str, adaptive_threshold: float = 3.0, min_scene_len: int = 4) -> int:
    """Cuts PySceneDetect's AdaptiveDetector finds in a video (PyAV backend)."""
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    manager = SceneManager()
    manager.add_detector(AdaptiveDetector(adaptive_threshold=adaptive_threshold, min_scene_len=min_scene_len))
    manager.detect_scenes(open_video(video_path, backend="pyav"))
    return len(manager.get_cut_list())


@dataclass
class StoryResult:
    """Scores of one story (None where not measurable)."""

    name: str
    shots: int
    overall_consistency: float | None = None
    character_consistency: float | None = None
    text_alignment: float | None = None
    scuts: int = 0
    extra: dict = field(default_factory=dict)


def evaluate_session(session_dir: str, embedder, min_scene_len: int = 4) -> StoryResult:
    """Scores of a story session folder written by ``filmweaver sample`` (keyframes: one per round)."""
    rounds = []
    r = 0
    while os.path.isfile(path := os.path.join(session_dir, "rounds", f"{r:03d}", "round.json")):
        with open(path) as f:
            rounds.append(json.load(f))
        r += 1
    with open(os.path.join(session_dir, "session.json")) as f:
        specs = json.load(f)["rounds"]
    n_shots = 1 + max((rec["shot"] for rec in rounds), default=-1)
    keyframes: list[list[np.ndarray]] = [[] for _ in range(n_shots)]
    prompts = [""] * n_shots
    crops: dict[str, list[tuple[int, np.ndarray]]] = {}
    for rec in rounds:
        image = np.asarray(
            Image.open(os.path.join(session_dir, "rounds", f"{rec['round']:03d}", "keyframe.png")).convert("RGB")
        )
        keyframes[rec["shot"]].append(image)
        prompts[rec["shot"]] = prompts[rec["shot"]] or rec["prompt"]
        for name, box in specs[rec["round"]].get("characters", {}).items():
            crops.setdefault(name, []).append((rec["shot"], crop_box(image, box)))
    try:
        alignment = text_alignment(embedder, prompts, keyframes)
    except ModelUnavailable as exc:  # the fallback embedder has no text tower
        log.warning("text alignment not measured: %s", exc)
        alignment = None
    videos = [os.path.join(session_dir, "shots", f"{s:03d}.mp4") for s in range(n_shots)]
    return StoryResult(
        name=os.path.basename(os.path.normpath(session_dir)),
        shots=n_shots,
        overall_consistency=overall_consistency(embedder, keyframes),
        character_consistency=character_consistency(embedder, crops) if crops else None,
        text_alignment=alignment,
        scuts=sum(count_cuts(v, min_scene_len=min_scene_len) for v in videos if os.path.isfile(v)),
    )


def results_table(results: list[StoryResult]) -> str:
    """A Markdown table like the paper's Table 1 (one row per story, then the mean)."""

    def fmt(v) -> str:
        return "-" if v is None else (str(v) if isinstance(v, int) else f"{100 * v:.2f}")

    head = "| story | shots | consistency (all) | consistency (char) | text alignment | SCuts |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for res in results:
        lines.append(f"| {res.name} | {res.shots} | " + " | ".join(fmt(getattr(res, m)) for m in METRICS) + " |")
    if len(results) > 1:
        cells = []
        for m in METRICS:
            vals = [getattr(res, m) for res in results if getattr(res, m) is not None]
            mean = float(np.mean(vals)) if vals else None
            cells.append(f"{mean:.2f}" if m == "scuts" else fmt(mean))
        lines.append(f"| **mean** | {sum(r.shots for r in results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
