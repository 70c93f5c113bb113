"""The result store: the one source for metrics, ``/status`` and ProbeStatus.

It keeps, per check, the latest result, the history that alerts need (consecutive failures,
last success, last transition, runs by status) and the last few results for people
(``/status?history=1``, the board's strip), and per probe its schedule facts.
All mutation happens on the event loop (scheduler and loader tasks); readers take snapshots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from kubeprober.probers.probe import Check, Probe, bind
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from kubeprober.probers.targets import Target

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


@dataclass(frozen=True)
class TargetSet:
    """The runs of one check with ``targets:``, at most its cap, and what was left out."""

    runs: tuple[Check, ...] = ()
    """One bound check per target (named ``<check>/<target>``), sorted by name."""
    targets: tuple[Target, ...] = ()
    """The targets of ``runs``, in the same order."""
    left_out: int = 0
    """Targets found beyond the check's cap (``targets.max``), not run."""
    message: str = ""
    """Why there are no targets to run, when that is not simply "none match"."""

    @classmethod
    def of(
        cls,
        check: Check,
        targets: Iterable[Target],
        *,
        bound: Callable[[Target], Check] | None = None,
        message: str = "",
    ) -> TargetSet:
        """Bind the first ``targets.max`` targets by name; count the rest as left out.

        ``bound`` returns a target's run (a cache may answer); by default :func:`bind`.
        """
        assert check.targets is not None
        ordered = sorted(targets, key=lambda t: t.name)
        kept = tuple(ordered[: check.targets.max])
        runs = tuple(map(bound or (lambda t: bind(check, t)), kept))
        return cls(runs, kept, len(ordered) - len(kept), message)


WAITING = "waiting for the first list of objects"


def initial_targets(check: Check) -> TargetSet:
    """A check's target set before discovery said anything: its static list, bound."""
    assert check.targets is not None
    if check.targets.static is not None:
        return TargetSet.of(check, check.targets.static)
    return TargetSet(message=WAITING)


@dataclass
class ProbeState:
    """A probe's definition with its checks' states and its schedule facts."""

    probe: Probe
    checks: dict[str, CheckState]
    """Every run's state by name: plain checks, and ``<check>/<target>`` per target."""
    next_run: float | None = None
    duration: float | None = None
    skipped_runs: int = 0
    interval: float | None = None
    targets: dict[str, TargetSet] = field(default_factory=dict)
    """The current targets of each check that has ``targets:``, by check name."""

    def runs(self, names: Iterable[str] | None = None) -> list[Check]:
        """The checks one run of the probe runs (each target its own), or only ``names``."""
        out: list[Check] = []
        for check in self.probe.checks:
            if check.targets is None:
                out.append(check)
            else:
                out.extend(self.targets[check.name].runs)
        if names is not None:
            wanted = set(names)
            out = [c for c in out if c.name in wanted]
        return out

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
            before = {c.name: c for c in state.probe.checks}
            state.probe = probe
            targets = {}
            for check in probe.checks:
                if check.targets is None:
                    continue
                old, kept = before.get(check.name), state.targets.get(check.name)
                if old is None or kept is None or old.targets != check.targets:
                    targets[check.name] = initial_targets(check)
                elif old != check:  # same targets, other options: bind them again
                    targets[check.name] = TargetSet.of(check, kept.targets, message=kept.message)
                else:
                    targets[check.name] = kept
            state.targets = targets
            self._rebuild(state)
        self.revision += 1

    def set_targets(self, key: tuple[str, str], check: str, targets: TargetSet) -> list[str]:
        """Replace one check's targets; return the names of runs that are new to it."""
        state = self._probes.get(key)
        if state is None or check not in state.targets:
            return []
        before = set(state.checks)
        state.targets[check] = targets
        self._rebuild(state)
        self.revision += 1
        return [name for name in state.checks if name not in before]

    def _rebuild(self, state: ProbeState) -> None:
        """Make the check states match the probe's runs, keeping the history of those that stay."""
        names = sorted(c.name for c in state.runs())
        state.checks = {n: state.checks.get(n) or CheckState() for n in names}
        self._adopt(state)

    def _adopt(self, state: ProbeState) -> None:
        restored = self._restored.get(state.probe.key)
        if not restored:
            return
        for name in list(restored):
            current = state.checks.get(name)
            if current is not None and current.result is None:
                state.checks[name] = restored.pop(name)

    def record(
        self, key: tuple[str, str], results: Mapping[str, CheckResult], *, duration: float | None
    ) -> list[Transition]:
        """Store one run's results; return the status transitions it caused.

        ``duration`` is the whole run's; None for a run of some targets only, which keeps it.
        """
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
        if duration is not None:
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
