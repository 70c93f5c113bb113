"""Pacing for every client of ours: a token bucket for steady load, backoff for failures.

Exists so the tunnel's reconnects and every Kubernetes writer and watcher pace themselves by
one set of rules, tuned per caller through settings. Both are plain objects owned by one task
each (or shared by tasks of one loop); they must not sleep on behalf of anyone who did not
ask, and must not know what is being paced.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_DOUBLINGS = 64
"""Failures counted at most: the ceiling has long reached ``maximum`` by then, and
``factor ** failures`` must not overflow however long an outage lasts."""


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
    """Exponential backoff with jitter: delays drawn below a ceiling that doubles per failure."""

    initial: float = 0.5
    """Seconds: the first ceiling. Kubernetes clients use 0.5: a blip (a restarting
    apiserver) is over quickly."""
    maximum: float = 30.0
    """Seconds the ceiling never passes: an outage is noticed within this once it ends, while a
    broken server gets at most a couple of requests a minute from each client."""
    factor: float = 2.0
    floor: float = 0.5
    """Fraction of the ceiling a delay is at least. 0.5 (the default) keeps a retry long enough
    to matter while clients restarted together still spread out; 0 is full jitter, which a
    fleet of agents reconnecting to one aggregator needs to spread out the most."""


class Backoff:
    """Delays that grow after each failure until :meth:`reset`."""

    def __init__(
        self, settings: BackoffSettings | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or BackoffSettings()
        self._rng = rng or random.Random()
        self.failures = 0
        """Failures in a row since the last reset; owned by the task that retries."""

    def ceiling(self) -> float:
        """Return the ceiling of the next delay: ``min(maximum, initial * factor**failures)``."""
        s = self.settings
        return min(s.maximum, s.initial * s.factor**self.failures)

    def next_delay(self, *, at_least: float = 0.0) -> float:
        """Count a failure and return how long to wait before retrying.

        ``at_least`` (a server's Retry-After) is honoured, but never beyond ``maximum``.
        """
        ceiling = self.ceiling()
        self.failures = min(self.failures + 1, MAX_DOUBLINGS)
        delay = self._rng.uniform(ceiling * self.settings.floor, ceiling)
        return max(delay, min(at_least, self.settings.maximum))

    def reset(self) -> None:
        """Forget failures after a success."""
        self.failures = 0

    async def sleep(self) -> None:
        """Count a failure and wait the next delay."""
        await asyncio.sleep(self.next_delay())
