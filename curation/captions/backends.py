"""LLM backends behind one async interface: Gemini (google-genai) and OpenAI-compatible chat servers.

A backend turns an ``LLMRequest`` into an ``LLMResponse`` with one HTTP call (plus Files API uploads for
large Gemini scenes) and maps failures to ``TransientError`` (retried by the client: 429, 5xx, timeouts,
connection errors) or ``CaptionFailed`` (permanent: bad request, file processing failed). Retries, rate
budgets and caching live in ``client.py``; SDK-level retries are switched off so they are counted once.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import json
import logging
import os
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..errors import CaptionerNotConfigured, CaptionFailed
from .config import CaptionConfig
from .media import ShotMedia, sample_frames

log = logging.getLogger(__name__)

GEMINI_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
# (endpoint, clip digest) -> uri of the uploaded file, shared by the caption and verify stages of a process
_UPLOADED: dict[tuple[str, str], str] = {}
SAFETY_FINISH = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"}


class TransientError(Exception):
    """A failure worth retrying; ``reason`` is the reject slug if retries run out."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@functools.cache
def json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a response model (pydantic builds it slowly: once per process)."""
    return schema.model_json_schema()


@functools.cache
def schema_digest(schema: type[BaseModel]) -> str:
    return hashlib.sha256(json.dumps(json_schema(schema), sort_keys=True).encode()).hexdigest()


@dataclass
class LLMRequest:
    """One model call: text and shot media in order, the output schema, and sampling parameters.

    ``parts`` are strings and ``ShotMedia``; ``history`` holds (role, text) turns appended after them (a
    repair request: the model's previous answer, then the errors). ``key`` names the request in batches.
    """

    key: str
    model: str
    parts: list[str | ShotMedia]
    schema: type[BaseModel]
    temperature: float
    max_output_tokens: int
    prompt_version: str
    history: list[tuple[str, str]] = field(default_factory=list)
    est_input_tokens: int = 0

    def media(self) -> list[ShotMedia]:
        return [p for p in self.parts if isinstance(p, ShotMedia)]

    def fingerprint(self) -> dict[str, Any]:
        """What determines the answer: every input of the cache key except backend parameters."""
        return {
            "model": self.model,
            "prompt_version": self.prompt_version,
            "schema": schema_digest(self.schema),
            "parts": [p if isinstance(p, str) else {"media": p.digest, "duration_s": p.duration_s} for p in self.parts],
            "history": self.history,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
        }


@dataclass
class LLMResponse:
    """A completed model answer; ``blocked`` names a safety block (then ``text`` may be empty)."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    blocked: str = ""
    finish_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLMResponse:
        return cls(**d)


class Backend:
    """Interface of a model backend; one instance serves every event loop of its stage."""

    name = "backend"
    supports_batch = False
    counts: Counter  # the owning stage's counters, set by the client

    def __init__(self) -> None:
        self.counts = Counter()

    def params(self) -> dict[str, Any]:
        """Backend parameters that change the answer (part of the cache key)."""
        return {"backend": self.name}

    async def generate(self, req: LLMRequest) -> LLMResponse:
        raise NotImplementedError

    async def generate_batch(self, reqs: list[LLMRequest], poll_s: float) -> list[LLMResponse | Exception]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close network sessions of the running event loop."""


def _status_error(code: int | None, message: str) -> Exception:
    msg = f"HTTP {code}: {message}"[:500]
    if code == 429:
        return TransientError("rate-limited", msg)
    if code is not None and code >= 500:
        return TransientError("server-error", msg)
    if code == 408:
        return TransientError("timeout", msg)
    return CaptionFailed(msg, reason="bad-request")


def _network_error(exc: BaseException) -> Exception | None:
    """Timeouts and connection failures of any transport (aiohttp, httpx) as ``TransientError``."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TransientError("timeout", f"no answer within the timeout ({type(exc).__name__})")
    mod = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    if "Timeout" in name:
        return TransientError("timeout", f"no answer within the timeout ({name})")
    if mod in {"aiohttp", "httpx", "httpx2", "httpcore"} or isinstance(exc, ConnectionError):
        return TransientError("connection-error", f"{name}: {exc}"[:300])
    return None


# --------------------------------------------------------------------------------------------- Gemini


class GeminiBackend(Backend):
    """Gemini through ``google-genai``'s async client, structured output with the pydantic schema."""

    name = "gemini"
    supports_batch = True

    def __init__(self, cfg: CaptionConfig):
        key = next((os.environ[v] for v in GEMINI_KEY_VARS if os.environ.get(v)), None)
        if not key:
            raise CaptionerNotConfigured(
                "caption.backend=gemini needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the "
                "environment, or use --set caption.backend=none to skip captioning"
            )
        from google import genai
        from google.genai import types

        self.cfg = cfg
        self.genai = genai
        self.types = types
        self._key = key
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}  # loop -> (client.aio, session)
        super().__init__()
        self._uploading: dict[tuple[Any, str], asyncio.Future] = {}  # (loop, digest) -> upload in flight

    @property
    def aio(self) -> Any:
        """google-genai's async client for the running event loop, on an aiohttp session of its own.

        google-genai's default session has ``trust_env=True``, so aiohttp reads ``~/.netrc`` and the proxy
        variables in a worker thread on every request: a quarter of the client's CPU at high concurrency.
        Ours trusts the environment only when a proxy is configured (the API key is a header, not netrc).
        """
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), trust_env=bool(urllib.request.getproxies())
            )
            opts = self.types.HttpOptions(
                base_url=self.cfg.base_url,
                api_version=self.cfg.api_version,
                timeout=int((self.cfg.timeout_s + 5) * 1000),
                aiohttp_client=session,
            )
            self._clients[loop] = (self.genai.Client(api_key=self._key, http_options=opts).aio, session)
        return self._clients[loop][0]

    def params(self) -> dict[str, Any]:
        return {"backend": self.name, "fps": self.cfg.fps, "media_resolution": self.cfg.media_resolution}

    async def _upload(self, media: ShotMedia) -> str:
        t = self.types
        f = await self.aio.files.upload(
            file=io.BytesIO(media.mp4),
            config=t.UploadFileConfig(mime_type="video/mp4", display_name=f"shot-{media.digest[:16]}"),
        )
        self.counts["llm_uploads"] += 1
        deadline = time.monotonic() + self.cfg.file_timeout_s
        while f.state is not None and f.state.name == "PROCESSING":
            if time.monotonic() > deadline:
                raise CaptionFailed(f"uploaded clip still PROCESSING after {self.cfg.file_timeout_s}s", "file-timeout")
            await asyncio.sleep(self.cfg.file_poll_s)
            f = await self.aio.files.get(name=f.name)
        if f.state is not None and f.state.name != "ACTIVE":
            raise CaptionFailed(f"uploaded clip ended in state {f.state.name}", "file-processing-failed")
        return f.uri

    async def _file_uri(self, media: ShotMedia) -> str:
        """Upload a clip once per run; concurrent requests for the same clip share the upload."""
        done_key = (self.cfg.base_url or "", media.digest)
        if done_key in _UPLOADED:
            return _UPLOADED[done_key]
        key = (asyncio.get_running_loop(), media.digest)
        fut = self._uploading.get(key)
        if fut is None:
            fut = self._uploading[key] = asyncio.ensure_future(self._upload(media))
        try:
            _UPLOADED[done_key] = await asyncio.shield(fut)
        finally:
            if fut.done():
                self._uploading.pop(key, None)
        return _UPLOADED[done_key]

    async def _contents(self, req: LLMRequest) -> list[Any]:
        t = self.types
        inline = sum(m.nbytes for m in req.media()) <= self.cfg.inline_max_bytes
        meta = t.VideoMetadata(fps=self.cfg.fps)
        parts = []
        for p in req.parts:
            if isinstance(p, str):
                parts.append(t.Part(text=p))
            elif p.mp4 is None:
                jpeg = sample_frames(p, 1.0, 1, 10_000)[0]
                parts.append(t.Part(inline_data=t.Blob(data=jpeg, mime_type="image/jpeg")))
            elif inline:
                parts.append(t.Part(inline_data=t.Blob(data=p.mp4, mime_type="video/mp4"), video_metadata=meta))
            else:
                uri = await self._file_uri(p)
                parts.append(t.Part(file_data=t.FileData(file_uri=uri, mime_type="video/mp4"), video_metadata=meta))
        contents = [t.Content(role="user", parts=parts)]
        contents += [t.Content(role=role, parts=[t.Part(text=text)]) for role, text in req.history]
        return contents

    def _config(self, req: LLMRequest) -> Any:
        t = self.types
        return t.GenerateContentConfig(
            temperature=req.temperature,
            max_output_tokens=req.max_output_tokens,
            response_mime_type="application/json",
            response_json_schema=json_schema(req.schema),
            media_resolution=f"MEDIA_RESOLUTION_{self.cfg.media_resolution.upper()}",
            automatic_function_calling=t.AutomaticFunctionCallingConfig(disable=True),
        )

    def _response(self, r: Any) -> LLMResponse:
        usage = r.usage_metadata
        out = LLMResponse(
            text="",
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0,
            model=r.model_version or "",
        )
        if r.prompt_feedback is not None and r.prompt_feedback.block_reason is not None:
            out.blocked = f"prompt blocked: {r.prompt_feedback.block_reason.name}"
            return out
        if not r.candidates:
            out.blocked = "no candidates returned"
            return out
        cand = r.candidates[0]
        out.finish_reason = cand.finish_reason.name if cand.finish_reason is not None else ""
        if out.finish_reason in SAFETY_FINISH:
            out.blocked = f"answer stopped: {out.finish_reason}"
        if cand.content is not None and cand.content.parts:
            out.text = "".join(p.text or "" for p in cand.content.parts if not p.thought)
        return out

    def _map_error(self, exc: Exception) -> Exception:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return _status_error(exc.code, str(exc.message or exc.status or ""))
        return _network_error(exc) or exc

    async def generate(self, req: LLMRequest) -> LLMResponse:
        try:
            contents = await self._contents(req)
            async with asyncio.timeout(self.cfg.timeout_s):
                r = await self.aio.models.generate_content(model=req.model, contents=contents, config=self._config(req))
        except (CaptionFailed, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error, or re-raised as a bug
            raise self._map_error(exc) from None
        return self._response(r)

    async def generate_batch(self, reqs: list[LLMRequest], poll_s: float) -> list[LLMResponse | Exception]:
        """One Batch API job for ``reqs`` (same model): submit, poll until done, collect per entry."""
        t = self.types
        try:
            src = [
                t.InlinedRequest(contents=await self._contents(r), config=self._config(r), metadata={"key": r.key})
                for r in reqs
            ]
            job = await self.aio.batches.create(
                model=reqs[0].model, src=src, config=t.CreateBatchJobConfig(display_name="filmweaver-captions")
            )
            log.info("batch job %s submitted with %d requests", job.name, len(reqs))
            deadline = time.monotonic() + self.cfg.batch_timeout_s
            done = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
            while job.state is None or job.state.name not in done:
                if time.monotonic() > deadline:
                    raise TransientError("timeout", f"batch job not finished after {self.cfg.batch_timeout_s}s")
                await asyncio.sleep(poll_s)
                job = await self.aio.batches.get(name=job.name)
        except (CaptionFailed, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._map_error(exc) from None
        if job.state.name != "JOB_STATE_SUCCEEDED":
            err = TransientError("server-error", f"batch job {job.name} ended {job.state.name}")
            return [err] * len(reqs)
        entries = (job.dest.inlined_responses if job.dest else None) or []
        by_key = {(e.metadata or {}).get("key"): e for e in entries}
        results: list[LLMResponse | Exception] = []
        for i, r in enumerate(reqs):
            e = by_key.get(r.key) or (entries[i] if i < len(entries) and not by_key else None)
            if e is None:
                results.append(TransientError("server-error", f"batch job {job.name} returned no entry for {r.key}"))
            elif e.error is not None:
                results.append(_status_error(e.error.code, e.error.message or ""))
            else:
                results.append(self._response(e.response))
        return results

    async def aclose(self) -> None:
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose()
            await entry[1].close()


# --------------------------------------------------------------------------------------------- OpenAI


class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat server through ``openai.AsyncOpenAI`` (JSON-schema response format)."""

    name = "openai"

    def __init__(self, cfg: CaptionConfig):
        key = os.environ.get("OPENAI_API_KEY")
        if not cfg.base_url and not key:
            raise CaptionerNotConfigured(
                "caption.backend=openai needs caption.base_url (e.g. http://localhost:8000/v1 for vLLM) or "
                "OPENAI_API_KEY for api.openai.com"
            )
        import openai

        super().__init__()
        self.cfg = cfg
        self.openai = openai
        self._key = key or "EMPTY"  # local servers accept any key
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            self._clients[loop] = self.openai.AsyncOpenAI(
                api_key=self._key, base_url=self.cfg.base_url, max_retries=0, timeout=self.cfg.timeout_s + 5
            )
        return self._clients[loop]

    def params(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "backend": self.name,
            "media": c.openai_media,
            "fps": c.fps,
            "frame_short_side": c.frame_short_side,
            "max_frames": c.max_frames_per_shot,
        }

    def _content(self, p: ShotMedia) -> list[dict[str, Any]]:
        if self.cfg.openai_media == "video" and p.mp4 is not None:
            url = "data:video/mp4;base64," + base64.b64encode(p.mp4).decode()
            return [{"type": "video_url", "video_url": {"url": url}}]
        frames = sample_frames(p, self.cfg.fps, self.cfg.max_frames_per_shot, self.cfg.frame_short_side)
        return [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(f).decode()}}
            for f in frames
        ]

    async def generate(self, req: LLMRequest) -> LLMResponse:
        content: list[dict[str, Any]] = []
        for p in req.parts:
            content += [{"type": "text", "text": p}] if isinstance(p, str) else self._content(p)
        messages = [{"role": "user", "content": content}]
        messages += [{"role": "assistant" if r == "model" else r, "content": text} for r, text in req.history]
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": req.schema.__name__, "schema": json_schema(req.schema)},
        }
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                r = await self._client().chat.completions.create(
                    model=req.model,
                    messages=messages,
                    temperature=req.temperature,
                    max_tokens=req.max_output_tokens,
                    response_format=fmt,
                )
        except self.openai.APIStatusError as exc:
            raise _status_error(exc.status_code, exc.message) from None
        except self.openai.APITimeoutError:
            raise TransientError("timeout", "no answer within the timeout") from None
        except self.openai.APIConnectionError as exc:
            raise TransientError("connection-error", f"cannot reach {self.cfg.base_url}: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            mapped = _network_error(exc)
            if mapped is None:
                raise
            raise mapped from None
        usage = r.usage
        out = LLMResponse(
            text="",
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=r.model or "",
        )
        if not r.choices:
            out.blocked = "no choices returned"
            return out
        choice = r.choices[0]
        out.finish_reason = choice.finish_reason or ""
        if out.finish_reason == "content_filter":
            out.blocked = "answer stopped: content_filter"
        out.text = choice.message.content or ""
        return out

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()


def redact(text: str) -> str:
    """``text`` with every API key of the environment replaced by ``[redacted]``."""
    for var in (*GEMINI_KEY_VARS, "OPENAI_API_KEY"):
        key = os.environ.get(var, "").strip()
        if len(key) >= 8:
            text = text.replace(key, "[redacted]")
    return text


def make_backend(cfg: CaptionConfig) -> Backend:
    """The backend named by ``cfg.backend`` (not 'none'); raises ``CaptionerNotConfigured`` without a key."""
    if cfg.backend == "gemini":
        return GeminiBackend(cfg)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg)
    raise CaptionerNotConfigured(f"no captioning backend configured (caption.backend={cfg.backend!r})")
