"""Evaluation of generated stories: FilmWeaver's consistency and text alignment, StreamingT2V's SCuts.

- Overall consistency: mean cosine similarity of CLIP image embeddings over all pairs of keyframes that
  belong to *different* shots (1.0 for identical frames).
- Character consistency: the same over character crops, each crop matched to its most similar crop in every
  other shot. Characters are localised automatically on each round's keyframe: faces found by MTCNN
  (facenet-pytorch, its weights ship with the package), boxes enlarged to take in hair and shoulders. Boxes
  named in the story script (``characters``) replace the detector for their round (identities known).
  Person boxes from a body detector are not used (no detector weights are available offline).
- Character text alignment: mean CLIP cosine of each character crop with its round's prompt.
- Text alignment: mean CLIP cosine of each round's keyframe with that round's own prompt (an extension
  round is scored against its own prompt, not the shot's first one).
- SCuts: scene cuts found by PySceneDetect's AdaptiveDetector with its default settings (as StreamingT2V
  reports; ``min_scene_len`` can be set, the old value here was 4) inside each generated shot, summed over
  the story's shots (a shot should contain none).
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

LOCATED = "(located)"  # name of the automatically localised characters
METRICS = ("overall_consistency", "character_consistency", "character_text_alignment", "text_alignment", "scuts")


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


def matched_similarity(groups: list[np.ndarray]) -> float | None:
    """Mean over every row x of every group of max over rows y of each *other* group of x @ y (L2-normalised
    rows): each crop compared with its best match in each other shot, since a shot may show several
    characters; None with fewer than 2 non-empty groups."""
    groups = [g for g in groups if len(g)]
    sims = [float((a @ b.T).max(1).mean()) for i, a in enumerate(groups) for j, b in enumerate(groups) if i != j]
    return float(np.mean(sims)) if sims else None


def character_consistency(embedder, crops: dict[str, list[tuple[int, np.ndarray]]]) -> float | None:
    """Mean over characters of the cross-shot matched CLIP similarity of their crops (``name -> [(shot,
    crop)]``; automatically localised characters come under one name, matched crop to crop)."""
    scores = []
    for name, items in crops.items():
        shots = sorted({s for s, _ in items})
        groups = [embedder.embed_images([c for s2, c in items if s2 == s]) for s in shots]
        score = matched_similarity(groups)
        if score is not None:
            scores.append(score)
        else:
            log.info("character %r appears in fewer than two shots; not scored", name)
    return float(np.mean(scores)) if scores else None


def character_text_alignment(embedder, crops: list[tuple[str, np.ndarray]]) -> float | None:
    """Mean CLIP cosine of each character crop with the prompt of its round (``[(prompt, crop)]``)."""
    if not crops:
        return None
    prompts = sorted({p for p, _ in crops})
    texts = dict(zip(prompts, embedder.embed_texts(prompts)))
    images = embedder.embed_images([c for _, c in crops])
    return float(np.mean([img @ texts[p] for img, (p, _) in zip(images, crops)]))


class FaceLocator:
    """Character boxes on an RGB frame: faces found by MTCNN (facenet-pytorch) with probability at least
    ``min_prob``, each enlarged by ``margin`` of its size on every side and clipped to the frame; returned
    as relative boxes (x0, y0, x1, y1) in 0..1, most probable first."""

    def __init__(self, min_prob: float = 0.9, min_face_size: int = 20, margin: float = 0.4, device: str = "cpu"):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)
        self.min_prob, self.margin = min_prob, margin

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        boxes, probs = self.mtcnn.detect(Image.fromarray(image))
        if boxes is None:
            return []
        h, w = image.shape[:2]
        out = []
        for (x0, y0, x1, y1), p in sorted(zip(boxes, probs), key=lambda bp: -bp[1]):
            if p < self.min_prob:
                continue
            mx, my = self.margin * (x1 - x0), self.margin * (y1 - y0)
            out.append(
                (max(0.0, (x0 - mx) / w), max(0.0, (y0 - my) / h), min(1.0, (x1 + mx) / w), min(1.0, (y1 + my) / h))
            )
        return out


def text_alignment(embedder, prompts: list[str], keyframes: list[list[np.ndarray]]) -> float | None:
    """Mean CLIP text-image cosine of each shot's prompt with its keyframes."""
    sims = []
    for prompt, frames in zip(prompts, keyframes):
        if frames:
            sims.extend((embedder.embed_images(frames) @ embedder.embed_texts([prompt])[0]).tolist())
    return float(np.mean(sims)) if sims else None


