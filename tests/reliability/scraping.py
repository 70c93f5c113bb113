"""Prometheus's view of a fault: scrape ``/metrics`` all along and parse every answer.

Exists so each fault test can say that every scrape during the fault answered and parsed, as
a Prometheus server scraping the service would need; the last parse is kept for asserting
on values. It must not judge values itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.tasks import spawn, stop


@dataclass
class Scraper:
    """Scrapes ``url`` every ``every`` seconds between :meth:`start` and :meth:`stop`."""

    http: aiohttp.ClientSession
    url: str
    every: float = 0.1
    timeout: float = 5.0
    """Seconds a scrape may take: Prometheus's default scrape timeout is 10 s."""
    scrapes: int = 0
    failures: list[str] = field(default_factory=list)
    """One line per scrape that did not answer 200 or did not parse."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    """The last good scrape: (name, sorted labels) -> value."""
    _task: asyncio.Task[None] | None = None

    def start(self) -> Scraper:
        """Start scraping in the background."""
        self._task = spawn(self._run(), "test-scraper")
        return self

    async def stop(self) -> None:
        """Stop scraping (cancel, then wait)."""
        if self._task is not None:
            await stop([self._task])
            self._task = None

    def value(self, name: str, **labels: str) -> float | None:
        """The last scrape's value of a series, or None when it was absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    async def _run(self) -> None:
        while True:
            await self.scrape()
            await asyncio.sleep(self.every)

    async def scrape(self) -> None:
        """Scrape once, noting a failure or the samples."""
        try:
            async with self.http.get(
                self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    self.failures.append(f"HTTP {resp.status}: {text[:200]}")
                    return
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
        else:
            self.samples = samples
        finally:
            self.scrapes += 1
