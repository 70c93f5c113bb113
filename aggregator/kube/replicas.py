"""Aggregator replicas: membership and leader Leases, and which replica holds which cluster.

Exists so several aggregators in Kubernetes mode can serve one fleet, coordinated by the API
server alone (Leases and optimistic concurrency, no consensus of our own):

- each replica renews one Lease, with the URL of its API in the annotation
  ``kubeprober.io/address``: the leader the Lease ``kubeprober-aggregator-leader``, taken
  over with the resourceVersion it read once the holder stopped renewing it (as
  kube-controller-manager elects its leader), and every other replica a Lease of its own,
  labelled ``kubeprober.io/aggregator: member``. A live Lease of either role counts as its
  holder's membership, so the leader deletes its member Lease while it leads (one renewal
  per replica per round, not two) and makes it again once it no longer does;
- the replica an agent's tunnel lands on *holds* the cluster: it writes its identity to the
  Cluster's ``status.aggregator`` with the resourceVersion it read, so of two replicas
  claiming at once one gets 409 Conflict and reads again. A replica that sees (through its
  watch of the Clusters) another holder named where it claimed one reads the Cluster again
  and, if the other holder is current, drops its stale session.

resourceVersions are opaque strings, as Kubernetes says: they are only ever sent back as
preconditions or compared for equality, never ordered. What this replica learned from its own
writes and reads of a Cluster is trusted while its watch still shows the version it showed
when they were sent; once the watch moves on, the watch is trusted (it may lag a moment, never
for good; a 409 on the next write, or a fresh read before a session is dropped, corrects it).

A Lease counts as expired when it has not changed for its duration *as this replica observed
it*, never by comparing clocks. Holds the replica's view of both; must not block: every API
call is awaited on the loop, and a failure is logged and tried again on a later round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.kube.status import desired_status, unix_time
from kubeprober.aggregator.views import ClusterView
from kubeprober.kube.api import JSON, KubeApi
from kubeprober.kube.errors import AlreadyExists, Conflict, KubeError, NotFound
from kubeprober.kube.resources import CLUSTERS, LEASES, Permission
from kubeprober.kube.watching import Mirror, Selection
from kubeprober.outage import Outage
from kubeprober.probers.result import rfc3339

log = logging.getLogger(__name__)
ROLE_LABEL = "kubeprober.io/aggregator"
"""Label of the replicas' Leases: ``leader`` (the leader's) or ``member`` (each other replica's)."""
ADDRESS = "kubeprober.io/address"
"""Annotation of a replica's Lease (member or leader): the URL of that replica's API."""
LEADER_LEASE = "kubeprober-aggregator-leader"
CLAIM_ATTEMPTS = 5
"""Conflicts a claim survives (each followed by a fresh read) before it waits for a sweep."""
PERMISSIONS: tuple[Permission, ...] = (
    LEASES.permission("list"),
    LEASES.permission("watch"),
    LEASES.permission("create"),
    LEASES.permission("patch"),
    LEASES.permission("delete"),
    CLUSTERS.permission("get"),
)
"""Grants of the replicas' coordination (Cluster status patches are the status writer's)."""


def member_lease(identity: str) -> str:
    """Return the name of replica ``identity``'s membership Lease."""
    return f"kubeprober-replica-{identity}"


def micro_time(ts: float) -> str:
    """Render a unix time as a Kubernetes MicroTime (RFC 3339, microseconds, ``Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rv(obj: JSON | None) -> str:
    """An object's resourceVersion (opaque: "" when it has none)."""
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _status_of(cluster: JSON | None) -> JSON:
    status: JSON = (cluster or {}).get("status") or {}
    return status


def _holder_of(cluster: JSON | None) -> str:
    return str(_status_of(cluster).get("aggregator") or "")


class Replicas:
    """This replica's Leases, its view of the others', and the clusters it holds."""

    def __init__(self, api: KubeApi, clusters: Mirror, settings: KubeModeSettings) -> None:
        self.api = api
        self._lease_api = api.lane()
        """Leases are written on a thread of their own: a survivor taking over a dead
        replica's clusters sends thousands of claims and status writes, and its renewals
        must not wait behind them until its own Lease expires."""
        self.settings = settings
        self.identity = settings.identity or socket.gethostname()
        self.address = settings.advertise
        """Set by the process once it listens, if not given."""
        self.clusters = clusters
        clusters.index_by(_holder_of)
        self.leases = Mirror(
            api,
            Selection(
                LEASES,
                namespace=api.namespace,
                label_selector=ROLE_LABEL,
                backoff=settings.backoff,
            ),
            on_change=self._observe,
        )
        self.leader = False
        self._observed: dict[str, tuple[str, float]] = {}
        """Lease name -> (resourceVersion, monotonic time it was first seen)."""
        self._claims: dict[str, float] = {}
        """Clusters this replica recorded itself as the holder of -> unix time it did."""
        self._learned: dict[str, tuple[str, str, JSON]] = {}
        """Cluster -> (the watch's resourceVersion then, the resourceVersion and status our
        last write or read of it answered with): newer than the watch while it shows the
        former."""
        self._leader_rv: str | None = None
        self._renewed = asyncio.Event()
        """Set after each renewal round, for :meth:`release`."""
        self._member_made = False
        self._outage = Outage(log, "renewing the replica Leases")

    # -- what this replica knows -----------------------------------------------------------

    @property
    def renew_every(self) -> float:
        """Seconds between Lease renewals: a third of their duration."""
        return self.settings.lease_duration / 3

    def _observe(self) -> None:
        now = time.monotonic()
        current = {}
        for (_, name), lease in self.leases.objects.items():
            rv = str((lease.get("metadata") or {}).get("resourceVersion", ""))
            before = self._observed.get(name)
            current[name] = before if before is not None and before[0] == rv else (rv, now)
        self._observed = current

    def _live(self, lease: JSON, *, now: float) -> bool:
        spec = lease.get("spec") or {}
        name = str((lease.get("metadata") or {}).get("name", ""))
        if not spec.get("holderIdentity") or name not in self._observed:
            return False
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        return now - self._observed[name][1] <= duration

    def members(self) -> dict[str, str]:
        """Live replicas (this one included): identity -> API URL."""
        now = time.monotonic()
        found = {self.identity: self.address}
        for lease in self.leases.objects.values():
            if self._live(lease, now=now):
                who = str((lease.get("spec") or {}).get("holderIdentity"))
                address = str((lease["metadata"].get("annotations") or {}).get(ADDRESS, ""))
                if address or who not in found:  # an older version wrote no leader address
                    found[who] = address
        return found

    def _cluster(self, name: str) -> JSON | None:
        return self.clusters.objects.get((self.api.namespace, name))

    def _fresh(self, name: str) -> tuple[str, JSON] | None:
        """(resourceVersion, status) our last write or read of ``name`` answered with, while
        the watch has not moved on since; else None (the watch knows as much)."""
        learned = self._learned.get(name)
        if learned is None:
            return None
        if learned[0] != _rv(self._cluster(name)):
            # The watch moved past it, for good: forgotten, so that only the few writes the
            # watch has not shown yet are looked at by :meth:`held`.
            del self._learned[name]
            return None
        return learned[1], learned[2]

    def holder(self, name: str) -> str:
        """The replica holding cluster ``name`` as far as this one knows ("" for none)."""
        return str(self.status(name).get("aggregator") or "")

    def holds(self, name: str) -> bool:
        """Whether this replica holds cluster ``name``."""
        return self.holder(name) == self.identity

    def held(self) -> set[str]:
        """The clusters this replica holds as far as it knows: :meth:`holds` of every one,
        at the cost of those it holds, for the rounds over the whole fleet."""
        return self._holding(lambda holder: holder == self.identity, {self.identity})

    def orphans(self) -> set[str]:
        """The clusters no live replica holds (or none at all)."""
        live = self.members()
        return self._holding(lambda holder: holder not in live, self.clusters.indexed.keys() - live)

    def _holding(self, wanted: Callable[[str], bool], holders: Iterable[str]) -> set[str]:
        """The clusters whose holder is ``wanted``: those the watch shows held by one of
        ``holders`` (the index, which must list all such), corrected by our writes it has not
        shown yet."""
        names = {name for h in holders for _, name in self.clusters.indexed.get(h, ())}
        for name in list(self._learned):
            fresh = self._fresh(name)
            if fresh is not None:
                if wanted(str(fresh[1].get("aggregator") or "")):
                    names.add(name)
                else:
                    names.discard(name)
        return names

    def status(self, name: str) -> JSON:
        """The cluster's status as this replica last learned it (what its holder wrote)."""
        fresh = self._fresh(name)
        return fresh[1] if fresh is not None else _status_of(self._cluster(name))

    def last_seen(self, name: str) -> float | None:
        """The cluster's ``status.lastSeen`` as a unix time (how other replicas saw it)."""
        return unix_time(self.status(name).get("lastSeen"))

    def claimed_at(self, name: str) -> float | None:
        """Unix time this replica recorded itself as holder of ``name`` (with the agent's
        tunnel up here, so its agent was heard from then); None if it has not."""
        return self._claims.get(name)

    def resource_version(self, name: str) -> str:
        """The resourceVersion to write cluster ``name`` at: our last write's or read's while
        the watch has not moved on since, else the watch's."""
        fresh = self._fresh(name)
        return fresh[0] if fresh is not None else _rv(self._cluster(name))

    def watched(self, name: str) -> str:
        """The resourceVersion of cluster ``name`` its watch shows now: taken before a write
        or read, to hand to :meth:`wrote` with its answer."""
        return _rv(self._cluster(name))

    def wrote(self, name: str, answer: JSON, *, watched: str) -> None:
        """Note the object one of our writes or reads of cluster ``name`` answered with, sent
        when its watch showed ``watched``. Taken before sending, not on the answer: a later
        write by another replica may reach the watch before our answer reaches us, and must
        not then be taken for older than it."""
        self._learned[name] = (watched, _rv(answer), _status_of(answer))

    async def reread(self, name: str) -> None:
        """Read cluster ``name`` now (after a 409, or to check what the watch shows)."""
        watched = self.watched(name)
        try:
            current = await self.api.get(CLUSTERS, name, namespace=self.api.namespace)
        except NotFound:
            self._learned.pop(name, None)
        except KubeError as exc:
            log.warning("cluster %s: could not read who holds it: %s", name, exc)
        else:
            self.wrote(name, current, watched=watched)

    # -- holding clusters ------------------------------------------------------------------

    async def claim(self, name: str) -> bool:
        """Record this replica as the holder of cluster ``name``; return whether it took.

        Written first at the version this replica knows, read only after a 409: when a
        replica dies, the survivors claim its clusters by the thousand, and a read before
        each write would double what they ask of the API server then.
        """
        rv = self.resource_version(name)
        for _ in range(CLAIM_ATTEMPTS):
            try:
                if not rv:
                    current = await self.api.get(CLUSTERS, name, namespace=self.api.namespace)
                    rv = _rv(current)
                patch = {
                    "metadata": {"resourceVersion": rv},
                    "status": {"aggregator": self.identity},
                }
                watched = self.watched(name)
                answer = await self.api.patch_status(
                    CLUSTERS, name, patch, namespace=self.api.namespace
                )
            except Conflict:
                rv = ""  # written meanwhile (perhaps claimed): read again
                continue
            except NotFound:
                return False
            except KubeError as exc:
                log.warning("cluster %s: could not record this replica as holder: %s", name, exc)
                return False
            self._claims[name] = time.time()
            self.wrote(name, answer, watched=watched)
            log.info("cluster %s: held by replica %s", name, self.identity)
            return True
        log.warning("cluster %s: hold not recorded after %d conflicts", name, CLAIM_ATTEMPTS)
        return False

    async def sweep(self, connected: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split the clusters connected here into (held elsewhere now: drop their session,
        not recorded as ours: claim them).

        A claimed cluster whose watch names another holder is read again first: the watch
        may still be showing a write older than our claim.
        """
        stale, unclaimed = [], []
        held = self.held()
        for name in connected:
            holder = self.identity if name in held else self.holder(name)
            if name in self._claims and holder not in ("", self.identity):
                if self._fresh(name) is None:
                    await self.reread(name)
                    holder = self.holder(name)
                if holder not in ("", self.identity):
                    del self._claims[name]
                    stale.append(name)
                    continue
            if holder != self.identity:
                unclaimed.append(name)
        return stale, unclaimed

    # -- Leases ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew this replica's Lease and try for (or keep) the leader's, until cancelled."""
        await self.leases.watch.synced.wait()
        while True:
            try:
                await self._try_lead()
                if self.leader:
                    await self._drop_member()
                else:
                    await self._renew_member()
            except KubeError as exc:
                self._outage.failed(str(exc), self.renew_every)
            else:
                self._outage.succeeded()
            self._renewed.set()
            await asyncio.sleep(self.renew_every)

    async def release(self) -> None:
        """While leader, write the status of clusters no live replica holds after each
        renewal, until cancelled. A loop of its own: at start-up a round may write thousands
        of Clusters, and the Lease renewals must not wait for it (a leader that stops renewing
        loses its Lease, and a member that does is counted dead)."""
        while True:
            await self._renewed.wait()
            self._renewed.clear()
            if self.leader:
                await self._release_orphans()

    def _lease(self, name: str, role: str, holder: str | None, now: float) -> JSON:
        body: JSON = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {
                "name": name,
                "labels": {ROLE_LABEL: role},
                "annotations": {ADDRESS: self.address},
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.settings.lease_duration,
                "renewTime": micro_time(now),
            },
        }
        return body

    async def _renew_member(self) -> None:
        name, ns = member_lease(self.identity), self.api.namespace
        body = self._lease(name, "member", self.identity, time.time())
        if not self._member_made:
            try:
                await self._lease_api.create(LEASES, body, namespace=ns)
                self._member_made = True
                return
            except AlreadyExists:
                self._member_made = True  # ours from before a restart: renewed below
        await self._lease_api.patch(LEASES, name, body, namespace=ns)

    async def _drop_member(self) -> None:
        """While leading, the leader Lease is this replica's membership: its own goes (also one
        left from before a restart, which the watch shows)."""
        name, ns = member_lease(self.identity), self.api.namespace
        if self._member_made or (ns, name) in self.leases.objects:
            with contextlib.suppress(NotFound):  # gone already: the watch had not said
                await self._lease_api.delete(LEASES, name, namespace=ns)
            self._member_made = False

    async def _try_lead(self) -> None:
        ns, now = self.api.namespace, time.time()
        current = self.leases.objects.get((ns, LEADER_LEASE))
        was = self.leader
        try:
            if current is None:
                answer = await self._lease_api.create(
                    LEASES, self._lease(LEADER_LEASE, "leader", self.identity, now), namespace=ns
                )
                self.leader = True
            else:
                spec = current.get("spec") or {}
                # A leader renews at its own last write's version: a 409 says it lost.
                renewing = self.leader and self._leader_rv is not None
                if renewing:
                    rv = str(self._leader_rv)
                elif spec.get("holderIdentity") == self.identity or not self._live(
                    current, now=time.monotonic()
                ):
                    rv = current["metadata"]["resourceVersion"]
                else:
                    self.leader = False
                    return
                patch = self._lease(LEADER_LEASE, "leader", self.identity, now)
                patch["metadata"]["resourceVersion"] = rv
                if not renewing:
                    patch["spec"]["acquireTime"] = micro_time(now)
                    patch["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
                answer = await self._lease_api.patch(LEASES, LEADER_LEASE, patch, namespace=ns)
                self.leader = True
            self._leader_rv = str(answer["metadata"]["resourceVersion"])
        except Conflict:  # another replica wrote it first (AlreadyExists is one too)
            self.leader = False
        if self.leader != was:
            log.info("replica %s %s the leader", self.identity, "is" if self.leader else "is not")

    async def _release_orphans(self) -> None:
        """As leader: a cluster whose holder's Lease expired is Offline and held by no one; one
        no replica ever held is Pending (the holders write the status of the others)."""
        for name in sorted(self.orphans()):
            if not self.leader:
                return  # lost leadership meanwhile: the new leader does the rest
            holder, status = self.holder(name), self.status(name)
            if not holder and status.get("state"):
                continue  # released already (or never held, and written Pending)
            # What a replica holding it would write for a cluster whose agent is away.
            view = ClusterView(name, last_seen=self.last_seen(name))
            want = desired_status(view, now=time.time(), ttl=0.0)
            if holder:  # its versions and summary stay as its holder last wrote them
                want = {"state": want["state"], "conditions": want["conditions"]}
                want["conditions"][0]["reason"] = "AggregatorLost"
                want["conditions"][0]["message"] = (
                    f"Replica {holder}, which held the tunnel, is gone; not reconnected yet."
                )
            want["conditions"][0]["lastTransitionTime"] = rfc3339(time.time())
            watched = self.watched(name)
            patch = {
                "metadata": {"resourceVersion": self.resource_version(name)},
                "status": {**want, "aggregator": None},
            }
            try:
                answer = await self.api.patch_status(
                    CLUSTERS, name, patch, namespace=self.api.namespace
                )
            except (Conflict, NotFound):
                continue  # claimed (or deleted) meanwhile: nothing to release
            except KubeError as exc:
                log.warning("cluster %s: status not written: %s", name, exc)
                continue
            self.wrote(name, answer, watched=watched)
            if holder:
                log.info("cluster %s: replica %s is gone; marked %s", name, holder, want["state"])

    async def leave(self) -> None:
        """Delete this replica's Lease and give up leadership (a clean shutdown)."""
        ns = self.api.namespace
        try:
            await self._lease_api.delete(LEASES, member_lease(self.identity), namespace=ns)
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("could not delete this replica's Lease: %s", exc)
        if self.leader and self._leader_rv is not None:
            release = {
                "metadata": {"resourceVersion": self._leader_rv},
                "spec": {"holderIdentity": None},
            }
            try:
                await self._lease_api.patch(LEASES, LEADER_LEASE, release, namespace=ns)
            except KubeError as exc:
                log.info("leader Lease not released (%s): it expires instead", exc)
            self.leader = False
