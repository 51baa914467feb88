"""Configuration of group captioning (``caption``) and verification (``verify``).

API keys are never part of the config: they are read from the environment (``GEMINI_API_KEY`` or
``GOOGLE_API_KEY`` for Gemini, ``OPENAI_API_KEY`` for OpenAI-compatible servers) when a stage starts, so
they cannot leak into ``run.json`` or ``config show``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    input_per_million: float = Field(ge=0, description="US dollars per million input (prompt) tokens.")
    output_per_million: float = Field(ge=0, description="US dollars per million output tokens, thinking included.")


def _default_prices() -> dict[str, ModelPrice]:
    # Gemini Developer API list prices (text/image/video input, <=200k-token prompts), late 2025.
    return {
        "gemini-2.5-flash": ModelPrice(input_per_million=0.30, output_per_million=2.50),
        "gemini-2.5-flash-lite": ModelPrice(input_per_million=0.10, output_per_million=0.40),
        "gemini-2.5-pro": ModelPrice(input_per_million=1.25, output_per_million=10.0),
    }


class CaptionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["none", "gemini", "openai"] = Field(
        "none",
        description="Captioning backend. 'none' skips captioning (scenes are marked 'skipped: no captioner "
        "configured'); 'gemini' uses google-genai and needs GEMINI_API_KEY or GOOGLE_API_KEY; 'openai' uses any "
        "OpenAI-compatible chat server (vLLM, SGLang, OpenAI) at base_url, with OPENAI_API_KEY if it needs one.",
    )
    model: str = Field(
        "gemini-2.5-flash",
        description="Model name sent to the backend (for 'openai', the model the server serves, e.g. "
        "'Qwen/Qwen2.5-VL-7B-Instruct').",
    )
    base_url: str | None = Field(
        None,
        description="Endpoint override. Gemini: replaces https://generativelanguage.googleapis.com (proxies, "
        "tests). OpenAI: the server's API root, e.g. http://localhost:8000/v1 (required unless OPENAI_API_KEY "
        "targets api.openai.com).",
    )
    api_version: str = Field("v1beta", description="Gemini REST API version (Files and Batch APIs need v1beta).")
    prompt_version: str = Field(
        "v1", description="Version of the group-caption prompt: prompts/caption_{version}.txt, stored per caption."
    )
    fps: float = Field(
        1.0, gt=0, description="Frames per second the model samples from each shot (Gemini VideoMetadata)."
    )
    media_resolution: Literal["low", "medium", "high"] = Field(
        "low",
        description="Gemini media resolution: tokens per sampled frame ~66 (low) or ~258 (medium, high). "
        "For 'openai', frames are sent with the short side of frame_short_side pixels.",
    )
    openai_media: Literal["frames", "video"] = Field(
        "frames",
        description="How shots reach an OpenAI-compatible server: sampled JPEG frames as image_url parts, or "
        "the MP4 clip as a video_url part (vLLM/SGLang video models).",
    )
    frame_short_side: int = Field(384, ge=16, description="Short side in pixels of frames sampled for 'openai'.")
    max_frames_per_shot: int = Field(8, ge=1, description="At most this many frames are sampled per shot ('openai').")
    inline_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Gemini: a scene whose clips total at most this many bytes is sent inline; larger scenes "
        "upload each clip through the Files API and wait until it is ACTIVE (the request limit is 20 MB).",
    )
    file_poll_s: float = Field(
        1.0, gt=0, description="Seconds between Files API state polls while a file is PROCESSING."
    )
    file_timeout_s: float = Field(
        300.0, gt=0, description="An uploaded file not ACTIVE after this long fails the scene."
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature of caption requests.")
    max_output_tokens: int = Field(4096, ge=1, description="Cap on output tokens per caption request.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before one request is abandoned (then retried).")
    max_retries: int = Field(5, ge=0, description="Retries of a request after 429, 5xx, timeouts or connection errors.")
    backoff_initial_s: float = Field(2.0, ge=0, description="First retry delay; doubled per retry, with full jitter.")
    backoff_max_s: float = Field(60.0, ge=0, description="Upper bound of one retry delay.")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once per stage instance.")
    rpm: int = Field(1000, ge=0, description="Requests-per-minute budget (0: unlimited).")
    tpm: int = Field(
        4_000_000, ge=0, description="Input-tokens-per-minute budget, from estimated prompt sizes (0: none)."
    )
    batch: bool = Field(
        False,
        description="Gemini Batch API mode (half price, hours of latency): the scenes of a batch go in one batch "
        "job, polled every batch_poll_s; failed entries become rejects.",
    )
    batch_poll_s: float = Field(30.0, gt=0, description="Seconds between batch job state polls.")
    batch_timeout_s: float = Field(86_400.0, gt=0, description="A batch job not finished after this long is abandoned.")
    batch_discount: float = Field(
        0.5, gt=0, le=1, description="Price factor applied to tokens billed through the Batch API."
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        description="US dollar prices per model name; a model missing here is costed at 0 with a warning.",
    )
    output_tokens_per_shot: int = Field(90, ge=0, description="Dry-run estimate of caption output tokens per shot.")
    output_tokens_per_scene: int = Field(250, ge=0, description="Dry-run estimate of registry + setting output tokens.")


class VerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Verify each shot's caption with a second request per scene.")
    model: str | None = Field(None, description="Verification model; None uses caption.model.")
    prompt_version: str = Field("v1", description="Version of the verification prompt: prompts/verify_{version}.txt.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of verification requests.")
    per_shot: bool = Field(
        False,
        description="One request per shot (shot clip + its caption) instead of one per scene with every shot.",
    )
    on_wrong: Literal["drop_shot", "reject_scene"] = Field(
        "drop_shot",
        description="What a shot judged 'wrong' does: dropped alone (reject row 'caption-wrong'), or rejects "
        "its whole scene.",
    )
    min_shots: int = Field(
        2, ge=1, description="A scene left with fewer shots after drops is rejected: 'too-few-shots'."
    )
    output_tokens_per_shot: int = Field(
        60, ge=0, description="Dry-run estimate of verification output tokens per shot."
    )
