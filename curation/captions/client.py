"""The request engine shared by both stages: response cache, budgets, retries, batching, usage and cost.

Counters (added to the owning stage's ``stats.counts``, merged into ``run.json``):

- ``llm_requests``: model calls sent (each retry counts; in batch mode, entries of submitted batch jobs)
- ``llm_cache_hits`` / ``llm_cache_misses``: requests answered from ``llm_cache/`` / sent to the model
- ``llm_retries``: retries after a transient error; ``llm_error_<reason>``: transient errors by reason
  (rate-limited, server-error, timeout, connection-error)
- ``llm_input_tokens`` / ``llm_output_tokens``: billed tokens from the responses' usage metadata
- ``llm_cost_usd``: dollars from the price table (batch discount applied); cache hits cost nothing
- ``llm_uploads``: clips uploaded through the Gemini Files API; ``llm_batch_jobs``: batch jobs submitted
- ``llm_wait_s``: seconds spent waiting for the requests/min and tokens/min budgets
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any

from ..errors import CaptionFailed
from .backends import Backend, LLMRequest, LLMResponse, TransientError
from .cache import ResponseCache, content_key
from .config import CaptionConfig
from .limits import RateBudget

log = logging.getLogger(__name__)
_warned_prices: set[str] = set()


class _LoopState:
    """Asyncio primitives of one event loop (they cannot be shared between loops)."""

    def __init__(self, cfg: CaptionConfig):
        self.slots = asyncio.Semaphore(max(1, cfg.concurrency))
        self.rpm = RateBudget(cfg.rpm)
        self.tpm = RateBudget(cfg.tpm)
        self.pending: list[tuple[LLMRequest, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None


class LLMClient:
    """Cached, budgeted, retried model calls; safe for many concurrent coroutines on any event loop."""

    def __init__(self, backend: Backend, cfg: CaptionConfig, cache: ResponseCache, counts: Counter):
        self.backend = backend
        backend.counts = counts
        self.cfg = cfg
        self.cache = cache
        self.counts = counts
        self.batch = cfg.batch and backend.supports_batch
        if cfg.batch and not backend.supports_batch:
            log.warning("caption.batch is only supported by the gemini backend; sending requests one by one")
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops = {lp: s for lp, s in self._loops.items() if not lp.is_closed()}
            self._loops[loop] = _LoopState(self.cfg)
        return self._loops[loop]

    def cache_key(self, req: LLMRequest) -> str:
        return content_key({**req.fingerprint(), **self.backend.params()})

    def cost(self, model: str, input_tokens: int, output_tokens: int, batch: bool) -> float:
        """Dollars for the tokens at the configured price of ``model`` (0 with one warning if unknown)."""
        price = self.cfg.prices.get(model)
        if price is None:
            if model not in _warned_prices:
                _warned_prices.add(model)
                log.warning("no price for model %r in caption.prices: its cost is counted as 0", model)
            return 0.0
        usd = (input_tokens * price.input_per_million + output_tokens * price.output_per_million) / 1e6
        return usd * (self.cfg.batch_discount if batch else 1.0)

    async def call(self, req: LLMRequest) -> tuple[LLMResponse, dict[str, Any]]:
        """The answer to ``req`` and its usage; raises ``CaptionFailed`` (safety block, retries exhausted)."""
        key = self.cache_key(req)
        hit = self.cache.get(key)
        if hit is not None:
            self.counts["llm_cache_hits"] += 1
            resp = LLMResponse.from_dict(hit["response"])
            usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "requests": 0, "cache_hits": 1}
        else:
            self.counts["llm_cache_misses"] += 1
            resp, requests = await self._with_retries(req)
            cost = self.cost(req.model, resp.input_tokens, resp.output_tokens, self.batch)
            self.counts["llm_input_tokens"] += resp.input_tokens
            self.counts["llm_output_tokens"] += resp.output_tokens
            self.counts["llm_cost_usd"] += cost
            self.cache.put(key, {"request": req.fingerprint(), "response": resp.to_dict(), "batch": self.batch})
            usage = {
                "input_tokens": resp.input_tokens,
                "output_tokens": resp.output_tokens,
                "cost_usd": cost,
                "requests": requests,
                "cache_hits": 0,
            }
        if resp.blocked:
            raise CaptionFailed(f"the model refused the request ({resp.blocked})", reason="safety-block")
        return resp, usage

    async def _with_retries(self, req: LLMRequest) -> tuple[LLMResponse, int]:
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            try:
                return await self._send(req), attempt + 1
            except TransientError as exc:
                self.counts[f"llm_error_{exc.reason}"] += 1
                if attempt + 1 == attempts:
                    raise CaptionFailed(f"{exc} (gave up after {attempts} attempts)", reason=exc.reason) from None
                self.counts["llm_retries"] += 1
                delay = random.uniform(0, min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2**attempt))
                log.debug("request %s: %s; retry %d in %.2fs", req.key, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, req: LLMRequest) -> LLMResponse:
        state = self._state()
        if self.batch:
            fut = asyncio.get_running_loop().create_future()
            state.pending.append((req, fut))
            if state.flusher is None or state.flusher.done():
                state.flusher = asyncio.ensure_future(self._flush_soon(state))
            return await fut
        async with state.slots:
            waited = await state.rpm.take(1) + await state.tpm.take(req.est_input_tokens)
            self.counts["llm_wait_s"] += round(waited, 3)
            self.counts["llm_requests"] += 1
            return await self.backend.generate(req)

    async def _flush_soon(self, state: _LoopState) -> None:
        """Submit pending requests as one batch job once no new request arrived for a moment."""
        while True:
            n = len(state.pending)
            await asyncio.sleep(0.05)
            if len(state.pending) == n:
                break
        todo, state.pending = state.pending, []
        await state.rpm.take(1)
        self.counts["llm_batch_jobs"] += 1
        self.counts["llm_requests"] += len(todo)
        try:
            results = await self.backend.generate_batch([r for r, _ in todo], self.cfg.batch_poll_s)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            results = [exc] * len(todo)
        for (_, fut), res in zip(todo, results):
            if fut.done():
                continue
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def aclose(self) -> None:
        await self.backend.aclose()
