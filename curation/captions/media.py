"""Shot media sent to the models (MP4 clips or sampled JPEG frames) and their token estimates."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..stage import Keyframe, SceneUnit
from .config import CaptionConfig

# Gemini: tokens per sampled video frame by media resolution (low is 64-66; medium/high 258).
GEMINI_FRAME_TOKENS = {"low": 66, "medium": 258, "high": 258}
OPENAI_PATCH = 28  # Qwen2-VL style VLMs: one token per 28x28 pixels


@dataclass
class ShotMedia:
    """One shot as the models see it: its MP4 clip (or a keyframe when no clip was exported)."""

    index: int
    duration_s: float
    mp4: bytes | None = None
    keyframe: Keyframe | None = None
    digest: str = field(default="")

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.sha256()
            if self.mp4 is not None:
                h.update(self.mp4)
            elif self.keyframe is not None:
                h.update(self.keyframe.jpeg)
            self.digest = h.hexdigest()

    @property
    def nbytes(self) -> int:
        return len(self.mp4) if self.mp4 is not None else 0


def scene_media(unit: SceneUnit, max_shot_s: float | None = None) -> list[ShotMedia]:
    """One ``ShotMedia`` per shot of the scene, in order."""
    media = []
    for i, shot in enumerate(unit.shots):
        dur = shot.duration_s if max_shot_s is None else min(shot.duration_s, max_shot_s)
        clip = unit.clips[i] if i < len(unit.clips) and unit.clips[i] else None
        key = unit.keyframes[i] if i < len(unit.keyframes) else None
        if clip is None and key is None:
            raise ValueError(f"shot {shot.shot_id} has neither a clip nor a keyframe")
        media.append(ShotMedia(index=i, duration_s=max(dur, 0.0), mp4=clip, keyframe=key))
    return media


def _resize_short(img: Image.Image, short_side: int) -> Image.Image:
    w, h = img.size
    scale = short_side / min(w, h)
    if scale >= 1:
        return img
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def sample_frames(media: ShotMedia, fps: float, max_frames: int, short_side: int) -> list[bytes]:
    """JPEG frames of a shot sampled at ``fps`` (at least one, at most ``max_frames``), evenly spaced."""
    if media.mp4 is None:
        return [_jpeg(_resize_short(Image.fromarray(media.keyframe.rgb()), short_side))]
    import av

    with av.open(io.BytesIO(media.mp4)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"clip of shot {media.index} holds no frames")
    n = max(1, min(max_frames, math.ceil(media.duration_s * fps), len(frames)))
    picks = np.linspace(0, len(frames) - 1, n + 2)[1:-1] if n < len(frames) else np.arange(len(frames))
    return [_jpeg(_resize_short(frames[int(round(i))], short_side)) for i in picks]


def media_tokens(duration_s: float, cfg: CaptionConfig) -> int:
    """Estimated input tokens of one shot at the configured fps and resolution."""
    n_frames = max(1, math.ceil(duration_s * cfg.fps))
    if cfg.backend == "openai":
        n_frames = min(n_frames, cfg.max_frames_per_shot)
        long_side = cfg.frame_short_side * 16 / 9
        per_frame = math.ceil(cfg.frame_short_side / OPENAI_PATCH) * math.ceil(long_side / OPENAI_PATCH)
        return n_frames * per_frame
    return n_frames * GEMINI_FRAME_TOKENS[cfg.media_resolution]


def text_tokens(text: str) -> int:
    """Rough token count of text (4 characters a token)."""
    return max(1, len(text) // 4)
