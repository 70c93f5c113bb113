"""Run each probe on its schedule: one task per probe, runs in their own tasks.

A probe never overlaps itself: a run that comes due while the previous one is still going
is skipped and counted. Changing the probe set restarts only the probes that changed.
Every task is named, its crash logged, and stopped by cancel-then-await.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.runner import run_probe
from kubeprober.exporter.store import ResultStore, Transition
from kubeprober.exporter.timing import interval_seconds, jitter, next_due
from kubeprober.probers.probe import Probe
from kubeprober.probers.registry import Prober
from kubeprober.probers.result import CheckResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerSettings:
    """How hard the agent may work."""

    max_concurrency: int = 50
    """Checks running at once across all probes: bounds sockets, threads and pods in flight
    so one slow target cannot starve the agent, while 50 keeps hundreds of quick probes
    on time."""
    new_target_delay: float = 0.5
    """Seconds to gather newly discovered targets before running them: a burst of objects
    (a Deployment scaling up) makes one run, and a new target still shows within a second,
    not at the probe's next run."""
    new_target_gap: float = 0.005
    """Seconds between the starts of new targets run together: a thousand found at once (at
    start) start over five seconds rather than in one burst."""


TARGET_SPREAD = 0.5
"""Targets of a check start spread over this part of their probe's interval, each at a stable
offset from its name: 1,000 targets at 30 s start some 60 a second, not all at once, and the
run ends well before the next is due."""
MAX_TARGET_SPREAD = 15.0
"""Seconds the spread lasts at most: an hourly (or cron) probe's targets still run at its time,
not over half an hour."""


class Clock(Protocol):
    """Wall-clock time and waiting for it; tests pass one they move by hand."""

    def now(self) -> float:
        """Return the Unix time."""

    async def sleep_until(self, when: float) -> None:
        """Return once the Unix time ``when`` has come (at once if it has)."""


class WallClock:
    """The real clock."""

    def now(self) -> float:
        """Return the Unix time."""
        return time.time()

    async def sleep_until(self, when: float) -> None:
        """Return once the Unix time ``when`` has come (at once if it has)."""
        await asyncio.sleep(max(0.0, when - time.time()))


