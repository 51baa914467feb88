"""The two LLM stages: ``GroupCaptioner`` (one request per scene) and ``CaptionVerifier``.

Both have an async core (``process_async``, ``process_batch_async``) so an async actor pool can keep many
requests in flight; ``process`` / ``process_batch`` drive it on a private event loop. A batch runs its
scenes concurrently under ``caption.concurrency`` and the requests/min and tokens/min budgets.

Stage counters besides the request engine's (see ``client.py``): ``scenes_skipped`` (no backend),
``repair_requests`` (a response failed the structural checks and was asked again), ``shots_refined`` and
``shots_wrong`` (verification verdicts), ``scenes_not_verified`` (not captioned, or verification off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from ..config import CurateConfig
from ..records import CaptionRecord, Reject
from ..stage import SceneUnit, Stage, _as_reject
from .backends import LLMRequest, make_backend, redact
from .cache import ResponseCache
from .client import LLMClient
from .media import ShotMedia, media_tokens, scene_media, text_tokens
from .prompts import load_prompt
from .render import CHAR_REF, StructureError, check_scene, check_verification, describe, render
from .schema import Character, SceneCaptions, SceneVerification, ShotVerdict

log = logging.getLogger(__name__)

SKIPPED = "skipped: no captioner configured"
CAPTIONED = "captioned"
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def _parse(text: str, schema: type[BaseModel]) -> tuple[Any, list[StructureError]]:
    try:
        return schema.model_validate_json(_FENCE.sub("", text)), []
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "response"
        return None, [
            StructureError("malformed-response", f"not valid {schema.__name__} JSON: {where}: {first['msg']}")
        ]


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    for k, v in usage.items():
        total[k] = total.get(k, 0) + v
    return total


class _LLMStage(Stage):
    """Shared machinery: backend, cache and client construction, the event loop, ask-with-one-repair."""

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config
        self.cfg = config.caption
        self.client: LLMClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.enabled():
            cache = ResponseCache(os.path.join(out_dir, "llm_cache") if out_dir else None)
            self.client = LLMClient(make_backend(self.cfg), self.cfg, cache, self.stats.counts)

    def enabled(self) -> bool:
        return self.cfg.backend != "none"

    async def process_async(self, unit: SceneUnit) -> SceneUnit | Reject:
        raise NotImplementedError

    async def _guarded_async(self, unit: SceneUnit) -> SceneUnit | Reject:
        try:
            return await self.process_async(unit)
        except Exception as exc:  # noqa: BLE001 - one failed scene must not take its batch with it
            rej = _as_reject(self, unit, exc)
            rej.detail = redact(rej.detail)
            return rej

    async def process_batch_async(self, units: list[SceneUnit]) -> list[SceneUnit | Reject]:
        """Every scene of the batch concurrently; failures come back as ``Reject`` rows, in order."""
        return list(await asyncio.gather(*(self._guarded_async(u) for u in units)))

    def _run(self, coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} called inside a running event loop: await process_async")
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def process(self, unit: SceneUnit) -> SceneUnit | Reject:
        return self._run(self._guarded_async(unit))

    def process_batch(self, units: list[SceneUnit]) -> list[SceneUnit | Reject]:
        return self._run(self.process_batch_async(units))

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            if self.client is not None:
                self._loop.run_until_complete(self.client.aclose())
            self._loop.close()

    async def _ask(
        self, req: LLMRequest, check: Any, shots: list[int], prompt_version: str
    ) -> tuple[Any, dict[str, Any]]:
        """Ask, check the answer's structure, repair once with the errors stated, else raise ``CaptionFailed``."""
        from ..errors import CaptionFailed

        resp, usage = await self.client.call(req)
        parsed, errors = _parse(resp.text, req.schema)
        errors = errors or check(parsed)
        if not errors:
            return parsed, usage
        self.stats.counts["repair_requests"] += 1
        listed = "\n".join(f"- {e.message}" for e in errors)
        note = load_prompt("repair", prompt_version).format(
            errors=listed, n_shots=len(shots), shot_list=", ".join(map(str, shots))
        )
        repair = LLMRequest(**{**req.__dict__, "history": [("model", resp.text), ("user", note)]})
        resp, usage2 = await self.client.call(repair)
        _add_usage(usage, usage2)
        parsed, errors = _parse(resp.text, req.schema)
        errors = errors or check(parsed)
        if errors:
            detail = "; ".join(e.message for e in errors)
            raise CaptionFailed(f"{detail} (still wrong after one repair request)", reason=errors[0].reason)
        return parsed, usage

    def _media(self, unit: SceneUnit) -> list[ShotMedia]:
        return scene_media(unit, self.config.export.max_shot_s)


