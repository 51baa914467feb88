"""Curation configuration: one pydantic section per stage, loadable from YAML, overridable with
``--set dotted.key=value``. Every default is documented in its field description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .captions.config import CaptionConfig, VerifyConfig
from .errors import ConfigError


class Section(BaseModel):
    """Base of every config section of the project: unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class VideoConfig(Section):
    analysis_short_side: int = Field(
        256, ge=16, description="Short side in pixels of frames decoded for analysis (detection, keyframes, embedding)."
    )
    decode_threads: int = Field(0, ge=0, description="FFmpeg decoder threads per video; 0 lets FFmpeg choose.")
    max_duration_s: float | None = Field(
        None, gt=0, description="Videos longer than this are rejected (reason 'too-long'); None: no limit."
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
    content_threshold: float = Field(
        27.0, gt=0, le=255, description="PySceneDetect ContentDetector threshold (0-255 scale)."
    )
    adaptive_threshold: float = Field(3.0, gt=0, description="PySceneDetect AdaptiveDetector adaptive_threshold.")
    detect_width: int = Field(256, ge=16, description="Frame width in pixels fed to PySceneDetect.")
    transnet_threshold: float = Field(
        0.5, gt=0, lt=1, description="TransNetV2 probability above which a frame is a cut."
    )
    transnet_confident: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="hybrid: TransNetV2 cuts PySceneDetect missed are kept when their probability is this high.",
    )
    min_shot_s: float = Field(
        0.32, ge=0, description="Shots shorter than this (seconds) merge into a neighbour (8 frames at 25 fps)."
    )
    min_shot_frames: int = Field(
        2, ge=1, description="Frame floor of min_shot_s: shots shorter than this many frames merge at any frame rate."
    )
    cascade_min_change: float = Field(
        6.0,
        gt=0,
        le=255,
        description="cascade: mean luma change (0-255) over 8 frames, spread over several frames, that sends a "
        "window to TransNetV2 (lower finds fainter dissolves and runs the network more often).",
    )
    device: str = Field("auto", description="Torch device for TransNetV2: 'auto', 'cpu' or 'cuda[:N]'.")


class KeyframesConfig(Section):
    mode: Literal["middle", "first_middle_last"] = Field(
        "first_middle_last",
        description="Keyframes taken per shot: its middle frame, or its first, middle and last (scene "
        "clustering compares shots by the mean of their keyframes' embeddings, or as sets with "
        "scenes.compare=best_pair, so a shot that pans matches either end). Frames of a dissolve or fade at a "
        "shot's ends are never keyframes.",
    )
    jpeg_quality: int = Field(
        90,
        ge=1,
        le=100,
        description="JPEG quality of keyframes: encoded once as a shot closes, held so, written to shards as is.",
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
    batch_size: int = Field(64, ge=1, description="Keyframes per forward pass.")


class ScenesConfig(Section):
    window: int = Field(3, ge=1, description="A shot joins the current scene if it matches any of its last w shots.")
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Cosine similarity tau for joining a scene; None uses the embedder's calibrated default "
        "(open_clip 0.8, fallback 0.55; see curation/embed.py DEFAULT_THRESHOLDS).",
    )
    max_shots: int = Field(16, ge=1, description="A scene is closed once it holds this many shots.")
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
        0.15,
        ge=0,
        le=1,
        description="How far a video's adaptive threshold may move from the configured one (floor/ceiling).",
    )


