"""Write each probe's results to its ProbeStatus, without ever holding probing up.

Exists so ``kubectl get probestatus`` shows what ``/status`` shows: ``.status`` is built
from :func:`exporter.status.probe_view`, so the two shapes stay one. :meth:`StatusWriter.mark`
only notes that a probe changed; worker tasks write later, coalesced per probe (the latest
view wins, so at most one write per probe per run), paced by a token bucket. The object is
created as soon as the Probe is defined (``Pending`` until a check has a result), named after
its Probe and owned by it (``controller: true``), so deleting the Probe deletes it through the
garbage collector; this module never deletes.
A 409 gets a fresh read and a retry; while the API is away, writes wait with backoff and
catch up (one per probe, the latest) when it returns. It must not touch the result store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeprober.exporter.kube.watching import ProbeRef
from kubeprober.exporter.status import passed, probe_view
from kubeprober.exporter.store import ProbeState, ResultStore
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import (
    AlreadyExists,
    Conflict,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from kubeprober.kube.resources import PROBE_STATUSES, PROBES
from kubeprober.kube.watching import Key
from kubeprober.outage import Outage
from kubeprober.pacing import Backoff, BackoffSettings, TokenBucket
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)

PERMISSIONS = (
    PROBE_STATUSES.permission("create"),  # on the first result
    PROBE_STATUSES.permission("get"),  # fresh read after a 409 or a name clash
    PROBE_STATUSES.permission("patch"),  # point the ownerReference at a recreated Probe
    PROBE_STATUSES.permission("patch", "status"),  # every result
)
STATUS_FIELDS = ("status", "message", "lastRun", "nextRun", "checks")
PENDING = "Pending"
"""The probe-level status while none of its checks has a result (/status says null)."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubeprober-agent"}


@dataclass(frozen=True)
class StatusSettings:
    """Pacing of ProbeStatus writes."""

    rate: float = 50.0
    """Writes per second at most: 200 probes at a 10 s interval need 20/s, so this leaves
    room to catch up after an outage, while an apiserver's default max-inflight (400
    mutating) is never approached by one agent."""
    burst: int = 100
    """Writes allowed back to back: a burst of probes finishing together goes out at once."""
    workers: int = 4
    """Writes in flight at once: as many as the API facade has threads."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    conflict_retries: int = 3
    """Fresh reads and retries after a 409 before giving up until the next result."""


@dataclass
class WriterStats:
    """Counters for tests and the benchmark. Owned by the writer's tasks."""

    writes: int = 0
    """Successful status writes."""
    creates: int = 0
    conflicts: int = 0
    failures: int = 0
    skipped: int = 0
    """Marks that needed no write: the object already held the same status."""


@dataclass
class _Known:
    """What the agent last knew to be in the cluster for one probe."""

    owner_uid: str
    status: dict[str, Any] | None


def status_body(state: ProbeState) -> dict[str, Any]:
    """Return ProbeStatus ``.status`` for a probe: its /status view minus identity fields.

    A probe none of whose checks has a result is ``Pending``; a check without a result is
    listed with ``pending: true`` and no status (null fields are left out of list items: a
    merge patch replaces lists whole, so nulls there would be stored).
    """
    view = probe_view(state)
    body = {k: view[k] for k in STATUS_FIELDS}
    body["status"] = view["status"] or PENDING
    body["checks"] = [
        {k: v for k, v in c.items() if v is not None} for c in view["checks"] if _listed(c)
    ]
    for check in body["checks"]:
        if "/" in check["name"] and len(check["message"]) > MAX_TARGET_MESSAGE:
            check["message"] = check["message"][: MAX_TARGET_MESSAGE - 3] + "..."
    body["passed"] = passed(view)
    body["durationSeconds"] = round(state.duration, 6) if state.duration is not None else None
    # Only probes with targets hold the field: the others' objects stay as they were.
    body["targets"] = [_counted(t, view["checks"]) for t in view["targets"]] or None
    return body