class GroupCaptioner(_LLMStage):
    """Caption every shot of a scene in one request: a character registry, the setting, per-shot captions."""

    name = "caption"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__(config, out_dir)
        if self.client is None:
            log.warning("captioning is off (caption.backend=none): scenes are marked %r", SKIPPED)

    def request(self, unit: SceneUnit, media: list[ShotMedia]) -> LLMRequest:
        prompt = load_prompt("caption", self.cfg.prompt_version).format(
            scene_id=unit.scene.scene_id, n_shots=len(media)
        )
        parts: list[str | ShotMedia] = [prompt]
        for m in media:
            parts += [f"Shot {m.index}:", m]
        return LLMRequest(
            key=f"{unit.scene.scene_id}-caption",
            model=self.cfg.model,
            parts=parts,
            schema=SceneCaptions,
            temperature=self.cfg.temperature,
            max_output_tokens=self.cfg.max_output_tokens,
            prompt_version=f"caption_{self.cfg.prompt_version}",
            est_input_tokens=text_tokens(prompt) + sum(media_tokens(m.duration_s, self.cfg) for m in media),
        )

    async def process_async(self, unit: SceneUnit) -> SceneUnit | Reject:
        if self.client is None:
            unit.scene.caption_status = SKIPPED
            self.stats.counts["scenes_skipped"] += 1
            return unit
        media = self._media(unit)
        req = self.request(unit, media)
        shots = list(range(len(media)))
        resp, usage = await self._ask(req, lambda r: check_scene(r, len(media)), shots, self.cfg.prompt_version)
        registry = {c.id: c for c in resp.characters}
        by_shot = {s.shot: s for s in resp.shots}
        unit.captions = [
            CaptionRecord(
                shot_id=shot.shot_id,
                scene_id=unit.scene.scene_id,
                caption=render(by_shot[i].caption, registry),
                caption_template=by_shot[i].caption,
                characters=list(dict.fromkeys([*by_shot[i].characters, *CHAR_REF.findall(by_shot[i].caption)])),
                shot_type=by_shot[i].shot_type,
                camera_movement=by_shot[i].camera_movement,
                model=self.cfg.model,
                prompt_version=req.prompt_version,
            )
            for i, shot in enumerate(unit.shots)
        ]
        unit.annotation["characters"] = [{**c.model_dump(), "description": describe(c)} for c in resp.characters]
        unit.annotation["setting"] = resp.setting.model_dump()
        unit.annotation.setdefault("usage", {})["caption"] = usage
        unit.scene.caption_status = CAPTIONED
        unit.scene.n_characters = len(registry)
        return unit


