"""Training and precompute configuration: pydantic sections, loaded from YAML with ``--set`` overrides
through ``curation.config.load_config(..., cls=TrainConfig)``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from curation.config import EmbedConfig, Section

CACHE_MODES = ("none", "temporal", "shot", "both")
Beta = Annotated[float, Field(ge=0, lt=1)]
Weight = Annotated[float, Field(ge=0)]

# Written by the trainer beside the exported weights (``model/sampling.json``): the SampleConfig values that
# match the training data (encoders, frame size and rate, chunk length, text length, shift, shot-cache size).
SAMPLING_DEFAULTS_FILE = "sampling.json"


class ModelConfig(Section):
    name: str = Field(
        "tiny",
        description="Model to train: a preset ('tiny', 'wan2.1-1.3b' with random weights), a FilmWeaver "
        "checkpoint folder, or a diffusers Wan checkpoint (local folder or hub id, e.g. "
        "'Wan-AI/Wan2.1-T2V-1.3B-Diffusers').",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute block activations in backward.")
    lora_rank: int = Field(
        0,
        ge=0,
        description="0: full fine-tuning. >0: LoRA fine-tuning (peft) of rank r on the transformer's "
        "lora_targets; only the adapters and the new temporal-cache embeddings train, and the exported model "
        "has the adapters merged into the weights (a plain checkpoint).",
    )
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scale numerator (scale = alpha / rank); None: rank.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"],
        description="Module-name suffixes of the Wan transformer's linear layers that get LoRA adapters.",
    )


class DataConfig(Section):
    latents: str | None = Field(None, description="Latent dataset folder written by `filmweaver precompute`.")
    chunk_frames: int = Field(5, ge=1, description="Latent frames per target chunk; shorter shots are skipped.")
    shot_cache_size: int = Field(
        3,
        ge=0,
        description="Keyframes K in the shot cache: the other shots of the scene most similar (CLIP) to the "
        "target shot's keyframe.",
    )
    shot_cache_retrieval: Literal["text", "image"] = Field(
        "text",
        description="How the shot cache's keyframes are picked among the scene's other shots: 'text' ranks "
        "them by CLIP similarity of their keyframe to the target shot's caption, as the sampler does "
        "(FilmWeaver); 'image' by similarity to the target shot's own keyframe. 'text' needs latents "
        "precomputed with an embedder that has a text tower (clip_text.npy), else 'image' is used (warned once).",
    )
    negative_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Probability that a shot-cache entry is a keyframe of another scene."
    )
    text_dropout: float = Field(0.1, ge=0.0, le=1.0, description="Probability of the empty caption (for CFG).")
    text_len: int = Field(
        512, ge=1, description="Text embeddings are zero-padded (or cut) to this many tokens, as Wan."
    )
    timestep_shift: float = Field(
        5.0, gt=0, description="Shift of the target timestep distribution (Wan uses 5 at 480p)."
    )
    prefetch: int = Field(
        2,
        ge=0,
        le=64,
        description="Micro-batches read and built ahead of the GPU by a background thread (pinned host memory "
        "on CUDA); 0 builds each one in the training loop. Samples are the same either way (exact resume).",
    )


class CurriculumConfig(Section):
    stage2_step: int = Field(
        200,
        ge=0,
        description="Optimizer step at which stage 2 (all cache modes) replaces stage 1 (temporal only); must be "
        "below optim.max_steps so that both stages run (for temporal only, set stage2_mix to {temporal: 1}).",
    )
    stage2_mix: dict[str, Weight] = Field(
        default_factory=lambda: {"none": 0.1, "temporal": 0.3, "shot": 0.3, "both": 0.3},
        description="Stage-2 proportions of the cache modes none / temporal / shot / both (normalised).",
    )

    @field_validator("stage2_mix")
    @classmethod
    def _known_modes(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = set(mix) - set(CACHE_MODES)
        if unknown or not mix or sum(mix.values()) <= 0:
            raise ValueError(f"stage2_mix needs non-negative weights over {CACHE_MODES}, got {mix}")
        return mix


class OptimConfig(Section):
    lr: float = Field(1e-4, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warmup from 0, in optimizer steps.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warmup, from lr to min_lr_ratio * lr at max_steps."
    )
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final learning rate as a fraction of lr.")
    max_steps: int = Field(1000, ge=1, description="Optimizer steps of the run.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    micro_batch: int = Field(
        1,
        ge=1,
        le=1024,
        description="Samples per forward pass, all of one latent layout (target shape, temporal-cache length, "
        "shot-cache size): samples wait in per-layout buckets until one is full (or, past 4x this many "
        "waiting, the fullest goes as it is). 1: one sample per pass.",
    )
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 disables.")
    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="EMA decay of the weights kept for sampling; 0 disables EMA."
    )


class LogConfig(Section):
    tensorboard: bool = Field(
        True,
        description="TensorBoard event files in <out_dir>/tensorboard (rank 0): loss per cache mode, lr, grad "
        "norm, tokens/s, samples/s, validation losses.",
    )
    wandb: bool = Field(False, description="Also log to Weights & Biases (needs `pip install wandb`).")
    wandb_project: str = Field("filmweaver", description="wandb project of the run (log.wandb=true).")


class ValidationConfig(Section):
    every_steps: int = Field(
        0,
        ge=0,
        description="Held-out flow-matching loss every N optimizer steps and at the last step (EMA weights, "
        "fixed samples and noise) to validation.jsonl and the logs; 0 turns validation off.",
    )
    scenes: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Scenes held out of training for validation (a seeded pick); each gives one sample per "
        "cache mode it can make.",
    )
    sample: bool = Field(
        False,
        description="Also sample a short MP4 per validation scene into <out_dir>/validation/step_NNNNNN/ with "
        "the sampler (loads the VAE and text encoder the latents were made with; slow on big models).",
    )
    sample_steps: int = Field(10, ge=1, le=1000, description="Denoising steps of the validation MP4s.")


class DistributedConfig(Section):
    num_workers: int = Field(1, ge=1, description="Ray Train workers; 1 runs the loop in this process without Ray.")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="Data parallel strategy for Ray Train workers.")
    use_gpu: bool | None = Field(None, description="One GPU per worker; None: when CUDA is available.")


class TrainConfig(Section):
    """A training run: model, data, curriculum, optimizer, checkpoints."""

    out_dir: str = Field("runs/train", description="Run folder: checkpoints, metrics.jsonl, final EMA weights.")
    seed: int = Field(0, ge=0, description="Seed of data order, sample construction and noise (exactly reproducible).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Autocast precision; 'auto' is bf16 on CUDA and fp32 on CPU."
    )
    log_every: int = Field(10, ge=1, description="Log mean losses (overall and per cache mode) every N steps.")
    checkpoint_every: int = Field(500, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest deleted first).")
    resume: bool = Field(True, description="Resume from the newest checkpoint in out_dir when there is one.")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    optim: OptimConfig = OptimConfig()
    distributed: DistributedConfig = DistributedConfig()
    log: LogConfig = LogConfig()
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _both_stages_run(self) -> TrainConfig:
        if self.curriculum.stage2_step >= self.optim.max_steps:
            raise ValueError(
                f"curriculum.stage2_step={self.curriculum.stage2_step} >= optim.max_steps={self.optim.max_steps}: "
                "stage 2 (shot cache) would never run; lower curriculum.stage2_step (a temporal-only run sets "
                "curriculum.stage2_mix={temporal: 1})"
            )
        if self.validation.sample and self.distributed.strategy == "fsdp" and self.distributed.num_workers > 1:
            raise ValueError(
                "validation.sample=true needs the full model on rank 0 and does not run under FSDP: set "
                "validation.sample=false (the validation loss still runs) or distributed.strategy=ddp"
            )
        return self


class PrecomputeConfig(Section):
    """Encoding of scene shards into latent shards (``pipelines/precompute.py``)."""

    checkpoint: str = Field(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        description="Diffusers Wan checkpoint (folder or hub id) with vae/, text_encoder/ and tokenizer/.",
    )
    height: int = Field(480, ge=16, description="Frames are resized (cover) and centre-cropped to this height.")
    width: int = Field(832, ge=16, description="Frames are resized (cover) and centre-cropped to this width.")
    fps: float = Field(16.0, gt=0, description="Shots are resampled to this frame rate before encoding (Wan: 16).")
    max_frames: int = Field(81, ge=1, description="At most this many frames per shot (4k+1; Wan: 81 = 21 latents).")
    text_len: int = Field(512, ge=1, description="Tokenizer max length of captions.")
    device: str = Field("auto", description="Torch device of the encoders: 'auto', 'cpu' or 'cuda'.")
    num_actors: int = Field(1, ge=1, description="Encoder actors (each loads the VAE and text encoder once).")
    embed: EmbedConfig = Field(
        default_factory=lambda: EmbedConfig(backend="auto"),
        description="CLIP embedder of the shot keyframes (image) and captions (text) for shot-cache retrieval; "
        "use the sampler's embed settings so training retrieves as sampling does.",
    )
    max_shard_bytes: int = Field(1_000_000_000, ge=1, description="A latent shard is closed at this many bytes.")
