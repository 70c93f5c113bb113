"""The runner: hard deadlines, what exceptions mean, timing, and the global concurrency limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from kubeprober.exporter.runner import io_budget, run_check, run_probe
from kubeprober.probers import registry
from kubeprober.probers.durations import format_duration
from kubeprober.probers.probe import load_text
from kubeprober.probers.registry import Prober
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status
from tests.exporter import fakes
from tests.exporter.fakes import Tracker, check, make_probe

PROBERS = fakes.probers_map()
# A runner that fails to end a hung check must fail the test, not hang the suite.
GUARD = 5.0


async def run(**spec: Any) -> tuple[Status, str, float]:
    """Run one fake check (``timeout`` 1 s unless given); return status, message, seconds."""
    c = check(**{"timeout": 1.0, **spec})
    start = time.monotonic()
    async with asyncio.timeout(GUARD):
        result = await run_check(make_probe(checks=(c,)), c, fakes.PROBER)
    return result.status, result.message, time.monotonic() - start


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        ({}, Status.PASS, ""),
        ({"message": "all good"}, Status.PASS, "all good"),
        ({"status": Status.INFO, "message": "fyi"}, Status.INFO, "fyi"),
        ({"status": Status.WARN, "message": "expires soon"}, Status.WARN, "expires soon"),
        ({"status": Status.ERROR, "message": "refused"}, Status.ERROR, "refused"),
        ({"status": Status.UNKNOWN, "message": "cannot tell"}, Status.UNKNOWN, "cannot tell"),
        ({"raises": CheckFailed("HTTP 503")}, Status.ERROR, "HTTP 503"),
        ({"raises": CheckFailed("cert soon", Status.WARN)}, Status.WARN, "cert soon"),
        ({"raises": CheckFailed("no caFile", Status.UNKNOWN)}, Status.UNKNOWN, "no caFile"),
        # The prober's own I/O timeout against its target: the target is broken.
        (
            {"raises": TimeoutError("connect to db:5432")},
            Status.ERROR,
            "timed out: connect to db:5432",
        ),
        ({"raises": TimeoutError()}, Status.ERROR, "timed out"),
        ({"own_timeout": True, "timeout": 0.2}, Status.ERROR, "timed out"),
        # The prober itself is broken: the probe cannot tell.
        (
            {"raises": RuntimeError("boom")},
            Status.UNKNOWN,
            "prober fake failed: RuntimeError: boom",
        ),
        ({"raises": KeyError("x")}, Status.UNKNOWN, "prober fake failed: KeyError: 'x'"),
        (
            {"raises": ConnectionResetError("reset")},
            Status.UNKNOWN,
            "prober fake failed: ConnectionResetError: reset",
        ),
    ],
)
async def test_outcomes(spec: dict[str, Any], status: Status, message: str) -> None:
    got_status, got_message, _ = await run(**spec)
    assert (got_status, got_message) == (status, message)


@pytest.mark.parametrize("status", [Status.INFO, Status.WARN, Status.ERROR, Status.UNKNOWN])
async def test_every_non_pass_gets_a_message(status: Status) -> None:
    got_status, message, _ = await run(status=status)
    assert got_status is status
    assert message == f"prober fake returned {status} without a message"


async def test_empty_check_failed_gets_a_message() -> None:
    status, message, _ = await run(raises=CheckFailed(""))
    assert status is Status.ERROR
    assert message == "prober fake returned ERROR without a message"


async def test_prober_returning_garbage_is_unknown() -> None:
    status, message, _ = await run(returns="PASS")
    assert status is Status.UNKNOWN
    assert message.startswith("prober fake failed: AttributeError")


@pytest.mark.parametrize("deadline", [0.2, 0.5])
async def test_hung_prober_ends_unknown_at_the_deadline(deadline: float) -> None:
    status, message, elapsed = await run(timeout=deadline, hang=True)
    assert status is Status.UNKNOWN
    assert message == f"no result within {format_duration(deadline)}"
    assert deadline <= elapsed < deadline + 0.15


async def test_hung_prober_message_reads_like_the_issue() -> None:
    _, message, _ = await run(timeout=0.5, hang=True)
    assert message == "no result within 500ms"


async def test_slow_prober_within_the_deadline_passes() -> None:
    status, _, elapsed = await run(timeout=0.5, delay=0.2)
    assert status is Status.PASS
    assert 0.2 <= elapsed < 0.45


async def test_own_timeout_comes_before_the_hard_deadline() -> None:
    # ctx.timeout is shorter than the deadline, so a well-behaved prober reports ERROR.
    status, _, elapsed = await run(timeout=0.5, own_timeout=True)
    assert status is Status.ERROR
    assert elapsed == pytest.approx(io_budget(0.5), abs=0.1)


@pytest.mark.parametrize(
    ("deadline", "budget"), [(0.2, 0.18), (1.0, 0.9), (5.0, 4.5), (10.0, 9.5), (60.0, 59.5)]
)
def test_io_budget(deadline: float, budget: float) -> None:
    assert io_budget(deadline) == pytest.approx(budget)
    assert 0 < io_budget(deadline) < deadline


async def test_context_carries_names_and_budget() -> None:
    seen: dict[str, object] = {}

    async def spy(spec: object, ctx: Context) -> Outcome:
        seen.update(ns=ctx.namespace, probe=ctx.probe, check=ctx.check, timeout=ctx.timeout)
        return Outcome.passed()

    prober = Prober("spy", "spy", fakes.Spec, spy, "tests")
    c = check("the-check", timeout=2.0, prober="spy")
    await run_check(make_probe("the-probe", (c,), namespace="ns1"), c, prober)
    assert seen == {"ns": "ns1", "probe": "the-probe", "check": "the-check", "timeout": 1.8}


async def test_unknown_prober_is_unknown() -> None:
    c = check(prober="ping")
    result = await run_check(make_probe(checks=(c,)), c, None)
    assert result.status is Status.UNKNOWN
    assert result.message == "prober 'ping' is not installed"
    results = await run_probe(make_probe(checks=(c,)), PROBERS, asyncio.Semaphore(1))
    assert results["c"].status is Status.UNKNOWN


async def test_result_timing_phases_and_certificates() -> None:
    c = check(delay=0.1, phases={"connect": 0.01, "tls": 0.02}, certificates={"db:5432": 1.9e9})
    before = time.time()
    result = await run_check(make_probe(checks=(c,)), c, fakes.PROBER)
    assert before <= result.started_at <= before + 0.05
    assert 0.1 <= result.duration < 0.3
    assert result.phases["connect"] == 0.01
    assert result.phases["tls"] == 0.02
    assert 0.1 <= result.phases["wait"] < 0.3
    assert result.certificates == {"db:5432": 1.9e9}


async def test_phases_measured_until_the_deadline_are_kept() -> None:
    c = check(timeout=0.2, hang=True, phases={"connect": 0.01})
    async with asyncio.timeout(GUARD):
        result = await run_check(make_probe(checks=(c,)), c, fakes.PROBER)
    assert result.status is Status.UNKNOWN
    assert result.phases["connect"] == 0.01
    assert result.phases["wait"] == pytest.approx(0.2, abs=0.1)


async def test_result_dicts_are_copies() -> None:
    c = check(phases={"connect": 0.01})
    first = await run_check(make_probe(checks=(c,)), c, fakes.PROBER)
    second = await run_check(make_probe(checks=(c,)), c, fakes.PROBER)
    first.phases["connect"] = 99.0
    assert second.phases["connect"] == 0.01


async def test_run_probe_runs_checks_concurrently_and_keeps_names() -> None:
    probe = make_probe(
        checks=(
            check("a", delay=0.2),
            check("b", delay=0.2, status=Status.WARN, message="w"),
            check("c", delay=0.2, raises=RuntimeError("x")),
        )
    )
    start = time.monotonic()
    results = await run_probe(probe, PROBERS, asyncio.Semaphore(10))
    assert time.monotonic() - start < 0.35  # not 0.6: in parallel
    assert list(results) == ["a", "b", "c"]
    assert [r.status for r in results.values()] == [Status.PASS, Status.WARN, Status.UNKNOWN]


async def test_hung_check_does_not_block_another_probes_checks() -> None:
    limit = asyncio.Semaphore(10)
    stuck = Tracker()
    hung = make_probe("hung", (check("h", timeout=0.5, hang=True, tracker=stuck), check("ok")))
    quick = make_probe("quick", (check("q1", delay=0.05), check("q2")))
    hung_task = asyncio.create_task(run_probe(hung, PROBERS, limit))
    await asyncio.wait_for(stuck.started.wait(), GUARD)  # the hung check holds its slot
    results = await run_probe(quick, PROBERS, limit)
    assert not hung_task.done()  # the quick probe did not wait for it
    assert {r.status for r in results.values()} == {Status.PASS}
    async with asyncio.timeout(GUARD):
        hung_results = await hung_task
    assert hung_results["h"].status is Status.UNKNOWN
    assert hung_results["ok"].status is Status.PASS


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_concurrency_limit_is_honoured(limit: int) -> None:
    tracker = Tracker()
    probes = [
        make_probe(f"p{i}", tuple(check(f"c{j}", delay=0.05, tracker=tracker) for j in range(3)))
        for i in range(3)
    ]
    semaphore = asyncio.Semaphore(limit)
    start = time.monotonic()
    all_results = await asyncio.gather(*(run_probe(p, PROBERS, semaphore) for p in probes))
    elapsed = time.monotonic() - start
    assert tracker.calls == 9
    assert tracker.max_in_flight == limit
    assert elapsed >= 0.05 * (9 // limit) - 0.01
    assert all(r.status is Status.PASS for rs in all_results for r in rs.values())


async def test_deadline_counts_from_slot_not_from_queueing() -> None:
    # A check waiting for a slot must not time out because others held the slots.
    semaphore = asyncio.Semaphore(1)
    probe = make_probe(checks=tuple(check(f"c{i}", timeout=0.3, delay=0.15) for i in range(3)))
    results = await run_probe(probe, PROBERS, semaphore)
    assert [r.status for r in results.values()] == [Status.PASS] * 3


async def test_deadline_holds_even_if_the_prober_swallows_cancellation() -> None:
    # A broken plugin that catches CancelledError must not turn a missed deadline into PASS.
    late = asyncio.Event()
    finished = asyncio.Event()

    async def stubborn(spec: object, ctx: Context) -> Outcome:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await late.wait()
        finished.set()
        return Outcome.passed("late")

    prober = Prober("stubborn", "swallows cancellation", fakes.Spec, stubborn, "tests")
    c = check(timeout=0.2, prober="stubborn")
    async with asyncio.timeout(GUARD):
        result = await run_check(make_probe(checks=(c,)), c, prober)
    assert (result.status, result.message) == (Status.UNKNOWN, "no result within 200ms")
    assert not finished.is_set()  # the result did not wait for the prober
    late.set()  # let the abandoned prober task finish before the loop closes
    await asyncio.wait_for(finished.wait(), GUARD)


async def test_a_missing_ca_file_is_an_unknown_message_and_no_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = tmp_path / "absent-ca.pem"
    manifest = f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: payments}}
spec:
  layer: application
  checks:
  - {{name: http, prober: http, with: {{url: "https://127.0.0.1:1/", caFile: "{ca}"}}}}
  - {{name: tls, prober: tls, with: {{host: 127.0.0.1, port: 1, caFile: "{ca}"}}}}
  - {{name: tcp, prober: tcp, with: {{host: 127.0.0.1, port: 1, tls: true, caFile: "{ca}"}}}}
"""
    (probe,) = load_text(manifest, source="payments.yaml").probes
    with caplog.at_level(logging.DEBUG, logger="kubeprober"):
        results = await run_probe(probe, registry.probers(), asyncio.Semaphore(3))
    said = {name: (r.status, r.message) for name, r in results.items()}
    expected = (Status.UNKNOWN, f"caFile {ca}: no such file or directory")
    assert said == dict.fromkeys(("http", "tls", "tcp"), expected)
    assert [r.getMessage() for r in caplog.records] == []  # the scheduler logs transitions


async def test_a_crashing_prober_keeps_its_traceback_for_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="kubeprober.exporter.runner"):
        status, message, _ = await run(raises=RuntimeError("boom"))
    assert status is Status.UNKNOWN and "boom" in message
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG and record.exc_info is not None


async def test_a_container_probe_without_a_cluster_is_unknown_saying_why() -> None:
    (probe,) = load_text(
        "apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {name: shop}\n"
        "spec:\n  layer: application\n"
        "  template: {containers: [{name: probe, image: registry.example.com/shop:1}]}\n"
        "  checks: [{name: login}, {name: order}]\n",
        source="shop.yaml",
    ).probes
    results = await run_probe(probe, registry.probers(), asyncio.Semaphore(1))
    why = "container probes run only in Kubernetes mode (the agent without --probes)"
    assert {n: (r.status, r.message) for n, r in results.items()} == {
        "login": (Status.UNKNOWN, why),
        "order": (Status.UNKNOWN, why),
    }
