"""The five check statuses, their severity order and the roll-up both services report.

A check that has no result yet is *pending*: it has no status (``None``), is counted apart
from the five, and a roll-up over nothing but pending checks (or over no checks) is ``None``
too. Nothing checked is neither healthy nor UNKNOWN, which means "the probe could not tell".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Status(enum.StrEnum):
    """Outcome of one check: PASS and INFO are good, WARN degraded, ERROR broken, UNKNOWN unsure.

    ERROR means the target is unhealthy; UNKNOWN means the probe itself could not tell
    (deadline hit, prober crashed, agent offline), so users can tell the two apart.
    """

    PASS = "PASS"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"

    @property
    def severity(self) -> int:
        """Rank for roll-ups: ERROR > WARN > UNKNOWN > INFO > PASS."""
        return _SEVERITY[self]

    @property
    def is_success(self) -> bool:
        """Whether ``check_success`` is 1: the check ran and the target works."""
        return self in (Status.PASS, Status.INFO, Status.WARN)

    @property
    def exit_code(self) -> int:
        """Monitoring-plugin exit code: 0 PASS/INFO, 1 WARN, 2 ERROR, 3 UNKNOWN."""
        return _EXIT_CODE[self]


_SEVERITY = {Status.PASS: 0, Status.INFO: 1, Status.UNKNOWN: 2, Status.WARN: 3, Status.ERROR: 4}
_EXIT_CODE = {Status.PASS: 0, Status.INFO: 0, Status.WARN: 1, Status.ERROR: 2, Status.UNKNOWN: 3}

# Statuses in severity order, worst first: the order humans read tables in.
BY_SEVERITY: tuple[Status, ...] = tuple(sorted(Status, key=lambda s: -s.severity))


def worst(statuses: Iterable[Status]) -> Status | None:
    """Return the most severe status, or None when there is none (nothing has a result)."""
    return max(statuses, key=lambda s: s.severity, default=None)


def exit_code(status: Status | None) -> int:
    """Exit code of ``check`` and ``status``: the status's, or 3 when nothing has a result."""
    return Status.UNKNOWN.exit_code if status is None else status.exit_code


def shown(status: str | None, *, pending: int) -> str:
    """The word tables print for a roll-up: its status, else "pending" or "no checks"."""
    if status is not None:
        return status
    return "pending" if pending else "no checks"


@dataclass(frozen=True)
class Summary:
    """Checks counted: the ``{status, total, pending, byStatus}`` of the status documents.

    ``total`` counts every check, ``pending`` those without a result, ``byStatus`` the others;
    ``status`` is the worst of those that have a result, None when none has.
    """

    status: Status | None
    total: int
    pending: int
    by_status: dict[Status, int]

    @classmethod
    def of(cls, statuses: Iterable[Status | None]) -> Summary:
        """Count ``statuses``, where None is a pending check."""
        counts = dict.fromkeys(Status, 0)
        pending = 0
        for status in statuses:
            if status is None:
                pending += 1
            else:
                counts[status] += 1
        present = [s for s, n in counts.items() if n]
        return cls(worst(present), sum(counts.values()) + pending, pending, counts)

    def to_json(self) -> dict[str, object]:
        """Render as the JSON object of docs/contracts.md."""
        return {
            "status": None if self.status is None else self.status.value,
            "total": self.total,
            "pending": self.pending,
            "byStatus": {s.value: n for s, n in self.by_status.items()},
        }
