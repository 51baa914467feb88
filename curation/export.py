"""Clip export: a video's kept scenes become ``SceneUnit``s holding their shots as H.264 clips.

This is where the unit of work changes from a video to its scenes. Only kept shots of kept scenes are
exported; a remote video is fetched once for all its clips (``video.local_path``), not once per clip.
"""

from __future__ import annotations

import math

from .config import CurateConfig
from .stage import Keyframe, SceneUnit, Stage, VideoUnit
from .video import export_clip, local_path


def representative(keyframes: list[Keyframe]) -> Keyframe:
    """The keyframe that stands for a shot: the middle one of those sampled."""
    return keyframes[len(keyframes) // 2]


class ClipExporter(Stage):
    """VideoUnit -> one SceneUnit per kept scene, with each kept shot exported per ``config.export``."""

    name = "export"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.export

    def _end_frame(self, unit: VideoUnit, start: int, end: int) -> int:
        cap = self.config.max_shot_s
        if cap is None:
            return end
        fps = float(unit.video.fps) or 1.0
        return min(end, start + max(1, math.floor(cap * fps)))

    def process(self, unit: VideoUnit) -> list[SceneUnit]:
        by_id = {s.shot_id: i for i, s in enumerate(unit.shots)}
        scenes: list[SceneUnit] = []
        kept_scenes = [s for s in unit.scenes if s.kept]
        if not kept_scenes:
            return scenes
        with local_path(unit.video.uri) as src:
            for scene in kept_scenes:
                idx = [by_id[sid] for sid in scene.shot_ids if unit.shots[by_id[sid]].kept]
                shots = [unit.shots[i] for i in idx]
                clips = [
                    export_clip(
                        src,
                        unit.video,
                        s.start_frame,
                        self._end_frame(unit, s.start_frame, s.end_frame),
                        self.config.short_side,
                        self.config.crf,
                        self.config.preset,
                    )
                    for s in shots
                ]
                self.stats.counts["clips"] += len(clips)
                self.stats.counts["clip_bytes"] += sum(map(len, clips))
                scenes.append(
                    SceneUnit(
                        scene=scene,
                        video=unit.video,
                        shots=shots,
                        keyframes=[representative(unit.keyframes[i]) for i in idx],
                        embeddings=unit.embeddings[idx],
                        clips=clips,
                    )
                )
        return scenes
