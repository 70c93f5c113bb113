"""Run one probe's checks: the runner owns deadlines, timing and what an exception means.

A prober's own I/O timeout against its target is ERROR (the target is slow or blackholed);
the runner's hard deadline and a crashing prober are UNKNOWN (the probe could not tell).
The prober gets ``ctx.timeout`` a little shorter than the hard deadline so that a well-behaved
prober always reports its own timeout first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.probers.durations import format_duration
from kubeprober.probers.probe import Check, Probe
from kubeprober.probers.registry import Prober
from kubeprober.probers.result import CheckResult
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)


def io_budget(deadline: float) -> float:
    """Seconds a prober may spend on I/O within a hard deadline of ``deadline`` seconds."""
    return deadline - min(0.5, deadline * 0.1)


async def run_check(
    probe: Probe, check: Check, prober: Prober | None, *, kube: ProberAccess | None = None
) -> CheckResult:
    """Run one check under its hard deadline and turn whatever happens into a result.

    ``kube`` is the Kubernetes API, if there is one: the check gets it as ``ctx.kube``.
    """
    started_at = time.time()
    start = time.monotonic()
    timeout = io_budget(check.timeout)
    ctx = Context(
        namespace=probe.namespace,
        probe=probe.name,
        check=check.name,
        timeout=timeout,
        log=logging.getLogger(f"kubeprober.probe.{check.prober}"),
        kube_api=kube.for_check(timeout) if kube is not None else None,
    )
    if check.problem:  # a target whose fields do not make valid options: nothing to run
        status, message = Status.UNKNOWN, check.problem
    elif prober is None:
        status, message = Status.UNKNOWN, f"prober {check.prober!r} is not installed"
    else:
        status, message = await _outcome(prober, check, ctx)
    if status is not Status.PASS and not message:
        message = f"prober {check.prober} returned {status} without a message"
    return CheckResult(
        status=status,
        message=message,
        started_at=started_at,
        duration=time.monotonic() - start,
        phases=dict(ctx.phases),
        certificates=dict(ctx.certificates),
    )


CANCEL_GRACE = 0.1
"""Seconds a cancelled prober gets to unwind after the hard deadline."""

# Probers that ignored cancellation and are still running; kept so they are not collected
# mid-flight, dropped (and logged) when they finally end.
_abandoned: set[asyncio.Task[Outcome]] = set()


async def _outcome(prober: Prober, check: Check, ctx: Context) -> tuple[Status, str]:
    async def call() -> Outcome:
        return await prober.probe(check.spec, ctx)

    task = asyncio.create_task(call(), name=f"check:{ctx.namespace}/{ctx.probe}/{check.name}")
    try:
        done, _ = await asyncio.wait({task}, timeout=check.timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        # A short grace lets a well-behaved prober unwind (and close its phases); one that
        # swallows cancellation is abandoned: the hard deadline holds regardless.
        done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if not done:
            _abandoned.add(task)
        task.add_done_callback(_forget)
        return Status.UNKNOWN, f"no result within {format_duration(check.timeout)}"
    try:
        outcome = task.result()
        return outcome.status, outcome.message
    except CheckFailed as exc:
        return exc.status, str(exc)
    except TimeoutError as exc:
        # The prober let its own I/O timeout escape: the target did not answer in time.
        return Status.ERROR, f"timed out: {exc}" if str(exc) else "timed out"
    except Exception as exc:  # the prober itself is broken: say so, do not blame the target
        # The message goes into the result, logged once per transition by the scheduler; the
        # traceback is for whoever debugs the prober, not for every run of every interval.
        log.debug("prober %s crashed in %s/%s", check.prober, ctx.probe, check.name, exc_info=True)
        return Status.UNKNOWN, f"prober {check.prober} failed: {type(exc).__name__}: {exc}"


def _forget(task: asyncio.Task[Outcome]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        outcome = "with an error" if task.exception() else "normally"
        log.warning("%s ended %s after its deadline", task.get_name(), outcome)


def target_offset(name: str, spread: float) -> float:
    """Seconds into its probe's run a target's run starts: stable, taken from its name."""
    return zlib.crc32(name.encode()) / 2**32 * spread


def unknown_results(probe: Probe, message: str, *, started_at: float) -> dict[str, CheckResult]:
    """Every check of ``probe`` UNKNOWN with ``message``: the probe could not tell."""
    duration = max(0.0, time.time() - started_at)
    unknown = CheckResult(Status.UNKNOWN, message, started_at, duration)
    return dict.fromkeys((c.name for c in probe.checks), unknown)


async def run_probe(
    probe: Probe,
    probers: Mapping[str, Prober],
    limit: asyncio.Semaphore,
    checks: Sequence[Check] | None = None,
    *,
    kube: ProberAccess | None = None,
    spread: float = 0.0,
    observe_lag: Callable[[float], None] = lambda seconds: None,
) -> dict[str, CheckResult]:
    """Run ``checks`` (by default the probe's own) concurrently, each holding one slot of
    ``limit``; a check with targets is given as one bound check per target.

    Targets' runs start at their own offset within ``spread`` seconds (:func:`target_offset`),
    so a thousand targets do not fall due in the same millisecond; how late each gets its
    slot after its offset goes to ``observe_lag``.

    A container probe's checks are its pod's to run (:mod:`exporter.kube.containers`); here,
    without a cluster, they can only be UNKNOWN.
    """
    if probe.template is not None:
        return unknown_results(
            probe,
            "container probes run only in Kubernetes mode (the agent without --probes)",
            started_at=time.time(),
        )
    runs = probe.checks if checks is None else checks

    start = time.monotonic()

    async def one(check: Check) -> CheckResult:
        planned = None
        if spread > 0 and "/" in check.name:  # a target's run (check names hold no "/")
            planned = start + target_offset(check.name, spread)
            await asyncio.sleep(planned - time.monotonic())
        async with limit:
            if planned is not None:
                observe_lag(max(0.0, time.monotonic() - planned))
            return await run_check(probe, check, probers.get(check.prober), kube=kube)

    results = await asyncio.gather(*(one(c) for c in runs))
    return {c.name: r for c, r in zip(runs, results, strict=True)}
