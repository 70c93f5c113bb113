"""Fake probers for runner, scheduler and store tests: one probe function, behaviour in its spec.

The spec says what the fake does (sleep, hang, raise, return a status, record phases and
certificates) so a test builds any check with :func:`check` and runs it through the real runner
and scheduler via :func:`probers_map`. A :class:`Tracker` counts calls and in-flight runs.
A :class:`FakeClock` stands for the scheduler's wall clock and moves only when told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeprober.probers.probe import Check, Layer, Probe
from kubeprober.probers.registry import Prober
from kubeprober.probers.sdk import Context, Outcome
from kubeprober.probers.status import Status

NAME = "fake"


class FakeClock:
    """A wall clock that moves only by :meth:`advance`, and tells who sleeps on it until when."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._slept = asyncio.Event()

    def now(self) -> float:
        """Return the fake Unix time."""
        return self._now

    async def sleep_until(self, when: float) -> None:
        """Return once :meth:`advance` has reached ``when`` (after one loop turn if it has)."""
        if when <= self._now:
            await asyncio.sleep(0)
            return
        sleeper = (when, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        self._slept.set()
        try:
            await sleeper[1]
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> list[float]:
        """The times the pending sleeps wait for, earliest first."""
        return sorted(when for when, fut in self._sleepers if not fut.done())

    def advance(self, seconds: float) -> None:
        """Move the time on and wake every sleep that is due."""
        self._now += seconds
        for when, fut in list(self._sleepers):
            if when <= self._now and not fut.done():
                fut.set_result(None)

    async def sleeping_past(self, time: float, within: float = 2.0) -> float:
        """Wait until something sleeps until after ``time``; return the earliest such time."""
        async with asyncio.timeout(within):
            while True:
                later = [when for when in self.sleepers if when > time]
                if later:
                    return later[0]
                self._slept.clear()
                await self._slept.wait()

    async def sleeping(self, count: int, within: float = 2.0) -> list[float]:
        """Wait until ``count`` sleeps are pending; return until when, earliest first."""
        async with asyncio.timeout(within):
            while len(self.sleepers) < count:
                self._slept.clear()
                await self._slept.wait()
        return self.sleepers


class Tracker:
    """Counts calls and the most checks seen in flight at once (compared by identity)."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished = 0
        self.started = asyncio.Event()
        """Set once a check has started."""


@dataclass(frozen=True)
class Spec:
    """What the fake prober does, in order: track, record, sleep or hang, raise, return."""

    status: Status = Status.PASS
    message: str = ""
    delay: float = 0.0
    """Seconds to sleep before answering (a slow but well-behaved target)."""
    hang: bool = False
    """Wait forever, ignoring ``ctx.timeout``: only the runner's hard deadline ends it."""
    raises: BaseException | None = None
    """Raised after the delay: CheckFailed, TimeoutError (own I/O timeout) or a crash."""
    own_timeout: bool = False
    """Run into an ``asyncio.timeout(ctx.timeout)`` of its own, as a real prober's I/O would."""
    returns: Any = None
    """Returned instead of an Outcome when set (a buggy prober)."""
    phases: Mapping[str, float] = field(default_factory=dict)
    certificates: Mapping[str, float] = field(default_factory=dict)
    tracker: Tracker | None = None


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Behave as ``spec`` says."""
    tracker = spec.tracker
    if tracker is not None:
        tracker.calls += 1
        tracker.started.set()
        tracker.in_flight += 1
        tracker.max_in_flight = max(tracker.max_in_flight, tracker.in_flight)
    try:
        ctx.phases.update(spec.phases)
        for target, expiry in spec.certificates.items():
            ctx.record_certificate(target, expiry)
        if spec.own_timeout:
            async with asyncio.timeout(ctx.timeout):
                await asyncio.Event().wait()
        with ctx.phase("wait"):
            if spec.hang:
                await asyncio.Event().wait()
            if spec.delay:
                await asyncio.sleep(spec.delay)
        if spec.raises is not None:
            raise spec.raises
        if spec.returns is not None:
            return spec.returns  # type: ignore[no-any-return]
        return Outcome(spec.status, spec.message)
    finally:
        if tracker is not None:
            tracker.in_flight -= 1
            tracker.finished += 1


PROBER = Prober(NAME, "A fake prober whose spec says what it does.", Spec, probe, "tests")


def probers_map() -> dict[str, Prober]:
    """Return the prober map the runner and scheduler take, holding only the fake."""
    return {NAME: PROBER}


def check(name: str = "c", *, timeout: float = 1.0, prober: str = NAME, **spec: Any) -> Check:
    """Build a Check of the fake prober with ``Spec(**spec)``."""
    return Check(name=name, prober=prober, spec=Spec(**spec), options={}, timeout=timeout)


def make_probe(
    name: str = "p",
    checks: tuple[Check, ...] | None = None,
    *,
    namespace: str = "default",
    layer: Layer = "application",
    interval: float | None = None,
    schedule: str | None = None,
    time_zone: str | None = None,
    jitter: float = 0.0,
    suspend: bool = False,
) -> Probe:
    """Build a Probe directly, bypassing manifest parsing (and the prober registry)."""
    return Probe(
        namespace=namespace,
        name=name,
        layer=layer,
        checks=checks if checks is not None else (check(),),
        schedule=schedule,
        time_zone=time_zone,
        interval=interval,
        jitter=jitter,
        suspend=suspend,
    )