class CaptionVerifier(_LLMStage):
    """Check each shot's caption against its clip: keep, refine, or drop the shot (or the scene)."""

    name = "verify"

    def enabled(self) -> bool:
        return self.cfg.backend != "none" and self.config.verify.enabled

    def request(
        self, unit: SceneUnit, media: list[ShotMedia], group: list[int], registry: dict[str, Character]
    ) -> LLMRequest:
        vcfg = self.config.verify
        reg_text = "\n".join(f"{{{c.id}}}: {describe(c)}" for c in registry.values()) or "(no characters)"
        prompt = load_prompt("verify", vcfg.prompt_version).format(scene_id=unit.scene.scene_id, registry=reg_text)
        parts: list[str | ShotMedia] = [prompt]
        for i in group:
            parts += [f"Shot {i}:", media[i], f"Proposed caption of shot {i}: {unit.captions[i].caption_template}"]
        return LLMRequest(
            key=f"{unit.scene.scene_id}-verify-{group[0]}",
            model=vcfg.model or self.cfg.model,
            parts=parts,
            schema=SceneVerification,
            temperature=vcfg.temperature,
            max_output_tokens=self.cfg.max_output_tokens,
            prompt_version=f"verify_{vcfg.prompt_version}",
            est_input_tokens=text_tokens(prompt) + sum(media_tokens(media[i].duration_s, self.cfg) for i in group),
        )

    async def _verify(
        self, unit: SceneUnit, media: list[ShotMedia], group: list[int], registry: dict[str, Character]
    ) -> tuple[SceneVerification, dict[str, Any]]:
        req = self.request(unit, media, group, registry)
        ids = set(registry)
        return await self._ask(
            req, lambda r: check_verification(r, group, ids), group, self.config.verify.prompt_version
        )

    async def process_async(self, unit: SceneUnit) -> SceneUnit | Reject:
        if self.client is None or unit.scene.caption_status != CAPTIONED or not unit.captions:
            self.stats.counts["scenes_not_verified"] += 1
            return unit
        vcfg = self.config.verify
        registry = {
            c["id"]: Character(**{k: c[k] for k in Character.model_fields}) for c in unit.annotation["characters"]
        }
        media = self._media(unit)
        n = len(unit.captions)
        groups = [[i] for i in range(n)] if vcfg.per_shot else [list(range(n))]
        answers = await asyncio.gather(*(self._verify(unit, media, g, registry) for g in groups))
        verdicts: dict[int, ShotVerdict] = {}
        usage: dict[str, Any] = {}
        for resp, u in answers:
            verdicts.update({v.shot: v for v in resp.shots})
            _add_usage(usage, u)
        unit.annotation.setdefault("usage", {})["verify"] = usage
        model = vcfg.model or self.cfg.model
        wrong: list[int] = []
        for i, rec in enumerate(unit.captions):
            v = verdicts[i]
            rec.verdict = v.verdict
            rec.problems = [f"{p.kind}: {p.detail}" for p in v.problems]
            if v.verdict == "fixed":
                self.stats.counts["shots_refined"] += 1
                rec.caption_template = v.refined_caption
                rec.caption = render(v.refined_caption, registry)
                rec.characters = list(dict.fromkeys([*rec.characters, *CHAR_REF.findall(v.refined_caption)]))
                rec.model = f"{rec.model} + {model}" if model != rec.model else rec.model
            elif v.verdict == "wrong":
                self.stats.counts["shots_wrong"] += 1
                wrong.append(i)
        if not wrong:
            return unit
        why = "; ".join(f"shot {i}: {', '.join(unit.captions[i].problems) or 'wrong'}" for i in wrong)
        keep = [i for i in range(n) if i not in wrong]
        if vcfg.on_wrong == "reject_scene":
            return Reject(unit.item_id, unit.uri, self.name, "caption-wrong", why)
        if len(keep) < vcfg.min_shots:
            return Reject(unit.item_id, unit.uri, self.name, "too-few-shots", f"{len(keep)} shots left; {why}")
        for i in wrong:
            detail = ", ".join(unit.captions[i].problems) or "caption judged wrong"
            self.reject_child(unit, unit.shots[i].shot_id, "caption-wrong", detail)
        unit.shots = [unit.shots[i] for i in keep]
        unit.captions = [unit.captions[i] for i in keep]
        unit.clips = [unit.clips[i] for i in keep] if unit.clips else unit.clips
        unit.keyframes = [unit.keyframes[i] for i in keep] if unit.keyframes else unit.keyframes
        if isinstance(unit.embeddings, np.ndarray) and len(unit.embeddings) == n:
            unit.embeddings = unit.embeddings[keep]
        unit.scene.shot_ids = [s.shot_id for s in unit.shots]
        return unit
