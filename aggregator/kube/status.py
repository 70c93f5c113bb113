"""Each Cluster's status written back, so ``kubectl get clusters`` reads like a fleet table.

Exists to mirror what the aggregator knows of a cluster (state, last seen, agent and
Kubernetes versions, node count, check summary and a ``Ready`` condition) into the Cluster
object's status subresource. A writer task compares, once a second, what each cluster's
status should be with what was last written (or listed), and merge-patches only the
difference-bearing clusters, under a token bucket. It must not block pulls or the tunnel:
it only reads the views, on the event loop, and its requests wait in the API's own threads.
A Cluster deleted meanwhile (404) is skipped; any other failure is retried on a later round
(an outage is logged when it starts and when it ends, :mod:`kubeprober.outage`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.views import ClusterView, State, rendered_entry
from kubeprober.kube.api import JSON, KubeApi
from kubeprober.kube.errors import Conflict, KubeError, NotFound
from kubeprober.kube.resources import CLUSTERS, Permission
from kubeprober.outage import Outage
from kubeprober.pacing import TokenBucket
from kubeprober.probers.result import rfc3339

if TYPE_CHECKING:
    from kubeprober.aggregator.kube.replicas import Replicas

log = logging.getLogger(__name__)
PERMISSIONS: tuple[Permission, ...] = (CLUSTERS.permission("patch", "status"),)
READY = {
    "Online": ("True", "AgentConnected", "The agent is connected and answers pulls."),
    "Offline": ("False", "AgentOffline", "The agent is not connected or stopped answering."),
    "Pending": ("Unknown", "AgentNeverSeen", "No agent of this cluster has connected yet."),
}
"""Ready condition per state: (status, reason, message)."""
REPORTED = ("agentVersion", "kubernetesVersion", "nodeCount", "summary")
"""Status fields only a pull tells."""


def desired_status(view: ClusterView, *, now: float, ttl: float) -> JSON:
    """Return the Cluster status for ``view``; its condition has no transition time yet."""
    state: State = view.state(now=now, ttl=ttl)
    # The unified /status's summary, cached per pull and state: a null status (no check with
    # a result) is sent as null, which a merge patch turns into no status at all.
    _, summary = rendered_entry(view, now=now, ttl=ttl)
    report = view.report or {}
    ready, reason, message = READY[state]
    return {
        "state": state,
        "lastSeen": rfc3339(view.last_seen),
        "agentVersion": report.get("agentVersion"),
        "kubernetesVersion": report.get("kubernetesVersion"),
        "nodeCount": report.get("nodeCount"),
        "summary": {**summary, "byStatus": dict(summary["byStatus"])},
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}],
    }


class StatusWriter:
    """Writes changed Cluster statuses; run :meth:`run` as one task."""

    def __init__(
        self,
        api: KubeApi,
        views: Callable[[], Iterable[ClusterView]],
        *,
        ttl: float,
        settings: KubeModeSettings,
        replicas: Replicas | None = None,
    ) -> None:
        self._api = api
        self._replicas = replicas
        """When set, only the clusters this replica holds are written, each at the
        resourceVersion last known, so a replica that lost one cannot overwrite its holder."""
        self._views = views
        self._ttl = ttl
        self.settings = settings
        self._bucket = TokenBucket(settings.writes_per_second, settings.write_burst)
        self._written: dict[str, JSON] = {}
        """What each Cluster's status is known to hold. Owned by the writer task."""
        self._held: set[str] = set()
        """The clusters this replica held at the last round. Owned by the writer task."""
        self._settled: dict[str, tuple[int, str, float | None, JSON]] = {}
        """Per cluster found to need no write: its view's revision, its state, its claim
        time and the status compared with then. While all four are the same, a round skips
        it: a replica's rounds cost what changed, not how many clusters it holds."""
        self.writes = 0
        """Patches sent that succeeded, for tests."""
        self._outage = Outage(log, "writing Cluster status")

    def observe(self, statuses: dict[str, JSON]) -> None:
        """Take listed statuses for clusters not written yet (after a restart: no rewrite)."""
        for name, status in statuses.items():
            self._written.setdefault(name, status)

    async def run(self) -> None:
        """Write a round every ``status_interval`` seconds until cancelled."""
        while True:
            await self.write_round()
            await asyncio.sleep(self.settings.status_interval)

    async def write_round(self, *, now: float | None = None) -> int:
        """Patch the clusters whose status changed, as the bucket allows; return how many took."""
        now = time.time() if now is None else now
        views = {v.name: v for v in self._views()}
        for name in list(self._written):
            if name not in views:
                del self._written[name]
                self._settled.pop(name, None)
        held: set[str] = set()
        mine = self._replicas.held() if self._replicas is not None else set()
        changed: list[tuple[str, JSON]] = []
        moved: list[tuple[str, JSON]] = []
        for name, view in views.items():
            if self._replicas is not None:
                if name not in mine:
                    continue
                held.add(name)
                if name not in self._held:
                    # Just taken over: its status is what its last holder (or the leader,
                    # once that one was gone) wrote, as the claim's answer or the watch says.
                    self._written[name] = self._replicas.status(name)
            have = self._written.get(name) or {}
            claimed = self._replicas.claimed_at(name) if self._replicas else None
            settled = (view.revision, view.state(now=now, ttl=self._ttl), claimed, have)
            was = self._settled.get(name)
            if was is not None and was[:3] == settled[:3] and was[3] is have:
                continue
            want = self._desired(view, have, now=now)
            change = self._change(name, want, have)
            if change is None:
                self._settled[name] = settled
                continue
            _keep_transition(want, have, now=now)
            (changed if change else moved).append((name, want))
        if self._replicas is not None:
            self._held = held
        due: list[tuple[str, JSON]] = []
        # State changes first: the bucket must not hold back an Offline (or a cluster taken
        # over from a dead replica) behind a wave of lastSeen rewrites.
        for name, want in (*changed, *moved):
            if not self._bucket.try_take():
                break  # the rest waits for a later round: still differs then
            due.append((name, want))
        before = self.writes
        errors = [e for e in await asyncio.gather(*(self._patch(n, s) for n, s in due)) if e]
        if errors:  # a line when the API goes away and when it is back, not one per round
            self._outage.failed(errors[0], self.settings.status_interval)
        elif due:
            self._outage.succeeded()
        return self.writes - before

    def _desired(self, view: ClusterView, have: JSON, *, now: float) -> JSON:
        """The status to write for ``view``, given what the Cluster holds."""
        seen = unix_time(have.get("lastSeen"))
        if view.report is not None or seen is None:
            return desired_status(view, now=now, ttl=self._ttl)
        # Not pulled here yet, but seen before (by the replica that held it, or by this
        # process before a restart): what that pull told stands until the first pull here,
        # so a takeover rewrites nothing that is still true. Its agent was seen then, and
        # again when this replica claimed its tunnel: a cluster taken over after the leader
        # marked it Offline (or whose last pull is older than the TTL) is Online at once,
        # not after a first pull that a survivor busy with thousands may be slow to make.
        if view.last_seen is None:
            claimed = self._replicas.claimed_at(view.name) if self._replicas else None
            view = dataclasses.replace(view, last_seen=max(seen, claimed or seen), rendered=None)
        want = desired_status(view, now=now, ttl=self._ttl)
        want.update({f: have.get(f) for f in REPORTED})
        return want

    def _change(self, name: str, want: JSON, have: JSON) -> bool | None:
        """Whether ``want`` changes more than ``lastSeen`` (True), only ``lastSeen`` and it is
        due for a rewrite (False), or nothing worth a write (None)."""

        def rest(status: JSON) -> tuple[Any, ...]:
            conditions = [
                (c.get("type"), c.get("status"), c.get("reason"))
                for c in status.get("conditions") or []
            ]
            fields = ("state", "agentVersion", "kubernetesVersion", "nodeCount")
            # A null summary status is written as no status: the same thing.
            summary = {k: v for k, v in (status.get("summary") or {}).items() if v is not None}
            return (*(status.get(f) for f in fields), summary, conditions)

        if rest(want) != rest(have):
            return True
        if want["lastSeen"] == have.get("lastSeen"):
            return None
        # lastSeen alone moved: worth a write once a period, at the cluster's own moment in it.
        written, seen = unix_time(have.get("lastSeen")), unix_time(want["lastSeen"])
        if last_seen_due(name, written, seen, self.settings.last_seen_every):
            return False
        return None

    async def _patch(self, name: str, status: JSON) -> str:
        """Write one status; return why it failed, or "" (a deleted Cluster is no failure)."""
        for attempt in range(2):
            patch: JSON = {"status": status}
            watched = ""
            if self._replicas is not None:
                watched = self._replicas.watched(name)
                patch["metadata"] = {"resourceVersion": self._replicas.resource_version(name)}
            try:
                answer = await self._api.patch_status(
                    CLUSTERS, name, patch, namespace=self._api.namespace
                )
            except Conflict:
                # Written meanwhile (or the watch still lags behind our own last write):
                # read it again and write once more at its current version if it is still
                # ours; if not, the next round leaves it to its holder.
                if self._replicas is None or attempt:
                    return ""
                await self._replicas.reread(name)
                if not self._replicas.holds(name):
                    return ""
                continue
            except NotFound:
                self._written.pop(name, None)  # gone since the last list: the next reload drops it
                return ""
            except KubeError as exc:
                return str(exc)
            self._written[name] = status
            if self._replicas is not None:
                self._replicas.wrote(name, answer, watched=watched)
            self.writes += 1
            return ""
        return ""


