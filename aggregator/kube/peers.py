"""The whole fleet's ``/status`` from any replica: its own clusters, its peers', the rest recorded.

Exists so a reader may ask whichever replica the Service picks. A replica answers for the
clusters it holds and asks every other live replica (their addresses are in the membership
Leases, :mod:`.replicas`) for theirs with ``/status?held=1``, all at once and within
``peer_timeout``. A cluster no answer covered (its replica is slow or gone, or no replica
holds it) is shown from its Cluster status and marked ``"stale": true``: never left out. It
also carries what only a cluster's holder can answer (a probe run, a check history, a
Kubernetes API request) to that replica, and turns that replica's silence or failure into
:class:`HolderFailed`, whose message names the cluster and the replica. Must not retry or
wait past the deadline: a reader is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiohttp

from kubeprober.aggregator.kube import FORWARDED, PEER_MARGIN, Holder, HolderFailed
from kubeprober.aggregator.kube.replicas import Replicas
from kubeprober.aggregator.views import (
    ClusterView,
    Filters,
    cluster_entry,
    rendered_entry,
    shown_probes,
    spliced_document,
    valid_summary,
)

log = logging.getLogger(__name__)
DECODED_PER_STEP = 250
"""Peer entries decoded between two yields to the event loop."""


def _failed(holder: Holder, cluster: str, what: str) -> HolderFailed:
    return HolderFailed(
        f"cluster {cluster}: replica {holder.identity} at {holder.url}, which holds its "
        f"tunnel, {what}"
    )


def _no_answer(holder: Holder, cluster: str, exc: Exception, seconds: float) -> HolderFailed:
    if isinstance(exc, TimeoutError) and not str(exc):
        return _failed(holder, cluster, f"did not answer within {seconds:g}s")
    return _failed(holder, cluster, f"gave no answer: {exc or type(exc).__name__}")


def _check(holder: Holder, cluster: str, reply: aiohttp.ClientResponse) -> None:
    """Refuse an answer the holder's API itself failed with (a 5xx that is not JSON, such as
    a traceback's 500 page): every answer it means to give these requests is JSON."""
    if reply.status >= 500 and reply.content_type != "application/json":
        raise _failed(holder, cluster, f"answered {reply.status} {reply.reason}")


def _checked_line(
    line: bytes, n: int, summaries: dict[tuple[object, ...], Mapping[str, Any]]
) -> tuple[str, Mapping[str, Any]]:
    """Line ``n`` of a peer's answer as (name, summary); ValueError if it is no cluster entry
    with a summary this version can add up. Equal summaries are kept once, in ``summaries``."""
    entry = json.loads(line)
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and valid_summary(entry.get("summary"))
    ):
        raise ValueError(f"line {n} is no cluster entry with a valid summary")
    summary = entry["summary"]
    same = (summary["status"], summary["pending"], *sorted(summary["byStatus"].items()))
    return entry["name"], summaries.setdefault(same, summary)


async def _filtered(
    parts: Iterable[tuple[str, bytes, Mapping[str, Any]]], filters: Filters
) -> list[tuple[str, bytes]]:
    """The (name, entry as JSON) of the clusters ``filters`` list, each with the probes they
    accept. Only filters on statuses or layers decode and encode entries again, a few at a
    time: the fleet is never encoded in one piece."""
    listed = []
    for n, (name, line, _) in enumerate(parts, 1):
        if filters.clusters and name not in filters.clusters:
            continue
        if filters.statuses or filters.layers:
            entry = json.loads(line)
            entry["probes"] = shown_probes(entry, filters)
            line = json.dumps(entry, separators=(",", ":")).encode()
            if n % DECODED_PER_STEP == 0:
                await asyncio.sleep(0)  # readers are served between the pieces
        listed.append((name, line))
    return listed