MAX_TARGET_MESSAGE = 256
"""Characters of a failing target's message kept in ProbeStatus: with ``targets.max`` at its
highest and every target failing, the object stays near half a megabyte."""


def _listed(check: Mapping[str, Any]) -> bool:
    """Whether a check is listed in ProbeStatus: every plain check, and the targets that
    fail (the others are counted in ``targets``, so the object stays small at the cap)."""
    return "/" not in check["name"] or check["status"] in _FAILING


_FAILING = {Status.WARN.value, Status.ERROR.value, Status.UNKNOWN.value}


def _counted(targets: Mapping[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """A check's targets in ProbeStatus: counts, and why there are none if it says."""
    prefix = targets["check"] + "/"
    mine = [c for c in checks if c["name"].startswith(prefix)]
    good = sum(c["status"] in (Status.PASS.value, Status.INFO.value) for c in mine)
    return {
        "check": targets["check"],
        "total": targets["total"],
        "passed": good,
        "pending": sum(c["pending"] for c in mine),
        "leftOut": targets["leftOut"],
        "message": targets["message"],
    }


def _present(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop null fields: a merge patch deletes them, so the object never holds them."""
    return {k: v for k, v in (status or {}).items() if v is not None}


def owner_reference(ref: ProbeRef) -> dict[str, Any]:
    """Return the ownerReference that ties a ProbeStatus to its Probe."""
    # No blockOwnerDeletion: it would need "update probes/finalizers", and nothing is gained.
    return {
        "apiVersion": PROBES.api_version,
        "kind": PROBES.kind,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
    }


def _owner_uid(obj: Mapping[str, Any]) -> str:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((str(r.get("uid", "")) for r in refs if r.get("controller")), "")


class StatusWriter:
    """Writes ProbeStatus objects in the background; :meth:`mark` never waits."""

    def __init__(
        self,
        api: KubeApi,
        store: ResultStore,
        owner: Callable[[Key], ProbeRef | None],
        *,
        settings: StatusSettings | None = None,
        observe_lag: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._api = api
        self._store = store
        self._owner = owner
        self.settings = settings or StatusSettings()
        self._observe_lag = observe_lag
        self._bucket = TokenBucket(self.settings.rate, self.settings.burst)
        self._backoff = Backoff(self.settings.backoff)
        self._outage = Outage(log, "writing ProbeStatus")
        self.stats = WriterStats()
        # All owned by the event loop (mark and the workers):
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: dict[Key, float] = {}  # key -> monotonic time of its oldest unwritten mark
        self._writing: dict[Key, float] = {}  # key -> its mark's time, while being written
        self._known: dict[Key, _Known] = {}
        self._resume_at = 0.0  # monotonic time before which nobody writes (API away)

    @property
    def pending(self) -> int:
        """Return how many probes wait for a write (in flight included)."""
        return len(self._pending.keys() | self._writing.keys())

    def behind(self) -> float:
        """Return how long the oldest result not yet in its ProbeStatus has waited, in
        seconds (0 when every ProbeStatus is current). Safe to call from a scrape's thread."""
        # list() copies each dict in one step under the GIL: the loop may change them.
        marks = list(self._pending.values()) + list(self._writing.values())
        return time.monotonic() - min(marks) if marks else 0.0

    def seed(self, objects: Mapping[Key, Mapping[str, Any]]) -> None:
        """Remember existing ProbeStatus objects, so unchanged results are not written again."""
        for key, obj in objects.items():
            self._known[key] = _Known(_owner_uid(obj), _present(obj.get("status")))

    def mark(self, key: Key) -> None:
        """Note that a probe's results changed; it is written soon, once, with its latest view."""
        if key in self._pending:
            return
        self._pending[key] = time.monotonic()
        if key not in self._writing:
            self._queue.put_nowait(key)

    async def run(self) -> None:
        """Run the write workers until cancelled."""
        workers = [
            asyncio.create_task(self._work(), name=f"kube-status-writer-{i}")
            for i in range(self.settings.workers)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.wait(workers)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            delay = self._resume_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._bucket.take()
            marked = self._pending.pop(key, None)
            if marked is None:
                continue
            self._writing[key] = marked
            try:
                await self._write(key)
            except (Unavailable, TooManyRequests) as exc:
                self.stats.failures += 1
                self._pending[key] = min(marked, self._pending.get(key, marked))
                self._back_off(exc)
            except KubeError as exc:
                self.stats.failures += 1
                log.error("writing ProbeStatus %s/%s failed: %s", key[0], key[1], exc)
            except Exception:
                self.stats.failures += 1
                log.exception("writing ProbeStatus %s/%s crashed", key[0], key[1])
            else:
                self._backoff.reset()
                self._outage.succeeded()
                self._observe_lag(time.monotonic() - marked)
            finally:
                self._writing.pop(key, None)
                if key in self._pending:
                    self._queue.put_nowait(key)

    def _back_off(self, exc: KubeError) -> None:
        now = time.monotonic()
        if now < self._resume_at:
            return  # another worker already backed off for this outage
        # A server's Retry-After is honoured up to the backoff's maximum: a huge one (or a
        # proxy's hour) must not stall every write past what an outage costs.
        retry_after = exc.retry_after if isinstance(exc, TooManyRequests) else 0.0
        delay = self._backoff.next_delay(at_least=retry_after)
        self._resume_at = now + delay
        self._outage.failed(str(exc), delay)

    async def _write(self, key: Key) -> None:
        state = self._store.get(key)
        ref = self._owner(key)
        if state is None or ref is None:
            return  # removed, or its Probe is not known (yet)
        body = status_body(state)
        known = self._known.get(key)
        if known is not None and known.owner_uid == ref.uid and known.status == _present(body):
            self.stats.skipped += 1
            return
        namespace, name = key
        for _ in range(self.settings.conflict_retries + 1):
            if known is None or known.owner_uid != ref.uid:
                known = await self._ensure(ref)
                self._known[key] = known
            try:
                await self._api.patch_status(
                    PROBE_STATUSES, name, {"status": body}, namespace=namespace
                )
            except NotFound:
                known = None  # deleted under us (garbage collected?): create it again
                self._known.pop(key, None)
                continue
            except Conflict:
                self.stats.conflicts += 1
                fresh = await self._api.get(PROBE_STATUSES, name, namespace=namespace)
                known = _Known(_owner_uid(fresh), _present(fresh.get("status")))
                self._known[key] = known
                continue
            self.stats.writes += 1
            known.status = _present(body)
            return
        raise Conflict(f"ProbeStatus {namespace}/{name}: still conflicting after retries")

    async def _ensure(self, ref: ProbeRef) -> _Known:
        """Make the ProbeStatus exist and be owned by the Probe ``ref``."""
        body = {
            "apiVersion": PROBE_STATUSES.api_version,
            "kind": PROBE_STATUSES.kind,
            "metadata": {
                "name": ref.name,
                "namespace": ref.namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_reference(ref)],
            },
        }
        try:
            await self._api.create(PROBE_STATUSES, body, namespace=ref.namespace)
            self.stats.creates += 1
            return _Known(ref.uid, None)
        except AlreadyExists:
            pass
        existing = await self._api.get(PROBE_STATUSES, ref.name, namespace=ref.namespace)
        if _owner_uid(existing) != ref.uid:
            # Left from an earlier Probe of the same name: take it over before the garbage
            # collector removes it for its vanished owner.
            patch = {"metadata": {"ownerReferences": [owner_reference(ref)]}}
            existing = await self._api.patch(
                PROBE_STATUSES, ref.name, patch, namespace=ref.namespace
            )
        return _Known(_owner_uid(existing), _present(existing.get("status")))
