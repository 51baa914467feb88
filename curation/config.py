"""Curation configuration: one pydantic section per stage, loadable from YAML, overridable with
``--set dotted.key=value``. Every default is documented in its field description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .captions.config import CaptionConfig, VerifyConfig
from .errors import ConfigError


class Section(BaseModel):
    """Base of every config section of the project: unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class VideoConfig(Section):
    analysis_short_side: int = Field(
        256, description="Short side in pixels of frames decoded for analysis (detection, keyframes, embedding)."
    )
    decode_threads: int = Field(0, description="FFmpeg decoder threads per video; 0 lets FFmpeg choose.")
    max_duration_s: float | None = Field(
        None, description="Videos longer than this are rejected (reason 'too-long'); None: no limit."
    )


class ShotsConfig(Section):
    backend: Literal["auto", "scenedetect", "transnetv2", "hybrid", "cascade"] = Field(
        "auto",
        description="Shot boundary detector. 'auto': TransNetV2 when a CUDA GPU is present, else 'cascade'. "
        "'hybrid': PySceneDetect cuts plus TransNetV2 gradual transitions (TransNetV2 on every frame). "
        "'cascade': the same, TransNetV2 run only on windows a cheap test finds a gradual change in.",
    )
    detector: Literal["content", "adaptive"] = Field(
        "adaptive", description="PySceneDetect detector: 'content' (fixed threshold) or 'adaptive' (rolling)."
    )
    content_threshold: float = Field(27.0, description="PySceneDetect ContentDetector threshold (0-255 scale).")
    adaptive_threshold: float = Field(3.0, description="PySceneDetect AdaptiveDetector adaptive_threshold.")
    detect_width: int = Field(256, description="Frame width in pixels fed to PySceneDetect.")
    transnet_threshold: float = Field(0.5, description="TransNetV2 probability above which a frame is a cut.")
    transnet_confident: float = Field(
        0.9, description="hybrid: TransNetV2 cuts PySceneDetect missed are kept when their probability is this high."
    )
    cascade_min_change: float = Field(
        6.0,
        description="cascade: mean luma change (0-255) over 8 frames, spread over several frames, that sends a "
        "window to TransNetV2 (lower finds fainter dissolves and runs the network more often).",
    )
    min_shot_frames: int = Field(8, description="Shots shorter than this many frames merge into a neighbour.")
    device: str = Field("auto", description="Torch device for TransNetV2: 'auto', 'cpu' or 'cuda[:N]'.")


class KeyframesConfig(Section):
    mode: Literal["middle", "first_middle_last"] = Field(
        "first_middle_last",
        description="Keyframes taken per shot: its middle frame, or its first, middle and last (scene "
        "clustering compares shots as sets of keyframes, so a shot that pans or cuts between speakers matches).",
    )
    jpeg_quality: int = Field(
        90, description="JPEG quality of keyframes: encoded once as a shot closes, held so, written to shards as is."
    )


class EmbedConfig(Section):
    backend: Literal["auto", "open_clip", "fallback"] = Field(
        "auto",
        description="Keyframe embedder. 'auto': open_clip when its checkpoint loads, else the weight-free "
        "fallback with a loud warning (recorded in run.json).",
    )
    model: str = Field("ViT-B-32", description="open_clip model name.")
    pretrained: str = Field(
        "laion2b_s34b_b79k", description="open_clip pretrained tag, or a local checkpoint path (.pt/.bin)."
    )
    clip_config_path: str | None = Field(
        None,
        description="Local open_clip model config JSON (keys embed_dim, vision_cfg, text_cfg) for custom "
        "architectures; its file stem becomes the model name (tests use a tiny one).",
    )
    device: str = Field("auto", description="Torch device: 'auto', 'cpu' or 'cuda[:N]'.")
    batch_size: int = Field(64, description="Keyframes per forward pass.")


