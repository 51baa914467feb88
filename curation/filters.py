"""Shot and scene filters. Every drop keeps its reason and the measured value (a ``rejects.parquet`` row).

Pipeline order: ``ShotFilter`` (video too small; shots too short, black, blank, frozen, low/high motion,
text overlay, blurry, unaesthetic) runs BEFORE scene clustering, so scenes are built from kept shots only;
``SceneFilter`` (too few shots, too many characters by MTCNN face counts on keyframes) runs AFTER it.
Dropped shots and scenes stay in the unit with ``kept=False`` and ``reject_reason`` set, so the manifests
list them.

The shot filter first measures the keyframe scores (``curation.scores.KeyframeScorer``; flow and frozen
come from the shot splitter), then decides; in filter mode a shot the splitter's measures already drop (too
short, black, blank, frozen, motion) gets no text detection (``text_area`` None: it could not change the
verdict, and a dropped shot stays dropped). Every shot and scene records its ``verdict`` (the reason the
thresholds give, or None). With ``filters.mode=score`` nothing is dropped: verdicts are only recorded, all
shots are clustered and exported, and ``pipelines/refilter.py`` applies thresholds later, from the stored
scores, with the same ``verdict`` methods.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from .buckets import scene_buckets
from .config import CurateConfig, FiltersConfig
from .embed import resolve_device
from .errors import MissingDependency
from .records import Reject, SceneRecord, ShotRecord
from .scores import KeyframeScorer
from .stage import Stage, VideoUnit
from .threads import SizedPool, torch_threads

log = logging.getLogger(__name__)

_FACE_BATCH = 16  # keyframes per MTCNN call


class ShotFilter(Stage):
    """Rejects videos below the minimum size; marks shots too short, black, blank (uniform) or static."""

    name = "shot_filter"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.filters
        self.scores_config = config.scores
        self._scorer: KeyframeScorer | None = None  # built on first use: refilter needs verdicts only

    def verdict(self, shot: ShotRecord) -> tuple[str, str] | None:
        """``(reason, detail)`` the thresholds give a shot from its stored scores, or None when it passes."""
        return self._reason(shot)

    def _reason(self, shot: ShotRecord) -> tuple[str, str] | None:
        return self._splitter_reason(shot) or self._keyframe_reason(shot)

    def _splitter_reason(self, shot: ShotRecord) -> tuple[str, str] | None:
        """The checks on what the shot splitter measured (length, luma, motion); they come first."""
        c = self.config
        frames, seconds = shot.clip_length()
        if seconds < c.min_shot_s:
            return "too-short", f"duration {seconds:.3f}s < min_shot_s {c.min_shot_s}"
        if frames < c.min_shot_frames:
            return "too-short", f"clip of {frames} frames < min_shot_frames {c.min_shot_frames}"
        if shot.brightness < c.black_luma:
            return "black", f"mean luma {shot.brightness:.2f} < black_luma {c.black_luma}"
        if shot.contrast < c.blank_contrast:
            return "blank", f"luma std {shot.contrast:.2f} < blank_contrast {c.blank_contrast}"
        if shot.frozen is not None and shot.frozen >= c.max_frozen:
            return "frozen", f"frozen {shot.frozen:.2f} >= max_frozen {c.max_frozen}"
        if shot.flow is not None and shot.flow < c.min_motion:
            return "low-motion", f"flow {shot.flow:.4f} diag/s < min_motion {c.min_motion}"
        if shot.flow is not None and c.max_motion is not None and shot.flow > c.max_motion:
            return "high-motion", f"flow {shot.flow:.4f} diag/s > max_motion {c.max_motion}"
        return None

    def _keyframe_reason(self, shot: ShotRecord) -> tuple[str, str] | None:
        """The checks on the keyframe scores (``KeyframeScorer``)."""
        c = self.config
        if shot.text_area is not None and c.max_text_area is not None and shot.text_area > c.max_text_area:
            return "text-overlay", f"text_area {shot.text_area:.4f} > max_text_area {c.max_text_area}"
        if shot.sharpness is not None and shot.sharpness < c.min_sharpness:
            return "blurry", f"sharpness {shot.sharpness:.4f} < min_sharpness {c.min_sharpness}"
        if shot.aesthetic is not None and c.min_aesthetic is not None and shot.aesthetic < c.min_aesthetic:
            return "aesthetic", f"aesthetic {shot.aesthetic:.3f} < min_aesthetic {c.min_aesthetic}"
        return None

    def _score(self, unit: VideoUnit) -> None:
        if self._scorer is None:
            self._scorer = KeyframeScorer(self.scores_config)
        idx = [i for i, s in enumerate(unit.shots) if s.kept]
        keys = [unit.keyframes[i][len(unit.keyframes[i]) // 2] for i in idx]  # the representative keyframe
        emb = unit.embeddings[idx] if unit.embeddings is not None else None
        # filter mode drops a shot for its first reason, so a shot the splitter's checks already drop gets no text
        # detection (the costly score): its text_area stays None; score mode measures every shot (refilter)
        text = [self.config.mode == "score" or self._splitter_reason(unit.shots[i]) is None for i in idx]
        self._scorer.score([unit.shots[i] for i in idx], keys, emb, unit.embedder, text=text)

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()

    @property
    def score_seconds(self) -> float:
        """Time spent measuring keyframe scores (benchmarks read it; not a counter: timings vary)."""
        return self._scorer.seconds if self._scorer is not None else 0.0

    def process(self, unit: VideoUnit) -> VideoUnit | Reject:
        w, h = unit.video.width, unit.video.height
        if not (w and h):
            raise ValueError(f"{unit.item_id}: video size unknown; probe the video before filtering")
        if min(w, h) < self.config.min_short_side:
            detail = f"{w}x{h}: short side {min(w, h)} < min_short_side {self.config.min_short_side}"
            return Reject(unit.item_id, unit.uri, self.name, "too-small", detail)
        self._score(unit)
        for shot in unit.shots:
            if not shot.kept:
                continue
            verdict = self._reason(shot)
            shot.verdict = verdict[0] if verdict else None
            if verdict is None or self.config.mode == "score":
                self.stats.counts["shots_kept"] += 1
                self.stats.counts["shots_flagged"] += verdict is not None
                continue
            shot.kept, shot.reject_reason = False, verdict[0]
            self.reject_child(unit, shot.shot_id, *verdict)
        return unit


class SceneFilter(Stage):
    """Drops scenes with too few kept shots, or with more faces in one keyframe than ``max_characters``.

    ``shot.n_faces`` is the most faces (MTCNN probability >= ``face_min_prob``) in any keyframe of the
    shot; ``scene.max_faces`` the most over its shots. Faces are only counted for scenes that pass the
    shot-count check, and not at all when ``filters.faces`` is False.
    """

    name = "scene_filter"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.filters
        self.buckets = config.buckets
        self.mtcnn = None
        self._pool = SizedPool("mtcnn")
        self._device = "cpu"
        if self.config.faces:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as exc:
                raise MissingDependency(
                    f"face counting needs facenet-pytorch ({exc}): pip install "
                    "facenet-pytorch==2.5.3, or set filters.faces=false"
                ) from exc
            device = self._device = resolve_device(self.config.device)
            self.mtcnn = MTCNN(keep_all=True, min_face_size=self.config.face_min_size, device=device)
            log.info("MTCNN face detector on %s", device)

    @property
    def face_workers(self) -> int:
        """Keyframe batches checked at once: ``face_threads``, or torch's thread count when it is 0; one on a GPU."""
        if self._device != "cpu":
            return 1
        if self.config.face_threads:
            return self.config.face_threads
        import torch

        return torch.get_num_threads()

    def count_faces(self, images: list[np.ndarray]) -> list[int]:
        """Faces with probability >= ``face_min_prob`` in each RGB uint8 image.

        Images are batched by size (MTCNN takes a batch of one size), at most ``_FACE_BATCH`` per call, and
        ``face_workers`` batches run at once, each on one torch thread: torch releases the GIL, and batches need
        no barriers, which stall intra-op threads when other processes share the cores."""
        counts = [0] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_shape[im.shape].append(i)
        workers = self.face_workers
        chunks = []
        for idx in by_shape.values():
            size = min(_FACE_BATCH, -(-len(idx) // workers))  # every worker gets a batch when there are few
            chunks += [idx[b : b + size] for b in range(0, len(idx), size)]

        def detect(chunk: list[int]) -> list[Any]:
            return list(self.mtcnn.detect(np.stack([images[i] for i in chunk]))[1])

        with torch_threads(1):
            if workers > 1 and len(chunks) > 1:
                found = self._pool.map(detect, chunks, workers)
            else:
                found = [detect(c) for c in chunks]
        for chunk, probs in zip(chunks, found):
            for i, p in zip(chunk, probs):
                counts[i] = sum(1 for q in p if q is not None and q >= self.config.face_min_prob)
        self.stats.counts["keyframes_face_checked"] += len(images)
        return counts

    def close(self) -> None:
        self._pool.close()

    def verdict(self, scene: SceneRecord, passing: list[ShotRecord]) -> tuple[str, str] | None:
        """``(reason, detail)`` the thresholds give a scene (see ``scene_verdict``), or None."""
        return scene_verdict(self.config, passing)

    def _drop(self, unit: VideoUnit, scene: SceneRecord, reason: str, detail: str) -> None:
        scene.kept, scene.reject_reason = False, reason
        self.reject_child(unit, scene.scene_id, reason, detail)

    def process(self, unit: VideoUnit) -> VideoUnit:
        by_id = {s.shot_id: i for i, s in enumerate(unit.shots)}
        score_mode = self.config.mode == "score"

        def passing(scene: SceneRecord) -> list[ShotRecord]:
            shots = [unit.shots[by_id[sid]] for sid in scene.shot_ids]
            return [s for s in shots if s.kept and s.verdict is None]

        scenes = [s for s in unit.scenes if s.kept]
        # faces are counted where they can decide: scenes with enough shots (all scenes in score mode,
        # where thresholds may change later)
        counted = [s for s in scenes if score_mode or len(passing(s)) >= self.config.min_scene_shots]
        if self.mtcnn is not None and counted:
            self._count_scene_faces(unit, counted, by_id, all_shots=score_mode)
        for scene in scenes:
            shots = passing(scene)
            if scene in counted and self.mtcnn is not None:
                scene.max_faces = max((s.n_faces or 0 for s in shots), default=0)
            summarise_scene(scene, [unit.shots[by_id[sid]] for sid in scene.shot_ids])
            scene.resolution_bucket, scene.aspect_bucket, scene.duration_bucket = scene_buckets(
                unit.video, scene, self.buckets
            )
            verdict = self.verdict(scene, shots)
            scene.verdict = verdict[0] if verdict else None
            if verdict is not None and not score_mode:
                self._drop(unit, scene, *verdict)
        self.stats.counts["scenes_kept"] += sum(s.kept for s in unit.scenes)
        self.stats.counts["scenes_flagged"] += sum(s.kept and s.verdict is not None for s in unit.scenes)
        return unit

    def _count_scene_faces(
        self, unit: VideoUnit, scenes: list[SceneRecord], by_id: dict[str, int], all_shots: bool
    ) -> None:
        shot_idx = [
            by_id[sid]
            for sc in scenes
            for sid in sc.shot_ids
            if unit.shots[by_id[sid]].kept and (all_shots or unit.shots[by_id[sid]].verdict is None)
        ]
        keyframes = [k for i in shot_idx for k in unit.keyframes[i]]
        found: list[int] = []
        step = _FACE_BATCH * self.face_workers  # decoded a batch per worker at a time
        for b in range(0, len(keyframes), step):
            found += self.count_faces([k.rgb() for k in keyframes[b : b + step]])
        counts = iter(found)
        for i in shot_idx:
            unit.shots[i].n_faces = max((next(counts) for _ in unit.keyframes[i]), default=0)


def scene_verdict(config: FiltersConfig, passing: list[ShotRecord]) -> tuple[str, str] | None:
    """``(reason, detail)`` the thresholds give a scene from its passing shots (kept, no verdict), or None.

    Faces are judged from the shots' stored ``n_faces`` (counted by ``SceneFilter``)."""
    n = len(passing)
    if n < config.min_scene_shots:
        return "too-few-shots", f"{n} kept shots < min_scene_shots {config.min_scene_shots}"
    faces = [s.n_faces or 0 for s in passing]
    if config.faces and faces and max(faces) > config.max_characters:
        worst = passing[int(np.argmax(faces))].shot_id
        return "too-many-characters", f"{max(faces)} faces in shot {worst} > max_characters {config.max_characters}"
    return None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _max(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(max(present)) if present else None


def summarise_scene(scene: SceneRecord, shots: list[ShotRecord]) -> None:
    """Scene score summaries over its kept shots: mean flow, sharpness, aesthetic; max frozen, text area."""
    kept = [s for s in shots if s.kept]
    scene.mean_flow = _mean([s.flow for s in kept])
    scene.max_frozen = _max([s.frozen for s in kept])
    scene.max_text_area = _max([s.text_area for s in kept])
    scene.mean_sharpness = _mean([s.sharpness for s in kept])
    scene.mean_aesthetic = _mean([s.aesthetic for s in kept])