class Peers:
    """HTTP to the other replicas; :meth:`close` when done."""

    def __init__(self, replicas: Replicas, *, timeout: float) -> None:
        self.replicas = replicas
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._checked: dict[str, dict[bytes, tuple[str, Mapping[str, Any]]]] = {}
        """Peer URL -> the lines of its last answer (by digest) as (name, summary)."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def holder(self, cluster: str) -> Holder | None:
        """The live replica holding ``cluster``, or None if none does (or this one)."""
        who = self.replicas.holder(cluster)
        if who == self.replicas.identity:
            return None
        url = self.replicas.members().get(who, "")
        return Holder(who, url) if url else None

    async def fleet_status(
        self,
        views: Iterable[ClusterView],
        *,
        ttl: float,
        filters: Filters,
        authorization: str | None,
    ) -> bytes:
        """The unified document of the whole fleet as JSON, as :mod:`.peers` describes.

        Unfiltered, it is joined from each entry's JSON as rendered (here, or by the peer that
        sent it) and of the peers' lines only those not seen in their last answer are decoded,
        to be checked: a fleet of thousands is never encoded again in one piece, which would
        hold the event loop, and with it every reader, for as long."""
        now = time.time()
        mine = {v.name: v for v in views}
        held = self.replicas.held()
        own = {n: v for n, v in mine.items() if n in held}
        others = [
            url
            for who, url in self.replicas.members().items()
            if who != self.replicas.identity and url
        ]
        headers = {"Authorization": authorization} if authorization else {}
        for gone in self._checked.keys() - set(others):  # a replica replaced has a new address
            del self._checked[gone]
        # The other clusters' entries as their holders sent them, with their summaries.
        found: dict[str, tuple[bytes, Mapping[str, Any]]] = {}
        for answer in await asyncio.gather(*(self._held(url, headers) for url in others)):
            for name, line, summary in answer:
                if name in mine and name not in own:
                    found.setdefault(name, (line, summary))
        recorded = {
            name: self._recorded(view, now=now, ttl=ttl)
            for name, view in mine.items()
            if name not in own and name not in found
        }
        parts: list[tuple[str, bytes, Mapping[str, Any]]] = [
            (n, *rendered_entry(v, now=now, ttl=ttl)) for n, v in own.items()
        ]
        parts += [(n, line, summary) for n, (line, summary) in found.items()]
        parts += [
            (n, json.dumps(e, separators=(",", ":")).encode(), e["summary"])
            for n, e in recorded.items()
        ]
        if filters == Filters():
            return spliced_document(parts, now=now)
        return spliced_document(parts, now=now, listed=await _filtered(parts, filters))

    async def _held(
        self, url: str, headers: Mapping[str, str]
    ) -> list[tuple[str, bytes, Mapping[str, Any]]]:
        """A peer's clusters as (name, entry as sent, its summary); none if it gave no usable
        answer in time. A line as it was in the peer's last answer is not decoded again."""
        try:
            async with self._client().get(f"{url}/status?held=1", headers=headers) as resp:
                if resp.status != 200:
                    raise ValueError(f"answered {resp.status} {resp.reason}")
                if resp.content_type != "application/x-ndjson":
                    raise ValueError(f"answered {resp.content_type}, not application/x-ndjson")
                body = await resp.read()
            last, checked = self._checked.get(url, {}), {}
            summaries: dict[tuple[object, ...], Mapping[str, Any]] = {}
            found = []
            decoded = 0
            for n, line in enumerate(body.splitlines(), 1):
                digest = hashlib.blake2b(line, digest_size=16).digest()
                known = last.get(digest)
                if known is None:
                    known = _checked_line(line, n, summaries)
                    decoded += 1
                    if decoded % DECODED_PER_STEP == 0:
                        await asyncio.sleep(0)  # readers are served between the pieces
                checked[digest] = known
                found.append((known[0], line, known[1]))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning(
                "replica %s gave no usable /status (%s): its clusters shown stale",
                url,
                reason,
            )
            return []
        self._checked[url] = checked
        return found

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

    @contextlib.asynccontextmanager
    async def open_on_holder(
        self,
        holder: Holder,
        cluster: str,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        within: float,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open ``method path`` about ``cluster`` on its holder, marked forwarded, for the
        caller to stream the answer as it comes: the body is passed on as sent (compressed or
        not). Only the head has a deadline, the holder's own bound ``within`` plus
        :data:`PEER_MARGIN` (a watch may be quiet for long afterwards); no head by then, or a
        failed one, raises :class:`HolderFailed`."""
        seconds = within + PEER_MARGIN
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(seconds) as head:
                    reply = await stack.enter_async_context(
                        self._client().request(
                            method,
                            holder.url + path,
                            headers={**headers, FORWARDED: "1"},
                            data=body or None,
                            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
                            auto_decompress=False,
                        )
                    )
                    head.reschedule(None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _no_answer(holder, cluster, exc, seconds) from exc
            _check(holder, cluster, reply)
            yield reply

    async def ask_holder(
        self,
        holder: Holder,
        cluster: str,
        *,
        method: str,
        path: str,
        authorization: str | None,
        within: float,
    ) -> tuple[int, str, bytes]:
        """Send ``method path`` (with its query) about ``cluster`` to its holder, marked
        forwarded so that one answers it itself; return its status, content type and body.
        No answer within ``within`` (the holder's own bound) plus :data:`PEER_MARGIN`, or a
        failed one, raises :class:`HolderFailed`."""
        headers = {FORWARDED: "1"}
        if authorization:
            headers["Authorization"] = authorization
        seconds = within + PEER_MARGIN
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=self.timeout)
        try:
            async with self._client().request(
                method, holder.url + path, headers=headers, timeout=timeout
            ) as resp:
                _check(holder, cluster, resp)
                return resp.status, resp.content_type, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _no_answer(holder, cluster, exc, seconds) from exc
