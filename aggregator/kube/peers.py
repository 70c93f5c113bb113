"""The whole fleet's ``/status`` from any replica: its own clusters, its peers', the rest recorded.

Exists so a reader may ask whichever replica the Service picks. A replica answers for the
clusters it holds and asks every other live replica (their addresses are in the membership
Leases, :mod:`.replicas`) for theirs with ``/status?held=1``, all at once and within
``peer_timeout``. A cluster no answer covered (its replica is slow or gone, or no replica
holds it) is shown from its Cluster status and marked ``"stale": true``: never left out. It
also carries what only a cluster's holder can answer (a probe run, a check history) to that
replica. Must not retry or wait past the deadline: a reader is waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from kubeprober.aggregator.kube import FORWARDED
from kubeprober.aggregator.kube.replicas import Replicas
from kubeprober.aggregator.views import ClusterView, Filters, cluster_entry, unified_document

log = logging.getLogger(__name__)


class Peers:
    """HTTP to the other replicas; :meth:`close` when done."""

    def __init__(self, replicas: Replicas, *, timeout: float) -> None:
        self.replicas = replicas
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def holder_url(self, cluster: str) -> str:
        """The API URL of the live replica holding ``cluster``, or "" if none (or this one)."""
        holder = self.replicas.holder(cluster)
        if holder == self.replicas.identity:
            return ""
        return self.replicas.members().get(holder, "")

    async def fleet_status(
        self,
        views: Iterable[ClusterView],
        *,
        ttl: float,
        filters: Filters,
        authorization: str | None,
    ) -> dict[str, Any]:
        """The unified document of the whole fleet, as :mod:`.peers` describes."""
        now = time.time()
        mine = {v.name: v for v in views}
        entries = {
            n: cluster_entry(v, now=now, ttl=ttl) for n, v in mine.items() if self.replicas.holds(n)
        }
        others = [
            url
            for who, url in self.replicas.members().items()
            if who != self.replicas.identity and url
        ]
        headers = {"Authorization": authorization} if authorization else {}
        for answer in await asyncio.gather(*(self._held(url, headers) for url in others)):
            for entry in answer:
                name = entry.get("name")
                if name in mine and name not in entries:
                    entries[name] = entry
        for name, view in mine.items():
            if name not in entries:
                entries[name] = self._recorded(view, now=now, ttl=ttl)
        return unified_document(entries.values(), filters=filters, now=now)

    async def _held(self, url: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            async with self._client().get(f"{url}/status?held=1", headers=headers) as resp:
                if resp.status != 200:
                    raise ValueError(f"answered {resp.status} {resp.reason}")
                doc = await resp.json()
            clusters = doc["clusters"]
            if not isinstance(clusters, list):
                raise ValueError("no clusters list")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.warning("replica %s gave no /status in time (%s): its clusters shown stale", url,
                        type(exc).__name__ if not str(exc) else exc)  # fmt: skip
            return []
        return [e for e in clusters if isinstance(e, dict)]

    def _recorded(self, view: ClusterView, *, now: float, ttl: float) -> dict[str, Any]:
        """The cluster's entry from its Cluster status (what its last holder wrote), stale."""
        status = self.replicas.status(view.name)
        recorded = ClusterView(
            view.name,
            display_name=view.display_name,
            maintenance=view.maintenance,
            last_seen=self.replicas.last_seen(view.name),
            report={k: status.get(k) for k in ("agentVersion", "kubernetesVersion", "nodeCount")},
        )
        entry = cluster_entry(recorded, now=now, ttl=ttl)
        entry["state"] = status.get("state") or entry["state"]
        summary = status.get("summary") or {}
        entry["summary"] = {
            "status": summary.get("status"),
            "total": summary.get("total", 0),
            "pending": summary.get("pending", 0),
            "byStatus": {**entry["summary"]["byStatus"], **(summary.get("byStatus") or {})},
        }
        entry["stale"] = True
        return entry

    def open_on_holder(
        self, url: str, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> aiohttp.client._RequestContextManager:
        """Open ``method path`` on the replica at ``url``, marked forwarded, for the caller to
        stream its answer as it comes: only the connection has a deadline, and the body is
        passed on as sent (compressed or not)."""
        return self._client().request(
            method,
            url + path,
            headers={**headers, FORWARDED: "1"},
            data=body or None,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
            auto_decompress=False,
        )

    async def ask_holder(
        self, url: str, method: str, path: str, authorization: str | None, *, seconds: float
    ) -> tuple[int, bytes]:
        """Send ``method path`` (with its query) to the replica at ``url``, marked forwarded
        so that one answers it itself; return its status and body."""
        headers = {FORWARDED: "1"}
        if authorization:
            headers["Authorization"] = authorization
        async with self._client().request(
            method, url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as resp:
            return resp.status, await resp.read()
