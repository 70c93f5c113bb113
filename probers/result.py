"""The record of one check run, as the runner produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubeprober.probers.status import Status


@dataclass(frozen=True)
class CheckResult:
    """One run of one check: what the prober found and how long it took."""

    status: Status
    message: str
    started_at: float
    """Unix time the check started."""
    duration: float
    """Seconds from start to result (or to the deadline)."""
    phases: dict[str, float] = field(default_factory=dict)
    certificates: dict[str, float] = field(default_factory=dict)


def rfc3339(ts: float | None) -> str | None:
    """Render a unix time as RFC 3339 UTC with a ``Z`` (the contract's time format), or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
