"""The ordered list of curation stages that every executor runs.

Video stages take a ``VideoUnit`` from its uri to the kept ``SceneUnit``s (clip export is the last one and
fans out to scenes); scene stages then caption and verify each scene. The local and the Ray executor both
build their stages from here, so they run the same code in the same order.
"""

from __future__ import annotations

from curation.config import CurateConfig
from curation.stage import Stage


def video_stage_classes() -> list[type[Stage]]:
    """Stage classes from uri to scenes, in order: probe, shots, embed, shot_filter, scenes, scene_filter,
    export."""
    from curation.embed import Embedder
    from curation.export import ClipExporter
    from curation.filters import SceneFilter, ShotFilter
    from curation.scenes import SceneClusterer
    from curation.shots import ShotSplitter
    from curation.video import ProbeVideo

    return [ProbeVideo, ShotSplitter, Embedder, ShotFilter, SceneClusterer, SceneFilter, ClipExporter]


def scene_stage_classes() -> list[type[Stage]]:
    """Stage classes applied to each exported scene, in order: caption, verify."""
    from curation.captions import CaptionVerifier, GroupCaptioner

    return [GroupCaptioner, CaptionVerifier]


def video_stages(config: CurateConfig, out_dir: str | None = None) -> list[Stage]:
    """Built video stages (models load here, once)."""
    return [cls(config, out_dir) for cls in video_stage_classes()]


def scene_stages(config: CurateConfig, out_dir: str | None = None) -> list[Stage]:
    """Built scene stages."""
    return [cls(config, out_dir) for cls in scene_stage_classes()]