def count_cuts(video_path: str, min_scene_len: int | None = None) -> int:
    """Cuts PySceneDetect's AdaptiveDetector finds in a video (PyAV backend), with the detector's default
    settings as StreamingT2V's SCuts; ``min_scene_len`` (frames) overrides its default (15)."""
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    manager = SceneManager()
    manager.add_detector(AdaptiveDetector() if min_scene_len is None else AdaptiveDetector(min_scene_len=min_scene_len))
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
    character_text_alignment: float | None = None
    extra: dict = field(default_factory=dict)


def evaluate_session(session_dir: str, embedder, min_scene_len: int | None = None, locator=None) -> StoryResult:
    """Scores of a story session folder written by ``filmweaver sample`` (keyframes: one per round).

    ``locator(frame) -> [(x0, y0, x1, y1)]`` finds characters on keyframes (default ``FaceLocator``); rounds
    with ``characters`` boxes in the script use those instead."""
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
    crops: dict[str, list[tuple[int, np.ndarray]]] = {}
    prompted: list[tuple[str, np.ndarray]] = []
    round_keys: list[np.ndarray] = []
    located = 0
    for rec in rounds:
        image = np.asarray(
            Image.open(os.path.join(session_dir, "rounds", f"{rec['round']:03d}", "keyframe.png")).convert("RGB")
        )
        keyframes[rec["shot"]].append(image)
        round_keys.append(image)
        boxes = list(specs[rec["round"]].get("characters", {}).items())
        if not boxes:  # unnamed characters: matched crop to crop across shots
            locator = locator or FaceLocator()
            boxes = [(LOCATED, box) for box in locator(image)]
            located += len(boxes)
        for name, box in boxes:
            crop = crop_box(image, box)
            crops.setdefault(name, []).append((rec["shot"], crop))
            prompted.append((rec["prompt"], crop))
    try:  # each round's keyframe against its own prompt
        alignment = text_alignment(embedder, [rec["prompt"] for rec in rounds], [[k] for k in round_keys])
        char_alignment = character_text_alignment(embedder, prompted)
    except ModelUnavailable as exc:  # the fallback embedder has no text tower
        log.warning("text alignment not measured: %s", exc)
        alignment = char_alignment = None
    videos = [os.path.join(session_dir, "shots", f"{s:03d}.mp4") for s in range(n_shots)]
    return StoryResult(
        name=os.path.basename(os.path.normpath(session_dir)),
        shots=n_shots,
        overall_consistency=overall_consistency(embedder, keyframes),
        character_consistency=character_consistency(embedder, crops) if crops else None,
        text_alignment=alignment,
        scuts=sum(count_cuts(v, min_scene_len=min_scene_len) for v in videos if os.path.isfile(v)),
        character_text_alignment=char_alignment,
        extra={"located_characters": located, "character_crops": len(prompted)},
    )


def results_table(results: list[StoryResult]) -> str:
    """A Markdown table like the paper's Table 1 (one row per story, then the mean)."""

    def fmt(v) -> str:
        return "-" if v is None else (str(v) if isinstance(v, int) else f"{100 * v:.2f}")

    head = "| story | shots | consistency (all) | consistency (char) | char. text alignment | text alignment | SCuts |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
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
