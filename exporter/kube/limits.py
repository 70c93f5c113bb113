"""Pacing for API clients: a token bucket for steady load and exponential backoff for failures.

Exists so every writer paces itself the same way. Both are plain objects owned by one task
each (or shared by tasks of one loop); they must not sleep on behalf of anyone who did not
ask, and must not know what is being paced.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    """Allow ``rate`` operations per second on average, in bursts of up to ``burst``."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> bool:
        """Take a token if one is there; never wait."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a token, waiting until one is there."""
        self._refill()
        # Reserve the token now (going negative) so callers queue up fairly, then wait
        # until the bucket would have held it.
        self._tokens -= 1
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


@dataclass(frozen=True)
class BackoffSettings:
    """Exponential backoff with full jitter, as client-go's reflector and our tunnel do."""

    initial: float = 0.5
    """Seconds before the first retry: a blip (a restarting apiserver) is over quickly."""
    maximum: float = 30.0
    """Seconds between retries at most: an outage is noticed within this once it ends,
    while a broken API server gets at most a couple of requests a minute from each agent."""
    factor: float = 2.0


class Backoff:
    """Delays that grow after each failure until :meth:`reset`."""

    def __init__(
        self, settings: BackoffSettings | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or BackoffSettings()
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before retrying."""
        s = self.settings
        ceiling = min(s.maximum, s.initial * s.factor**self.failures)
        self.failures += 1
        # Full jitter, but never below half: agents restarted together spread out, and a
        # retry still waits long enough to matter.
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Forget failures after a success."""
        self.failures = 0

    async def sleep(self) -> None:
        """Count a failure and wait the next delay."""
        await asyncio.sleep(self.next_delay())
