"""Rebuild the result store from the ProbeStatus objects when the agent starts.

Exists so a restarted agent carries on where it stopped: ``consecutiveFailures`` and
``lastTransitionTime`` survive, so alerts on them do not flap, and a probe's last result
shows until it runs again. The returned check states go to
:meth:`exporter.store.ResultStore.restore`; the objects themselves go to the status writer,
which then skips writes that would change nothing. It must not write anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubeprober.exporter.store import CheckState
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import PROBE_STATUSES
from kubeprober.kube.watching import Key
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)

PERMISSIONS = (PROBE_STATUSES.permission("list"),)


@dataclass
class Restored:
    """What the cluster remembered: check states, and the objects they came from."""

    states: dict[Key, dict[str, CheckState]] = field(default_factory=dict)
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)


def parse_time(text: object) -> float | None:
    """Return the unix time of an RFC 3339 string, or None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        # fromisoformat takes "Z" from Python 3.11 on, and fractional seconds too.
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def check_states(status: dict[str, Any]) -> dict[str, CheckState]:
    """Rebuild check states from a ProbeStatus ``.status``; checks never run are skipped."""
    states: dict[str, CheckState] = {}
    for check in status.get("checks") or []:
        if not isinstance(check, dict):
            continue
        started = parse_time(check.get("lastRun"))
        try:
            result_status = Status(str(check.get("status")))
        except ValueError:
            continue
        if started is None or not isinstance(check.get("name"), str):
            continue
        duration = check.get("durationSeconds")
        failures = check.get("consecutiveFailures")
        result = CheckResult(
            status=result_status,
            message=str(check.get("message") or ""),
            started_at=started,
            duration=float(duration) if isinstance(duration, int | float) else 0.0,
        )
        states[check["name"]] = CheckState(
            result=result,
            consecutive_failures=failures if isinstance(failures, int) and failures >= 0 else 0,
            # The object keeps no last-success time; a passing last run is one.
            last_success=started if result_status.is_success else None,
            last_transition=parse_time(check.get("lastTransitionTime")),
            # Run counts are not kept in the object: the counters restart at zero, which
            # Prometheus reads as a counter reset.
        )
    return states


async def load(api: KubeApi, *, namespace: str | None) -> Restored:
    """List the ProbeStatus objects (of one namespace, or all) and rebuild their states."""
    listing = await api.list(PROBE_STATUSES, namespace=namespace)
    restored = Restored()
    for obj in listing["items"]:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        restored.objects[key] = obj
        states = check_states(obj.get("status") or {})
        if states:
            restored.states[key] = states
    log.info(
        "restored %d checks of %d probes from ProbeStatus",
        sum(len(s) for s in restored.states.values()),
        len(restored.states),
    )
    return restored
