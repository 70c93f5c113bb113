"""The record of one check run, as the runner produced it."""

from __future__ import annotations

from dataclasses import dataclass, field

from probers.status import Status


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