class Scheduler:
    """Keeps the running probe set in step with the defined one and records results."""

    def __init__(
        self,
        store: ResultStore,
        probers: Mapping[str, Prober],
        *,
        settings: SchedulerSettings | None = None,
        observe_lag: Callable[[float], None] = lambda _: None,
        on_record: Callable[[tuple[str, str], list[Transition]], None] = lambda k, t: None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        kube: ProberAccess | None = None,
        containers: Callable[[Probe], Awaitable[dict[str, CheckResult]]] | None = None,
    ) -> None:
        """``kube`` is the Kubernetes API the checks get as ``ctx.kube`` and ``containers``
        runs container probes (both in Kubernetes mode; without it they are UNKNOWN)."""
        self._containers = containers
        self._store = store
        self._probers = probers
        self._settings = settings or SchedulerSettings()
        self._limit = asyncio.Semaphore(self._settings.max_concurrency)
        self._observe_lag = observe_lag
        self._on_record = on_record
        self._rng = rng or random.Random()
        self._clock = clock or WallClock()
        self._kube = kube
        # Owned by the event loop: the probe each loop task runs, its loop and its current run.
        self._probes: dict[tuple[str, str], Probe] = {}
        self._loops: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._runs: dict[tuple[str, str], asyncio.Task[None]] = {}
        # New targets of each probe waiting to run, and the task that runs them.
        self._fresh: dict[tuple[str, str], set[str]] = {}
        self._catch_ups: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Cancelled tasks still unwinding; stop() waits for them too.
        self._retiring: set[asyncio.Task[None]] = set()

    def apply(self, probes: Iterable[Probe]) -> None:
        """Make ``probes`` the running set; unchanged probes keep their timing."""
        wanted = {p.key: p for p in probes}
        self._store.set_probes(wanted.values())
        for key in list(self._probes):
            if key not in wanted or wanted[key] != self._probes[key]:
                self._stop_probe(key)
        for key, probe in wanted.items():
            if key not in self._probes:
                self._probes[key] = probe
                self._loops[key] = asyncio.create_task(
                    self._loop(probe), name=f"probe-loop:{probe.namespace}/{probe.name}"
                )

    def targets_added(self, key: tuple[str, str], names: Iterable[str]) -> None:
        """Run a probe's new targets soon, rather than at its next run. Never waits."""
        if key not in self._probes or self._probes[key].suspend or not names:
            return
        self._fresh.setdefault(key, set()).update(names)
        task = self._catch_ups.get(key)
        if task is None or task.done():
            probe = self._probes[key]
            self._catch_ups[key] = asyncio.create_task(
                self._catch_up(probe), name=f"probe-new-targets:{probe.namespace}/{probe.name}"
            )

    async def _catch_up(self, probe: Probe) -> None:
        key = probe.key
        await asyncio.sleep(self._settings.new_target_delay)
        names = self._fresh.pop(key, set())
        state = self._store.get(key)
        if state is None:
            return
        runs = [c for c in state.runs(names) if state.checks[c.name].result is None]
        try:
            results = await run_probe(
                probe,
                self._probers,
                self._limit,
                runs,
                kube=self._kube,
                spread=len(runs) * self._settings.new_target_gap if len(runs) > 1 else 0.0,
                observe_lag=self._observe_lag,
            )
        except Exception:
            log.exception("%s/%s: run of new targets crashed", probe.namespace, probe.name)
            return
        self._record(probe, results, duration=None)

    def _stop_probe(self, key: tuple[str, str]) -> None:
        del self._probes[key]
        self._fresh.pop(key, None)
        for tasks in (self._loops, self._runs, self._catch_ups):
            task = tasks.pop(key, None)
            if task is not None:
                task.cancel()
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    async def run_now(self, key: tuple[str, str]) -> None:
        """Run a probe at once (``kubeprober run``); if a run is going, wait for that one.

        Raise KeyError for an unknown probe. A manual run never overlaps a scheduled one.
        """
        probe = self._probes[key]
        running = self._runs.get(key)
        if running is None or running.done():
            running = asyncio.create_task(
                self._run(probe), name=f"probe-run:{probe.namespace}/{probe.name}"
            )
            self._runs[key] = running
        await asyncio.shield(running)

    async def stop(self) -> None:
        """Cancel every loop and run, and wait until they have ended."""
        tasks = [
            *self._loops.values(),
            *self._runs.values(),
            *self._catch_ups.values(),
            *self._retiring,
        ]
        self._probes.clear()
        self._loops.clear()
        self._runs.clear()
        self._catch_ups.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, probe: Probe) -> None:
        key = probe.key
        previous: float | None = None
        try:
            while True:
                now = self._clock.now()
                state = self._store.get(key)
                pending = state is not None and any(c.result is None for c in state.checks.values())
                due = next_due(probe, previous=previous, now=now, pending=pending)
                interval = interval_seconds(probe, now)
                if due is None:  # suspended or ran once: no interval, so it never turns stale
                    self._store.set_schedule(key, next_run=None, interval=None)
                    return
                at = due + jitter(probe, self._rng)
                self._store.set_schedule(key, next_run=at, interval=interval)
                await self._clock.sleep_until(at)
                self._observe_lag(max(0.0, self._clock.now() - at))
                previous = due
                running = self._runs.get(key)
                if running is not None and not running.done():
                    self._store.count_skipped(key)
                    log.warning(
                        "%s/%s: run skipped, the previous run is still going",
                        probe.namespace,
                        probe.name,
                    )
                    continue
                self._runs[key] = asyncio.create_task(
                    self._run(probe), name=f"probe-run:{probe.namespace}/{probe.name}"
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s/%s: scheduling loop crashed", probe.namespace, probe.name)

    async def _run(self, probe: Probe) -> None:
        start = time.monotonic()
        state = self._store.get(probe.key)
        if state is None:
            return
        try:
            if probe.template is not None and self._containers is not None:
                async with self._limit:  # a pod in flight counts like a check
                    results = await self._containers(probe)
            else:
                results = await run_probe(
                    probe,
                    self._probers,
                    self._limit,
                    state.runs(),
                    kube=self._kube,
                    spread=min((state.interval or 0.0) * TARGET_SPREAD, MAX_TARGET_SPREAD),
                    observe_lag=self._observe_lag,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s/%s: run crashed", probe.namespace, probe.name)
            return
        self._record(probe, results, duration=time.monotonic() - start)

    def _record(
        self, probe: Probe, results: dict[str, CheckResult], *, duration: float | None
    ) -> None:
        transitions = self._store.record(probe.key, results, duration=duration)
        self._on_record(probe.key, transitions)
        for t in transitions:
            level = logging.INFO if t.current.is_success else logging.WARNING
            log.log(
                level,
                "%s/%s check %s: %s -> %s%s",
                t.namespace,
                t.probe,
                t.check,
                t.previous or "new",
                t.current,
                f": {t.message}" if t.message else "",
            )
