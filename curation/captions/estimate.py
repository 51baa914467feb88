"""``--dry-run``: tokens, requests and dollars that captioning and verification would spend, without network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import CurateConfig
from ..stage import SceneUnit
from .config import CaptionConfig
from .media import media_tokens, text_tokens
from .prompts import load_prompt

_CAPTION_CHARS_PER_SHOT = 280  # a verify request quotes each shot's caption


@dataclass
class CostEstimate:
    """Totals for the scenes given; ``per_hour`` scales them to one hour of video. ``cost_usd`` is None when a
    model has no entry in ``caption.prices`` (``unpriced`` names them); nothing is requested with backend none."""

    backend: str
    model: str
    scenes: int
    shots: int
    video_s: float
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    batch: bool
    unpriced: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def per_hour(self) -> dict[str, float | None]:
        k = 3600.0 / self.video_s if self.video_s > 0 else 0.0
        return {
            "input_tokens": self.input_tokens * k,
            "output_tokens": self.output_tokens * k,
            "cost_usd": None if self.cost_usd is None else self.cost_usd * k,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_hour": self.per_hour()}

    def summary(self) -> str:
        video = f"{self.scenes} scenes, {self.shots} shots, {self.video_s:.0f} s of video"
        if self.backend == "none":
            return (
                f"caption.backend=none: no captioning requests will be made and nothing is spent ({video}); "
                "set caption.backend=gemini or openai to estimate their cost"
            )
        h = self.per_hour()
        if self.cost_usd is None:
            price = (
                f"price unknown: no caption.prices entry for {', '.join(self.unpriced)} (add one in a --config "
                f'file, or --set \'caption.prices={{"{self.unpriced[0]}": {{input_per_million: X, '
                "output_per_million: Y}}')"
            )
            hourly = ""
        else:
            price = f"${self.cost_usd:.4f}{' (batch price)' if self.batch else ''}"
            hourly = f", ${h['cost_usd']:.2f}"
        lines = [f"warning: {w}" for w in self.warnings]
        lines.append(
            f"{self.backend}/{self.model}: {video} -> {self.requests} requests, {self.input_tokens:,} input + "
            f"{self.output_tokens:,} output tokens, {price}; per hour of video: {h['input_tokens']:,.0f} + "
            f"{h['output_tokens']:,.0f} tokens{hourly}"
        )
        return "\n".join(lines)


def _price(cfg: CaptionConfig, model: str, tokens_in: int, tokens_out: int) -> float | None:
    """US dollars for the tokens, or None when ``model`` has no price."""
    p = cfg.prices.get(model)
    if p is None:
        return None
    usd = (tokens_in * p.input_per_million + tokens_out * p.output_per_million) / 1e6
    return usd * (cfg.batch_discount if cfg.batch and cfg.backend == "gemini" else 1.0)


def estimate_cost(
    config: CurateConfig,
    scenes: list[SceneUnit] | None = None,
    shot_durations: list[list[float]] | None = None,
) -> CostEstimate:
    """Estimate caption + verification spend for scenes (``SceneUnit``s, or shot durations in seconds per scene).

    Token counts follow the backend's media accounting (Gemini: tokens per sampled frame at the configured fps
    and media resolution; OpenAI-compatible: 28x28-pixel patches of sampled frames), prompts at 4 characters a
    token, outputs from ``caption.output_tokens_per_*``. Repairs and retries are not included.
    """
    cfg, vcfg = config.caption, config.verify
    if shot_durations is None:
        shot_durations = [[s.duration_s for s in u.shots] for u in scenes or []]
    cap = config.export.max_shot_s
    shot_durations = [[min(d, cap) if cap else d for d in ds] for ds in shot_durations]
    warnings = []
    model = cfg.model
    if cfg.backend == "openai" and "model" not in cfg.model_fields_set:  # the default names a Gemini model
        model = "(caption.model unset)"
        warnings.append("caption.model is not set: set it to the model your OpenAI-compatible server serves")
    cap_prompt = text_tokens(load_prompt("caption", cfg.prompt_version)) + 20
    ver_prompt = text_tokens(load_prompt("verify", vcfg.prompt_version)) + 60
    requests = tin = tout = 0
    vin = vout = 0
    for ds in shot_durations:
        media = sum(media_tokens(d, cfg) for d in ds)
        requests += 1
        tin += cap_prompt + media + 5 * len(ds)
        tout += cfg.output_tokens_per_scene + cfg.output_tokens_per_shot * len(ds)
        if vcfg.enabled:
            n_req = len(ds) if vcfg.per_shot else 1
            requests += n_req
            vin += ver_prompt * n_req + media + len(ds) * (_CAPTION_CHARS_PER_SHOT // 4)
            vout += vcfg.output_tokens_per_shot * len(ds)
    verify_model = vcfg.model or model
    costs = {model: _price(cfg, model, tin, tout)}
    if vcfg.enabled:
        verify_cost = _price(cfg, verify_model, vin, vout)
        costs[verify_model] = None if verify_cost is None else verify_cost + (costs.get(verify_model) or 0.0)
    unpriced = [] if cfg.backend == "none" else sorted(m for m, usd in costs.items() if usd is None)
    if unpriced:
        warnings.append(f"no price for {', '.join(unpriced)} in caption.prices: the cost is unknown")
    return CostEstimate(
        backend=cfg.backend,
        model=model if verify_model == model or not vcfg.enabled else f"{model} + {verify_model}",
        scenes=len(shot_durations),
        shots=sum(len(ds) for ds in shot_durations),
        video_s=sum(sum(ds) for ds in shot_durations),
        requests=requests,
        input_tokens=tin + vin,
        output_tokens=tout + vout,
        cost_usd=None if unpriced or cfg.backend == "none" else sum(costs.values()),
        batch=cfg.batch and cfg.backend == "gemini",
        unpriced=unpriced,
        warnings=warnings,
    )


def estimate_for_videos(
    config: CurateConfig, video_durations_s: list[float], shot_s: float = 3.0, shots_per_scene: int = 4
) -> CostEstimate:
    """Estimate from whole-video durations before shot detection: every second is assumed to end up in a
    kept shot of ``shot_s`` seconds, ``shots_per_scene`` shots per scene (an upper bound: filters drop some).
    """
    scenes: list[list[float]] = []
    for total in video_durations_s:
        shots = [shot_s] * int(total // shot_s) + ([total % shot_s] if total % shot_s > 0.5 else [])
        scenes += [shots[i : i + shots_per_scene] for i in range(0, len(shots), shots_per_scene)]
    return estimate_cost(config, shot_durations=scenes)
