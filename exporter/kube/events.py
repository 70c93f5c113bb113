"""Record check status transitions as Kubernetes Events on their Probe.

Exists so ``kubectl describe probe`` tells the story (``CheckFailed``, ``CheckRecovered``)
without Prometheus. Best effort: :meth:`EventRecorder.record` never waits; a bounded queue
drops the overflow (counted), a token bucket paces the writes, and a failed write is retried
a few times with backoff, then dropped. Events are core/v1 (``involvedObject``), which every
kubectl shows in ``describe``. A first result that passes is not an event: a restart or a
new Probe would otherwise flood them. It must not block probing or retry forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubeprober.exporter.kube.watching import ProbeRef
from kubeprober.exporter.store import Transition
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import KubeError, TooManyRequests, Unavailable
from kubeprober.kube.resources import EVENTS, PROBES
from kubeprober.kube.watching import Key
from kubeprober.pacing import Backoff, BackoffSettings, TokenBucket
from kubeprober.probers.result import rfc3339
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)

PERMISSIONS = (EVENTS.permission("create"),)
COMPONENT = "kubeprober-agent"
MESSAGE_LIMIT = 1024
"""Characters of an event message: the events.k8s.io limit, kept for core events too."""


@dataclass(frozen=True)
class EventSettings:
    """Pacing of event writes."""

    rate: float = 5.0
    """Events per second at most: transitions are rare; a cluster-wide outage turning every
    check red at once must not turn into an event storm against the API server."""
    burst: int = 50
    queue_size: int = 1000
    """Events waiting at most; beyond, new ones are dropped and counted."""
    attempts: int = 5
    """Tries per event before it is dropped (with backoff between them)."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)


def classify(t: Transition) -> tuple[str, str] | None:
    """Return ``(type, reason)`` for a transition, or None when it is not worth an event."""
    if t.current is Status.ERROR:
        return "Warning", "CheckFailed"
    if t.current is Status.UNKNOWN:
        return "Warning", "CheckUnknown"
    if t.current is Status.WARN:
        return "Warning", "CheckDegraded"
    if t.previous is None:
        return None  # a first PASS or INFO: nothing happened
    if t.previous.is_success:
        return "Normal", "CheckChanged"  # WARN -> PASS, INFO -> PASS and the like
    return "Normal", "CheckRecovered"


def event_body(
    t: Transition, ref: ProbeRef, *, kind: str, reason: str, now: float, instance: str
) -> dict[str, Any]:
    """Return a core/v1 Event about Probe ``ref`` for transition ``t``."""
    message = f"check {t.check}: {t.previous or 'new'} -> {t.current}"
    if t.message:
        message += f": {t.message}"
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # Unique like client-go's "<object>.<hex>": one transition, one event.
            "name": f"{ref.name}.{time.time_ns():x}{secrets.token_hex(2)}",
            "namespace": ref.namespace,
        },
        "involvedObject": {
            "apiVersion": PROBES.api_version,
            "kind": PROBES.kind,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT, "host": instance},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
    }


class EventRecorder:
    """Sends Events for transitions in the background; :meth:`record` never waits."""

    def __init__(
        self,
        api: KubeApi,
        owner: Callable[[Key], ProbeRef | None],
        *,
        settings: EventSettings | None = None,
        instance: str | None = None,
    ) -> None:
        self._api = api
        self._owner = owner
        self.settings = settings or EventSettings()
        self._instance = instance or os.environ.get("HOSTNAME") or socket.gethostname()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.settings.queue_size)
        self._bucket = TokenBucket(self.settings.rate, self.settings.burst)
        self.sent = 0
        self.dropped = 0

    def record(self, transitions: Iterable[Transition]) -> None:
        """Queue an Event for each transition worth one; drop (and count) what does not fit."""
        now = time.time()
        for t in transitions:
            verdict = classify(t)
            ref = self._owner((t.namespace, t.probe))
            if verdict is None or ref is None:
                continue
            body = event_body(
                t, ref, kind=verdict[0], reason=verdict[1], now=now, instance=self._instance
            )
            try:
                self._queue.put_nowait(body)
            except asyncio.QueueFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("event queue full: %d events dropped so far", self.dropped)

    async def run(self) -> None:
        """Send queued events until cancelled."""
        backoff = Backoff(self.settings.backoff)
        while True:
            body = await self._queue.get()
            meta = body["metadata"]
            for attempt in range(1, self.settings.attempts + 1):
                await self._bucket.take()
                try:
                    await self._api.create(EVENTS, body, namespace=meta["namespace"])
                except (Unavailable, TooManyRequests) as exc:
                    if attempt == self.settings.attempts:
                        self.dropped += 1
                        log.warning("dropping event %s: %s", meta["name"], exc)
                        break
                    await asyncio.sleep(backoff.next_delay())
                except KubeError as exc:
                    self.dropped += 1
                    log.warning("dropping event %s: %s", meta["name"], exc)
                    break
                else:
                    backoff.reset()
                    self.sent += 1
                    break
