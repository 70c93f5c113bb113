"""A real Prometheus (Debian's) on loopback for tests, and its HTTP API.

Tests that say "Prometheus scrapes this" start one here with their own scrape configs and
ask it through ``/api/v1``, so what they assert is what a user's Prometheus would record.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.aggregator._fleet_harness import eventually
from tests.binaries import binary
from tests.ports import free_port


@dataclass
class Prom:
    """A running Prometheus and a session to its API."""

    url: str
    http: aiohttp.ClientSession

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return await self._get("/api/v1/query", {"query": expr})

    async def value(self, expr: str) -> float | None:
        """The value of an instant query that returns one series (None when it returns none)."""
        result = await self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    async def samples(self, selector: str) -> dict[float, str]:
        """Every sample recorded of the one series ``selector`` picks, by timestamp (empty
        when there is none)."""
        result = await self.query(f"{selector}[1h]")  # longer than any test's Prometheus
        assert len(result) <= 1, (selector, result)
        return {t: v for t, v in result[0]["values"]} if result else {}

    async def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        async with self.http.get(self.url + path, params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", (params, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def annotations(self, name: str, cluster: str) -> list[dict[str, str]]:
        """The annotations of an alert's instances on a cluster, as Prometheus renders them."""
        async with self.http.get(self.url + "/api/v1/alerts") as resp:
            body = await resp.json()
        return [
            a["annotations"]
            for a in body["data"]["alerts"]
            if (a["labels"]["alertname"], a["labels"].get("cluster")) == (name, cluster)
        ]

    async def alerts(self, name: str, cluster: str) -> list[dict[str, str]]:
        """The label sets of ALERTS series (pending or firing) of an alert on a cluster."""
        found = await self.query(f'ALERTS{{alertname=~"{name}", cluster="{cluster}"}}')
        return [r["metric"] for r in found]


async def start_process(*argv: str, log: Path, **kw: Any) -> asyncio.subprocess.Process:
    """Start a process logging to a file (never a pipe: nothing must block on a full one)."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, **kw
        )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it does not end within 20 s."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def running_prometheus(
    workdir: Path,
    scrape_configs: list[dict[str, Any]],
    *,
    interval: str = "1s",
    rule_files: tuple[Path, ...] = (),
) -> AsyncIterator[Prom]:
    """A Prometheus scraping and evaluating every ``interval``, ready to answer queries."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = await start_process(
        binary("prometheus"),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        log=workdir / "prometheus.log",
    )
    try:
        async with aiohttp.ClientSession() as http:
            prom = Prom(f"http://127.0.0.1:{port}", http)

            async def ready() -> bool:
                try:
                    async with http.get(prom.url + "/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, bool, within=30, what="Prometheus ready", every=0.2)
            yield prom
    finally:
        await stop_process(proc)