class FiltersConfig(Section):
    min_shot_s: float = Field(
        1.0,
        ge=0,
        description="Shots whose clip (the shot without the dissolve or fade frames at its ends) is shorter than "
        "this (seconds) are dropped: 'too-short'.",
    )
    min_shot_frames: int = Field(
        2,
        ge=1,
        description="Shots whose clip has fewer frames than this are dropped too, whatever its duration: 'too-short'.",
    )
    black_luma: float = Field(18.0, ge=0, le=255, description="Shots whose mean luma (0-255) is below this: 'black'.")
    blank_contrast: float = Field(
        6.0, ge=0, le=255, description="Shots whose luma std is below this are uniform: 'blank'."
    )
    # --- score thresholds (curation/scores.py measures; benchmarks/filters_real.py calibrated the defaults)
    mode: Literal["filter", "score"] = Field(
        "filter",
        description="'filter': failing shots and scenes are dropped (not exported). 'score': every shot and "
        "scene is kept and exported, its verdict (the reason these thresholds give, or null) recorded in "
        "'verdict'; `filmweaver refilter OUT --set filters.X=...` then writes the dataset these thresholds keep "
        "without decoding. In 'score' mode scenes are clustered over all shots.",
    )
    max_frozen: float = Field(
        0.6,
        ge=0,
        description="Shots whose 'frozen' score (fraction 0-1 of frame pairs scores.flow_interval_s apart that "
        "differ by less than scores.frozen_diff: a still image, freeze frame or slideshow) is at least this: "
        "'frozen'. Real calm shots score <= 0.2, held stills >= 0.67 (benchmarks/filters_real.py); 1.0 drops only "
        "fully frozen shots; above 1 disables.",
    )
    min_motion: float = Field(
        0.0,
        ge=0,
        description="Shots whose 'flow' score (mean optical-flow magnitude in frame diagonals per second) is "
        "below this: 'low-motion'. 0 disables (calm shots are good data); e.g. 0.005 drops near-still shots.",
    )
    max_motion: float | None = Field(
        None,
        ge=0,
        description="Shots whose 'flow' (frame diagonals per second) exceeds this: 'high-motion'; None: off.",
    )
    max_text_area: float | None = Field(
        0.008,
        ge=0,
        le=1,
        description="Shots whose 'text_area' (fraction 0-1 of the keyframe covered by detected text-line boxes: "
        "burnt-in subtitles, captions, logos, screen text) exceeds this: 'text-overlay'; None: off. On the real "
        "calibration set shots without text score 0 and a subtitle line or caption 0.015-0.08.",
    )
    min_sharpness: float = Field(
        0.0,
        ge=0,
        description="Shots whose 'sharpness' (Laplacian variance / luma variance of the keyframe at analysis size, "
        "dimensionless) is below this: 'blurry'. 0 disables.",
    )
    min_aesthetic: float | None = Field(
        None,
        ge=-1e6,
        le=1e6,
        description="Shots whose 'aesthetic' score (the configured head's output) is below this: 'aesthetic'.",
    )
    min_short_side: int = Field(128, ge=1, description="Videos whose short side is smaller (pixels): 'too-small'.")
    min_scene_shots: int = Field(2, ge=1, description="Scenes with fewer kept shots are dropped: 'too-few-shots'.")
    max_characters: int = Field(
        4, ge=0, description="Scenes whose keyframes show more faces than this are dropped: 'too-many-characters'."
    )
    faces: bool = Field(True, description="Count faces with MTCNN (facenet-pytorch) on keyframes.")
    face_min_prob: float = Field(0.95, ge=0, le=1, description="MTCNN detection probability counted as a face.")
    face_min_size: int = Field(20, ge=1, description="Smallest face side in pixels searched by MTCNN.")
    device: str = Field("auto", description="Torch device for MTCNN.")
    face_threads: int = Field(
        0,
        ge=0,
        description="Keyframe batches MTCNN checks at once, each on one torch CPU thread (threads of this process: "
        "torch releases the GIL); 0: torch's thread count (OMP_NUM_THREADS; a Ray worker's CPUs). Faster than "
        "torch's own threads, whose barriers stall when other processes share the cores (benchmarks/face_check.py).",
    )


class ScoresConfig(Section):
    """How the per-shot scores of ``curation/scores.py`` are measured (thresholds live in ``filters``)."""

    flow_interval_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Motion and frozen scores compare frames this many seconds apart (a fixed time, so the scores "
        "do not depend on the frame rate).",
    )
    flow_width: int = Field(
        96, ge=16, le=1024, description="Width in pixels of the grey frames optical flow (OpenCV Farneback) runs on."
    )
    frozen_diff: float = Field(
        0.08,
        ge=0,
        le=255,
        description="Two frames scores.flow_interval_s apart whose mean absolute luma difference (0-255, on the "
        "flow-size frames) is below this count as frozen. Calibrated on real footage (benchmarks/filters_real.py): "
        "a real frame held through H.264 differs by <= 0.02 (up to 0.12 while the encoder refines it after a cut), "
        "real calm shots by >= 0.12 at their 10th percentile (a filmed static screen: 0.046).",
    )
    text: bool = Field(
        True, description="Measure 'text_area' with RapidOCR's text detection model (rapidocr-onnxruntime wheel)."
    )
    text_side: int = Field(
        256,
        ge=32,
        le=2160,
        description="Keyframes are scaled so that their short side is this many pixels for text detection (cost "
        "grows with its square: 480 finds more small text at 3-4x the cost).",
    )
    text_threads: int = Field(
        0,
        ge=0,
        description="Keyframes text detection runs on at once, each on one onnxruntime thread; 0: OMP_NUM_THREADS "
        "when set (a Ray worker's CPUs), else the CPUs this process may use.",
    )
    aesthetic_head: str | None = Field(
        None,
        description="Local path of an aesthetic head (torch state dict of linear layers on L2-normalised CLIP "
        "image embeddings, e.g. LAION's improved aesthetic predictor); needs embed.backend open_clip with the "
        "matching embedding size. None: 'aesthetic' is null.",
    )


class DedupConfig(Section):
    """Near-duplicate shots and scenes across videos, from their embeddings, after all videos (finalize)."""

    enabled: bool = Field(True, description="Mark near-duplicates across videos in the manifests at finalize.")
    shot_threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity of shot embeddings at or above which two shots are duplicates."
    )
    scene_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Cosine similarity of scene embeddings (mean of shots) at or above which scenes duplicate.",
    )
    cluster_size: int = Field(
        2000, ge=2, description="k-means runs with n/cluster_size clusters; pairs are compared within a cluster only."
    )


