"""Request budgets for asyncio code: requests/min and tokens/min token buckets."""

from __future__ import annotations

import asyncio
import time


class RateBudget:
    """A token bucket refilled at ``per_minute / 60`` per second, holding at most ``per_minute``.

    ``take(n)`` waits until ``n`` units are available (requests larger than the bucket wait for a full
    bucket). ``per_minute <= 0`` means unlimited. Safe for many coroutines of one event loop.
    """

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.level = self.capacity
        self.rate = self.capacity / 60.0
        self.stamp = time.monotonic()

    async def take(self, n: float = 1.0) -> float:
        """Wait for ``n`` units; returns the seconds spent waiting."""
        if self.capacity <= 0:
            return 0.0
        n = min(float(n), self.capacity)
        waited = 0.0
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.level >= n:
                self.level -= n
                return waited
            delay = (n - self.level) / self.rate
            waited += delay
            await asyncio.sleep(delay)
