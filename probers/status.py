"""The five check statuses, their severity order and the roll-up both services report."""

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


def worst(statuses: Iterable[Status], *, empty: Status = Status.PASS) -> Status:
    """Return the most severe status, or ``empty`` when there is none."""
    return max(statuses, key=lambda s: s.severity, default=empty)


@dataclass(frozen=True)
class Summary:
    """Checks counted by status: the ``{status, total, byStatus}`` of the status documents."""

    status: Status
    total: int
    by_status: dict[Status, int]

    @classmethod
    def of(cls, statuses: Iterable[Status], *, empty: Status = Status.PASS) -> Summary:
        """Count ``statuses``; an empty set rolls up to ``empty``."""
        counts = dict.fromkeys(Status, 0)
        for status in statuses:
            counts[status] += 1
        present = [s for s, n in counts.items() if n]
        return cls(worst(present, empty=empty), sum(counts.values()), counts)

    def to_json(self) -> dict[str, object]:
        """Render as the JSON object of docs/contracts.md."""
        return {
            "status": self.status.value,
            "total": self.total,
            "byStatus": {s.value: n for s, n in self.by_status.items()},
        }
