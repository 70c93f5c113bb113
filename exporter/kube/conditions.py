"""The ``Valid`` and ``Scheduled`` conditions on each Probe's status, written only on change.

Exists so ``kubectl get probes`` / ``describe probe`` say whether the agent accepted a Probe
and why not, naming the field and the bad value. Conditions are computed from the watcher's
entry and compared with what the object already holds; a write happens only when they differ
(``lastTransitionTime`` kept unless the status flips), through the status subresource, paced
and retried in the background. It must not decide validity itself (that is
:func:`probers.probe.parse_probe`) nor block anything on the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeprober.exporter.exec_policy import ExecNotAllowed
from kubeprober.exporter.kube.watching import ProbeEntry
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import (
    Conflict,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from kubeprober.kube.resources import PROBES
from kubeprober.kube.watching import Key
from kubeprober.pacing import Backoff, BackoffSettings, TokenBucket
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import Probe
from kubeprober.probers.result import rfc3339

log = logging.getLogger(__name__)

# patch: write the conditions; get: read the Probe afresh after a 409.
PERMISSIONS = (PROBES.permission("patch", "status"), PROBES.permission("get"))
CONDITION_TYPES = ("Valid", "Scheduled")
MESSAGE_LIMIT = 1024
"""Characters of a condition message: a SpecError names the path and the value, which
:func:`probers.options.shown` already shortens; this only guards against the unexpected."""


@dataclass(frozen=True)
class ConditionSettings:
    """Pacing of condition writes."""

    rate: float = 10.0
    """Writes per second at most: conditions change only when Probes are edited, so this
    only matters when hundreds of Probes are applied at once."""
    burst: int = 50
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    conflict_retries: int = 3
    """Fresh reads and retries after a 409 before giving up until the next change."""


def reason_for(error: SpecError) -> str:
    """Return a CamelCase reason naming what kind of field is wrong."""
    path = error.path
    if isinstance(error, ExecNotAllowed):
        return "ExecNotAllowed"
    if path.startswith("spec.template"):
        return "InvalidTemplate"
    if path.endswith(".prober"):
        return "UnknownProber"
    if ".with" in path:
        return "InvalidOptions"
    if path.startswith(("spec.schedule", "spec.timeZone")):
        return "InvalidSchedule"
    if path.startswith(("spec.interval", "spec.jitter", "spec.timeout")) or path.endswith(
        ".timeout"
    ):
        return "InvalidDuration"
    return "InvalidSpec"


def _cadence(probe: Probe) -> str:
    if probe.schedule is not None:
        return f"cron {probe.schedule!r} ({probe.time_zone or 'UTC'})"
    if probe.interval is not None:
        return f"every {probe.interval:g}s"
    return "once"


def desired(entry: ProbeEntry) -> dict[str, dict[str, Any]]:
    """Return the conditions ``entry`` calls for, by type, without transition times."""
    gen = entry.ref.generation
    if entry.error is None:
        valid = {"status": "True", "reason": "Valid", "message": "the spec is valid"}
    else:
        valid = {"status": "False", "reason": reason_for(entry.error), "message": str(entry.error)}
    probe = entry.probe
    if probe is None:
        scheduled = {
            "status": "False",
            "reason": "InvalidSpec",
            "message": "not running: no valid version of this Probe seen (see Valid)",
        }
    elif probe.suspend:
        scheduled = {"status": "False", "reason": "Suspended", "message": "spec.suspend is true"}
    elif entry.error is not None:
        scheduled = {
            "status": "True",
            "reason": "LastValidSpec",
            "message": f"running generation {entry.probe_generation}, the last valid spec, "
            f"{_cadence(probe)}",
        }
    else:
        scheduled = {"status": "True", "reason": "Scheduled", "message": f"runs {_cadence(probe)}"}
    out = {}
    for kind, cond in (("Valid", valid), ("Scheduled", scheduled)):
        cond["message"] = cond["message"][:MESSAGE_LIMIT]
        out[kind] = {"type": kind, **cond, "observedGeneration": gen}
    return out


def current(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the conditions an object holds, by type."""
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds if isinstance(c, dict) and "type" in c}


