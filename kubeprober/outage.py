"""What a retrying loop says while the server it needs keeps failing: a few lines, not a flood.

Exists so every loop that retries the Kubernetes API (watches, status writers, Lease renewals)
tells an outage the same way: the first failure and every new error are warned at once, the
retries in between go to DEBUG with a reminder every :data:`REMIND_EVERY` seconds, and the
first success after failures says how long it lasted. It must not decide when to retry (the
caller's backoff does) and holds no state beyond the current outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REMIND_EVERY = 300.0
"""Seconds between warnings while the same error repeats: an API server down for an hour is
a dozen lines per loop, not hundreds."""


class Outage:
    """One loop's current run of failures, and the lines it logs about it."""

    def __init__(
        self, log: logging.Logger, what: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``what`` names the work in the logs: ``"watch of probes in namespace x"``."""
        self._log = log
        self.what = what
        self._clock = clock
        self.failures = 0
        """Failed attempts in a row; owned by the loop that reports them."""
        self._since = 0.0
        self._warned = 0.0
        self._error = ""

    @property
    def ongoing(self) -> bool:
        """Whether the last attempt failed."""
        return self.failures > 0

    def failed(self, error: str, retry_in: float) -> None:
        """Note a failed attempt, retried after ``retry_in`` seconds; warn if it is news."""
        now = self._clock()
        self.failures += 1
        if self.failures == 1 or error != self._error:
            if self.failures == 1:
                self._since = now
            self._log.warning("%s failed: %s; retrying in %.1fs", self.what, error, retry_in)
        elif now - self._warned < REMIND_EVERY:
            self._log.debug("%s failed: %s; retrying in %.1fs", self.what, error, retry_in)
            return
        else:
            self._log.warning(
                "%s still failing after %d attempts in %.0fs: %s; retrying in %.1fs",
                self.what, self.failures, now - self._since, error, retry_in,
            )  # fmt: skip
        self._warned, self._error = now, error

    def succeeded(self) -> None:
        """Note a success; say the outage is over if there was one."""
        if self.failures:
            self._log.info(
                "%s works again after %d failed attempts in %.0fs",
                self.what, self.failures, self._clock() - self._since,
            )  # fmt: skip
        self.failures = 0
        self._error = ""
