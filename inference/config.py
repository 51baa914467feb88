"""Sampling settings and story scripts (pydantic; YAML files with ``--set`` overrides via ``load_config``)."""

from __future__ import annotations

import os
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from curation.config import EmbedConfig, Section, validation_problems
from curation.errors import ConfigError
from training.config import SAMPLING_DEFAULTS_FILE

Unit = Annotated[float, Field(ge=0, le=1)]  # a coordinate relative to the frame


class SampleConfig(Section):
    """How a story is generated: model, encoders, resolution, solver, guidance and caches."""

    checkpoint: str = Field(
        "",
        description="Model: a FilmWeaver checkpoint folder (a trainer's `model/`), a preset name, or a "
        "diffusers Wan checkpoint (folder or hub id). Set by `filmweaver sample --checkpoint`.",
    )
    encoders: str | None = Field(
        None,
        description="Diffusers Wan checkpoint with vae/, text_encoder/ and tokenizer/; None: the checkpoint "
        "itself when it has vae/, else its parent folder when that has vae/.",
    )
    height: int = Field(480, ge=16, description="Frame height in pixels (a multiple of VAE stride x patch).")
    width: int = Field(832, ge=16, description="Frame width in pixels (a multiple of VAE stride x patch).")
    chunk_frames: int = Field(5, ge=1, description="Latent frames generated per chunk (as the trainer's chunks).")
    num_steps: int = Field(50, ge=1, description="Euler steps of the flow-matching solver per chunk.")
    shift: float = Field(5.0, gt=0, description="Timestep shift of the solver's sigmas (Wan: 3 at 480p, 5 at 720p).")
    guidance_scale: float = Field(
        5.0, ge=0, description="Classifier-free guidance on text; 1 disables the second pass."
    )
    negative_prompt: str = Field("", description="Prompt of the unconditional branch (empty: as in training).")
    text_len: int = Field(512, ge=1, description="Text embeddings are zero-padded to this many tokens (as training).")
    shot_cache_size: int = Field(3, ge=0, description="Keyframes K retrieved into the shot cache for a new shot.")
    seed: int = Field(
        0,
        ge=0,
        description="Seed of the initial noise and cache noise (a round's noise is a function "
        "of the seed, round and chunk only, so resumed and uninterrupted runs agree).",
    )
    fps: int = Field(16, ge=1, description="Frame rate of the written MP4s (Wan: 16).")
    device: str = Field("auto", description="Torch device: 'auto', 'cpu' or 'cuda[:N]'.")
    embed: EmbedConfig = Field(
        default_factory=lambda: EmbedConfig(backend="auto"),
        description="CLIP embedder for shot-cache retrieval and evaluation (see curation/embed.py).",
    )


def with_training_defaults(config: SampleConfig) -> SampleConfig:
    """``config`` with the values the trainer recorded beside the checkpoint (``sampling.json``: encoders,
    height, width, fps, chunk_frames, text_len, shift, shot_cache_size) for every field not set explicitly
    (in the config file or by ``--set``); unchanged when the checkpoint has no such record."""
    import json

    path = os.path.join(config.checkpoint, SAMPLING_DEFAULTS_FILE)
    if not os.path.isfile(path):
        return config
    with open(path) as f:
        recorded = json.load(f)
    unknown = set(recorded) - set(SampleConfig.model_fields)
    if unknown:
        raise ConfigError(f"{path} holds unknown sampling settings {sorted(unknown)}")
    update = {k: v for k, v in recorded.items() if k not in config.model_fields_set}
    return SampleConfig.model_validate({**config.model_dump(exclude_unset=True), **update})


class Reference(Section):
    """A user image injected into the shot cache (multi-concept injection)."""

    image: str = Field(description="Image file (resized to cover the frame and centre-cropped).")
    label: str | None = Field(None, description="Optional name of the concept (e.g. a character id).")


class ShotSpec(Section):
    """One round of a story: a new shot, or an extension of the current shot (``extend: true``)."""

    prompt: str = Field(description="Text prompt of the shot.")
    chunks: int = Field(1, ge=1, description="Length of the round in chunks.")
    extend: bool = Field(False, description="Continue the current shot (temporal cache kept) instead of cutting.")
    references: list[Reference] = Field(
        default_factory=list, description="Images injected into the shot cache; always used for this round."
    )
    characters: dict[str, tuple[Unit, Unit, Unit, Unit]] = Field(
        default_factory=dict,
        description="For evaluation: character name -> box (x0, y0, x1, y1) in 0..1 on this round's keyframe.",
    )

    @field_validator("references", mode="before")
    @classmethod
    def _plain_paths(cls, refs):
        return [{"image": r} if isinstance(r, str) else r for r in refs or []]


class StoryScript(Section):
    """A story: rounds run in order; the first round cannot be an extension."""

    shots: list[ShotSpec] = Field(min_length=1, description="Rounds of the story, in order.")

    @field_validator("shots")
    @classmethod
    def _first_is_a_shot(cls, shots: list[ShotSpec], info: ValidationInfo) -> list[ShotSpec]:
        continuation = bool(info.context and info.context.get("continuation"))
        if shots and shots[0].extend and not continuation:
            raise ValueError("the first round of a story cannot be an extension (extend: true)")
        return shots


def load_script(path: str, continuation: bool = False) -> StoryScript:
    """A story script from YAML; relative reference paths are resolved against the script's folder.
    ``continuation``: the rounds extend a session, so the first may continue its last shot (``extend``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"story script not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        script = StoryScript.model_validate(data, context={"continuation": continuation})
    except yaml.YAMLError as exc:
        raise ConfigError(f"story script {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"invalid story script {path}: {validation_problems(exc)}") from None
    base = os.path.dirname(os.path.abspath(path))
    for shot in script.shots:
        for ref in shot.references:
            ref.image = os.path.join(base, ref.image)
    return script