class ScenesConfig(Section):
    window: int = Field(3, description="A shot joins the current scene if it matches any of its last w shots.")
    threshold: float | None = Field(
        None,
        description="Cosine similarity tau for joining a scene; None uses the embedder's calibrated default "
        "(open_clip 0.8, fallback 0.55; see curation/embed.py DEFAULT_THRESHOLDS).",
    )
    max_shots: int = Field(16, description="A scene is closed once it holds this many shots.")
    compare: Literal["mean", "best_pair"] = Field(
        "mean",
        description="How two shots are compared: cosine of their mean keyframe embeddings, or the best pair of "
        "keyframes (sets). On real footage the mean is better (benchmarks/scene_accuracy.py --real).",
    )
    adaptive: bool = Field(
        False,
        description="Choose each video's threshold from its own shot-to-window similarities (Otsu's split), "
        "within threshold +- adaptive_range; off (default, better on benchmarks/scene_accuracy.py --real): "
        "the threshold as is.",
    )
    adaptive_range: float = Field(
        0.15, description="How far a video's adaptive threshold may move from the configured one (floor/ceiling)."
    )


class FiltersConfig(Section):
    min_shot_s: float = Field(1.0, description="Shots shorter than this (seconds) are dropped: 'too-short'.")
    black_luma: float = Field(18.0, description="Shots whose mean luma (0-255) is below this: 'black'.")
    blank_contrast: float = Field(6.0, description="Shots whose luma std is below this are uniform: 'blank'.")
    static_motion: float = Field(
        0.3, description="Shots whose mean frame difference (0-255) is below this are frozen: 'static'."
    )
    min_short_side: int = Field(128, description="Videos whose short side is smaller (pixels): 'too-small'.")
    min_scene_shots: int = Field(2, description="Scenes with fewer kept shots are dropped: 'too-few-shots'.")
    max_characters: int = Field(
        4, description="Scenes whose keyframes show more faces than this are dropped: 'too-many-characters'."
    )
    faces: bool = Field(True, description="Count faces with MTCNN (facenet-pytorch) on keyframes.")
    face_min_prob: float = Field(0.95, description="MTCNN detection probability counted as a face.")
    face_min_size: int = Field(20, description="Smallest face side in pixels searched by MTCNN.")
    device: str = Field("auto", description="Torch device for MTCNN.")


class ExportConfig(Section):
    short_side: int = Field(480, description="Short side in pixels of exported shot clips (never upscaled).")
    crf: int = Field(23, description="H.264 CRF of exported clips (lower is better quality, larger files).")
    preset: str = Field("veryfast", description="x264 preset of exported clips.")
    max_shot_s: float | None = Field(
        None, description="Exported clips are cut to their first max_shot_s seconds; None: whole shot."
    )


class ShardsConfig(Section):
    max_bytes: int = Field(1_000_000_000, description="A shard is closed once it reaches this many bytes.")
    prefix: str = Field("scenes", description="Shard file names: {prefix}-000000.tar ...")


class CurateConfig(Section):
    """The whole curation run: one section per stage."""

    video: VideoConfig = VideoConfig()
    shots: ShotsConfig = ShotsConfig()
    keyframes: KeyframesConfig = KeyframesConfig()
    embed: EmbedConfig = EmbedConfig()
    scenes: ScenesConfig = ScenesConfig()
    filters: FiltersConfig = FiltersConfig()
    export: ExportConfig = ExportConfig()
    caption: CaptionConfig = CaptionConfig()
    verify: VerifyConfig = VerifyConfig()
    shards: ShardsConfig = ShardsConfig()


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = CurateConfig):
    """Config from an optional YAML file plus overrides, validated; errors name the offending key."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config: {problems}") from None


def config_yaml(config: BaseModel) -> str:
    """The effective config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def add_config_arguments(parser: Any, config_help: str, set_example: str) -> None:
    """Add the ``--config FILE`` and repeated ``--set dotted.key=value`` options every command shares."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=f"e.g. {set_example}"
    )
