"""Shot and scene filters. Every drop keeps its reason and the measured value (a ``rejects.parquet`` row).

Pipeline order: ``ShotFilter`` (video too small; shots too short, black, blank, static) runs BEFORE scene
clustering, so scenes are built from kept shots only; ``SceneFilter`` (too few shots, too many characters
by MTCNN face counts on keyframes) runs AFTER it. Dropped shots and scenes stay in the unit with
``kept=False`` and ``reject_reason`` set, so the manifests list them.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from .config import CurateConfig
from .embed import resolve_device
from .errors import MissingDependency
from .records import Reject, SceneRecord, ShotRecord
from .stage import Stage, VideoUnit

log = logging.getLogger(__name__)

_FACE_BATCH = 16  # keyframes per MTCNN call


class ShotFilter(Stage):
    """Rejects videos below the minimum size; marks shots too short, black, blank (uniform) or static."""

    name = "shot_filter"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.filters

    def _reason(self, shot: ShotRecord) -> tuple[str, str] | None:
        c = self.config
        if shot.duration_s < c.min_shot_s:
            return "too-short", f"duration {shot.duration_s:.3f}s < min_shot_s {c.min_shot_s}"
        if shot.n_frames < c.min_shot_frames:
            return "too-short", f"{shot.n_frames} frames < min_shot_frames {c.min_shot_frames}"
        if shot.brightness < c.black_luma:
            return "black", f"mean luma {shot.brightness:.2f} < black_luma {c.black_luma}"
        if shot.contrast < c.blank_contrast:
            return "blank", f"luma std {shot.contrast:.2f} < blank_contrast {c.blank_contrast}"
        if shot.motion < c.static_motion:
            return "static", f"motion {shot.motion:.3f} < static_motion {c.static_motion}"
        return None

    def process(self, unit: VideoUnit) -> VideoUnit | Reject:
        w, h = unit.video.width, unit.video.height
        if not (w and h):
            raise ValueError(f"{unit.item_id}: video size unknown; probe the video before filtering")
        if min(w, h) < self.config.min_short_side:
            detail = f"{w}x{h}: short side {min(w, h)} < min_short_side {self.config.min_short_side}"
            return Reject(unit.item_id, unit.uri, self.name, "too-small", detail)
        for shot in unit.shots:
            if not shot.kept:
                continue
            verdict = self._reason(shot)
            if verdict is None:
                self.stats.counts["shots_kept"] += 1
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
        self.mtcnn = None
        if self.config.faces:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as exc:
                raise MissingDependency(
                    f"face counting needs facenet-pytorch ({exc}): pip install "
                    "facenet-pytorch==2.5.3, or set filters.faces=false"
                ) from exc
            device = resolve_device(self.config.device)
            self.mtcnn = MTCNN(keep_all=True, min_face_size=self.config.face_min_size, device=device)
            log.info("MTCNN face detector on %s", device)

    def count_faces(self, images: list[np.ndarray]) -> list[int]:
        """Faces with probability >= ``face_min_prob`` in each RGB uint8 image (batched by image size)."""
        counts = [0] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_shape[im.shape].append(i)
        for idx in by_shape.values():
            for b in range(0, len(idx), _FACE_BATCH):
                chunk = idx[b : b + _FACE_BATCH]
                _, probs = self.mtcnn.detect(np.stack([images[i] for i in chunk]))
                for i, p in zip(chunk, probs):
                    counts[i] = sum(1 for q in p if q is not None and q >= self.config.face_min_prob)
        self.stats.counts["keyframes_face_checked"] += len(images)
        return counts

    def _drop(self, unit: VideoUnit, scene: SceneRecord, reason: str, detail: str) -> None:
        scene.kept, scene.reject_reason = False, reason
        self.reject_child(unit, scene.scene_id, reason, detail)

    def process(self, unit: VideoUnit) -> VideoUnit:
        by_id = {s.shot_id: i for i, s in enumerate(unit.shots)}
        passing: list[SceneRecord] = []
        for scene in unit.scenes:
            if not scene.kept:
                continue
            n = sum(unit.shots[by_id[sid]].kept for sid in scene.shot_ids)
            if n < self.config.min_scene_shots:
                self._drop(
                    unit, scene, "too-few-shots", f"{n} kept shots < min_scene_shots {self.config.min_scene_shots}"
                )
            else:
                passing.append(scene)
        if self.mtcnn is not None and passing:
            self._count_scene_faces(unit, passing, by_id)
        self.stats.counts["scenes_kept"] += sum(s.kept for s in unit.scenes)
        return unit

    def _count_scene_faces(self, unit: VideoUnit, scenes: list[SceneRecord], by_id: dict[str, int]) -> None:
        shot_idx = [by_id[sid] for sc in scenes for sid in sc.shot_ids if unit.shots[by_id[sid]].kept]
        keyframes = [k for i in shot_idx for k in unit.keyframes[i]]
        found: list[int] = []
        for b in range(0, len(keyframes), _FACE_BATCH):  # decoded one batch at a time
            found += self.count_faces([k.rgb() for k in keyframes[b : b + _FACE_BATCH]])
        counts = iter(found)
        for i in shot_idx:
            unit.shots[i].n_faces = max((next(counts) for _ in unit.keyframes[i]), default=0)
        for scene in scenes:
            faces = [unit.shots[by_id[sid]].n_faces for sid in scene.shot_ids if unit.shots[by_id[sid]].kept]
            scene.max_faces = max(faces, default=0)
            if scene.max_faces > self.config.max_characters:
                worst = scene.shot_ids[int(np.argmax([unit.shots[by_id[s]].n_faces or 0 for s in scene.shot_ids]))]
                detail = f"{scene.max_faces} faces in shot {worst} > max_characters {self.config.max_characters}"
                self._drop(unit, scene, "too-many-characters", detail)