def _same(want: dict[str, Any], have: dict[str, Any] | None) -> bool:
    return have is not None and all(have.get(k) == v for k, v in want.items())


def status_patch(entry: ProbeEntry, *, now: float) -> dict[str, Any] | None:
    """Return the status patch that brings the object's conditions up to date, or None."""
    want = desired(entry)
    have = current(entry.raw)
    observed = (entry.raw.get("status") or {}).get("observedGeneration")
    if observed == entry.ref.generation and all(_same(want[t], have.get(t)) for t in want):
        return None
    conditions = []
    for kind in CONDITION_TYPES:
        old = have.get(kind)
        flipped = old is None or old.get("status") != want[kind]["status"]
        since = rfc3339(now) if flipped or old is None else old.get("lastTransitionTime")
        conditions.append({**want[kind], "lastTransitionTime": since or rfc3339(now)})
    # Keep conditions of other types that someone else set; the list is replaced whole.
    conditions += [c for t, c in have.items() if t not in CONDITION_TYPES]
    return {"status": {"observedGeneration": entry.ref.generation, "conditions": conditions}}


class ConditionWriter:
    """Writes conditions of changed Probes in the background, coalesced per Probe."""

    def __init__(
        self,
        api: KubeApi,
        lookup: Callable[[Key], ProbeEntry | None],
        *,
        settings: ConditionSettings | None = None,
    ) -> None:
        self._api = api
        self._lookup = lookup
        self.settings = settings or ConditionSettings()
        self._bucket = TokenBucket(self.settings.rate, self.settings.burst)
        self._backoff = Backoff(self.settings.backoff)
        # Owned by the event loop: keys waiting for a write, in order, without duplicates.
        self._pending: dict[Key, None] = {}
        self._wake = asyncio.Event()
        self.writes = 0
        self.last_written: Key | None = None
        """The Probe whose conditions were written last (writes are one at a time, in order)."""

    def update(self, keys: set[Key]) -> None:
        """Note that these Probes changed; their conditions are checked and written soon."""
        for key in sorted(keys):
            self._pending[key] = None
        if self._pending:
            self._wake.set()

    async def run(self) -> None:
        """Write pending conditions until cancelled; never raises API errors."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key = next(iter(self._pending))
                del self._pending[key]
                try:
                    await self._write(key)
                    self._backoff.reset()
                except (Unavailable, TooManyRequests) as exc:
                    self._pending.setdefault(key, None)
                    delay = self._backoff.next_delay()
                    log.warning("writing Probe conditions failed: %s; retry in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                except KubeError as exc:
                    log.error("writing Probe conditions failed: %s", exc)

    async def _write(self, key: Key) -> None:
        for _ in range(self.settings.conflict_retries + 1):
            entry = self._lookup(key)
            if entry is None:
                return  # deleted meanwhile
            patch = status_patch(entry, now=time.time())
            if patch is None:
                return
            await self._bucket.take()
            try:
                written = await self._api.patch_status(PROBES, key[1], patch, namespace=key[0])
                self.writes += 1
                self.last_written = key
                # Take only the status: a newer spec in the answer is the watcher's to see.
                entry.raw = {**entry.raw, "status": written.get("status") or {}}
                return
            except NotFound:
                return  # deleted: the watch will tell
            except Conflict:
                # Someone changed it: read afresh (the watch may lag) and compute again.
                fresh = await self._api.get(PROBES, key[1], namespace=key[0])
                if entry.ref.uid != (fresh.get("metadata") or {}).get("uid"):
                    return  # recreated: the watch will deliver the new object
                entry.raw = {**entry.raw, "status": fresh.get("status") or {}}
        log.warning("Probe %s/%s conditions: still conflicting, giving up until it changes", *key)
