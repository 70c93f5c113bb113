"""The result store: the one source for metrics, ``/status`` and ProbeStatus.

It keeps, per check, the latest result, the history that alerts need (consecutive failures,
last success, last transition, runs by status) and the last few results for people
(``/status?history=1``, the board's strip), and per probe its schedule facts.
All mutation happens on the event loop (scheduler and loader tasks); readers take snapshots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from kubeprober.probers.probe import Probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status

HISTORY_LENGTH = 20
"""Results kept per check: the strip the board draws when a cluster is opened. At a 30 s
interval that is the last ten minutes, enough to see a check flap."""


def new_history() -> deque[CheckResult]:
    """An empty history of at most :data:`HISTORY_LENGTH` results."""
    return deque(maxlen=HISTORY_LENGTH)


@dataclass
class CheckState:
    """What is known about one check across runs."""

    result: CheckResult | None = None
    consecutive_failures: int = 0
    last_success: float | None = None
    """Unix time of the last run whose status counts as success (PASS, INFO, WARN)."""
    last_transition: float | None = None
    """Unix time the status last changed (the first result counts as a change)."""
    runs: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(Status, 0))
    history: deque[CheckResult] = field(default_factory=new_history)
    """The last results, oldest first; the newest is ``result``."""

    def __post_init__(self) -> None:
        # A state restored with only its last result starts its history there.
        if self.result is not None and not self.history:
            self.history.append(self.result)

    def record(self, result: CheckResult) -> bool:
        """Fold in a new result; return whether the status changed."""
        changed = self.result is None or self.result.status is not result.status
        if changed:
            self.last_transition = result.started_at + result.duration
        if result.status.is_success:
            self.consecutive_failures = 0
            self.last_success = result.started_at
        else:
            self.consecutive_failures += 1
        self.runs[result.status] += 1
        self.result = result
        self.history.append(result)
        return changed


@dataclass
class ProbeState:
    """A probe's definition with its checks' states and its schedule facts."""

    probe: Probe
    checks: dict[str, CheckState]
    next_run: float | None = None
    duration: float | None = None
    skipped_runs: int = 0
    interval: float | None = None

    @property
    def last_run(self) -> float | None:
        """Unix time of the latest check run, restored ones included."""
        return max((c.result.started_at for c in self.checks.values() if c.result), default=None)


@dataclass(frozen=True)
class Transition:
    """A check whose status changed, for events and notices."""

    namespace: str
    probe: str
    check: str
    previous: Status | None
    current: Status
    message: str


class ResultStore:
    """Latest results per check, keyed by ``(namespace, probe)`` then check name."""

    def __init__(self) -> None:
        self._probes: dict[tuple[str, str], ProbeState] = {}
        # Checks restored from disk or ProbeStatus, waiting for their probe to be defined.
        self._restored: dict[tuple[str, str], dict[str, CheckState]] = {}
        self.revision = 0
        """Bumped on every change; persistence and pullers compare it."""

    def restore(self, states: Mapping[tuple[str, str], Mapping[str, CheckState]]) -> None:
        """Offer saved check states; they are used when their probe is (or becomes) defined."""
        for key, checks in states.items():
            self._restored[key] = dict(checks)
            if key in self._probes:
                self._adopt(self._probes[key])
        self.revision += 1

    def set_probes(self, probes: Iterable[Probe]) -> None:
        """Make the defined probes exactly ``probes``: keep history of checks that remain."""
        wanted = {p.key: p for p in probes}
        for key in list(self._probes):
            if key not in wanted:
                del self._probes[key]
        for key, probe in wanted.items():
            state = self._probes.get(key)
            if state is None:
                state = ProbeState(probe, {})
                self._probes[key] = state
            state.probe = probe
            names = {c.name for c in probe.checks}
            state.checks = {n: state.checks.get(n) or CheckState() for n in sorted(names)}
            self._adopt(state)
        self.revision += 1

    def _adopt(self, state: ProbeState) -> None:
        restored = self._restored.pop(state.probe.key, {})
        for name, saved in restored.items():
            current = state.checks.get(name)
            if current is not None and current.result is None:
                state.checks[name] = saved

    def record(
        self, key: tuple[str, str], results: Mapping[str, CheckResult], *, duration: float
    ) -> list[Transition]:
        """Store one run's results; return the status transitions it caused."""
        state = self._probes.get(key)
        if state is None:  # the probe was removed while it ran
            return []
        transitions = []
        for name, result in results.items():
            check = state.checks.get(name)
            if check is None:
                continue
            previous = check.result.status if check.result else None
            if check.record(result):
                transitions.append(
                    Transition(key[0], key[1], name, previous, result.status, result.message)
                )
        state.duration = duration
        self.revision += 1
        return transitions

    def set_schedule(
        self, key: tuple[str, str], *, next_run: float | None, interval: float | None
    ) -> None:
        """Record when the probe runs next and its interval."""
        state = self._probes.get(key)
        if state is not None:
            state.next_run = next_run
            state.interval = interval

    def count_skipped(self, key: tuple[str, str]) -> None:
        """Count a run skipped because the previous one was still going."""
        state = self._probes.get(key)
        if state is not None:
            state.skipped_runs += 1
            self.revision += 1

    def __iter__(self) -> Iterator[ProbeState]:
        return iter(sorted(self._probes.values(), key=lambda s: s.probe.key))

    def get(self, key: tuple[str, str]) -> ProbeState | None:
        """Return the state of one probe, or None."""
        return self._probes.get(key)