def _keep_transition(want: JSON, have: JSON, *, now: float) -> None:
    """Set the Ready condition's lastTransitionTime: kept unless its status changed."""
    (ready,) = want["conditions"]
    conditions: list[JSON] = have.get("conditions") or []
    before: JSON = next((c for c in conditions if c.get("type") == "Ready"), {})
    if before.get("status") == ready["status"] and before.get("lastTransitionTime"):
        ready["lastTransitionTime"] = before["lastTransitionTime"]
    else:
        ready["lastTransitionTime"] = rfc3339(now)


def unix_time(value: object) -> float | None:
    """An RFC 3339 time as a unix time; None when missing or malformed."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def last_seen_due(name: str, written: float | None, seen: float | None, period: float) -> bool:
    """Whether cluster ``name``'s lastSeen, written as ``written``, is due to be rewritten as
    ``seen``: when the cluster's own moment in the period passed between the two (or either
    is unknown)."""
    if written is None or seen is None:
        return True
    return written < seen - (seen - rewrite_phase(name, period)) % period


def rewrite_phase(name: str, period: float) -> float:
    """Seconds into each ``period`` (counted from the epoch) at which the cluster's lastSeen
    is rewritten. From its name, so every replica and restart keeps it, and a fleet that came
    Online together is rewritten spread over the period rather than in one wave."""
    return zlib.crc32(name.encode()) % 1_000_000 / 1_000_000 * period