def _aspect_name(name: str) -> str:
    """``W:H`` with two positive numbers (quoted in YAML: an unquoted 16:9 reads as a base-60 integer)."""
    w, sep, h = name.partition(":")
    try:
        ok = sep == ":" and float(w) > 0 and float(h) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name!r} is not an aspect ratio 'W:H' of two positive numbers, e.g. '16:9' or '2.39:1'")
    return name


AspectName = Annotated[str, AfterValidator(_aspect_name)]


class BucketsConfig(Section):
    """Training-sampler buckets written per scene in ``scenes.parquet``."""

    resolutions: list[Annotated[int, Field(gt=0)]] = Field(
        [360, 480, 720, 1080, 1440, 2160],
        description="Short-side edges in pixels: a scene's resolution bucket is the largest edge <= its short side "
        "(named e.g. '720p'; below the first edge: 'lt360p').",
    )
    aspects: list[AspectName] = Field(
        ["9:16", "3:4", "1:1", "4:3", "16:9", "1.85:1", "2.39:1"],
        description="Aspect-ratio buckets (display width:height); a scene gets the nearest in log ratio.",
    )
    durations_s: list[Annotated[float, Field(gt=0)]] = Field(
        [2.0, 5.0, 10.0, 20.0, 40.0],
        description="Scene duration edges in seconds: buckets '<2s', '2-5s', ..., '>=40s'.",
    )


class ExportConfig(Section):
    short_side: int = Field(480, ge=16, description="Short side in pixels of exported shot clips (never upscaled).")
    crf: int = Field(
        23, ge=0, le=51, description="H.264 CRF of exported clips (lower is better quality, larger files)."
    )
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
    ] = Field("veryfast", description="x264 preset of exported clips.")
    threads: int = Field(
        1,
        ge=1,
        le=16,
        description="x264 threads per exported clip. Fixed, not the node's CPU count: x264's bytes depend on its "
        "thread count only, so every node exports the same bytes. 1: the smallest clips and the least CPU per "
        "frame; the cores are kept busy by encoding export.encoders clips at once (BENCHMARKS.md, 'Export: clips "
        "encoded at once').",
    )
    encoders: int = Field(
        2,
        ge=1,
        le=16,
        description="Clips of a video encoded at once, each on its own thread, fed by the one decode pass (the "
        "decoder runs ahead into the next clips, holding about 64 MiB of frames per encoder). Changes speed and "
        "memory only, never a byte of a clip.",
    )
    max_shot_s: float | None = Field(
        None,
        gt=0,
        description="Exported clips are cut to their first max_shot_s seconds (from the first frame after a "
        "dissolve or fade that opens the shot), and so are their keyframes and the clip the shot filter measures; "
        "None: whole shot.",
    )
    verify_min_psnr: float = Field(
        20.0,
        ge=0,
        le=100,
        description="Each exported clip's first and last frames must match the source's frames at those indices "
        "with at least this PSNR (dB), and better than the neighbouring frames, or the shot is rejected "
        "'clip-check-failed'.",
    )


class ShardsConfig(Section):
    max_bytes: int = Field(1_000_000_000, ge=1, description="A shard is closed once it reaches this many bytes.")
    prefix: str = Field("scenes", description="Shard file names: {prefix}-000000.tar ...")
    commit_videos: int | None = Field(
        100,
        ge=1,
        description="The local engine commits (closes its shard, journals its videos) at least every this many "
        "videos, so a killed run keeps them; None: only when a shard is full. finalize merges small shards.",
    )
    commit_s: float | None = Field(
        300.0, gt=0, description="The local engine also commits at least every this many seconds; None: no time limit."
    )


class CurateConfig(Section):
    """The whole curation run: one section per stage."""

    video: VideoConfig = VideoConfig()
    shots: ShotsConfig = ShotsConfig()
    keyframes: KeyframesConfig = KeyframesConfig()
    embed: EmbedConfig = EmbedConfig()
    scenes: ScenesConfig = ScenesConfig()
    filters: FiltersConfig = FiltersConfig()
    scores: ScoresConfig = ScoresConfig()
    dedup: DedupConfig = DedupConfig()
    buckets: BucketsConfig = BucketsConfig()
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
        raise ConfigError(f"invalid config: {validation_problems(exc)}") from None


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line, each problem as ``dotted.key: message`` (e.g. ``scenes.window: Input
    should be greater than or equal to 1``)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def config_yaml(config: BaseModel) -> str:
    """The effective config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def add_config_arguments(parser: Any, config_help: str, set_example: str) -> None:
    """Add the ``--config FILE`` and repeated ``--set dotted.key=value`` options every command shares."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=f"e.g. {set_example}"
    )
