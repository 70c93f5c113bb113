"""The container probe SDK and ``kubeprober report`` against the agent's real ``/report``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time

import pytest

from kubeprober.cli import main
from kubeprober.exporter.reports import RunDesk
from kubeprober.probers.container_sdk import (
    ReportFailed,
    Target,
    report,
    run_checks,
)
from kubeprober.probers.report import CheckReport
from kubeprober.probers.sdk import CheckFailed, Outcome
from kubeprober.probers.status import Status
from tests.exporter.report_server import serve_reports
from tests.ports import free_ports

KEY = ("shop", "checkout")
LOGIN = CheckReport("login", Status.ERROR, "503 from /login")


async def test_report_delivers_to_the_run_of_its_token() -> None:
    async with serve_reports() as agent:
        run, token = agent.runs.open(KEY, ("login",))
        target = Target(f"{agent.url}/report", token, time.time() + 10)
        await asyncio.to_thread(report, LOGIN, target=target)
    assert run.reported == {"login": LOGIN}


async def test_report_retries_until_the_agent_is_back(caplog: pytest.LogCaptureFixture) -> None:
    (port,) = free_ports(1)
    retried = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "trying again" in record.getMessage():
                retried.set()

    seen = Seen()
    logging.getLogger("kubeprober.probers.container_sdk").addHandler(seen)
    try:
        runs = RunDesk()  # the run started before the agent went away
        run, token = runs.open(KEY, ("login",))
        target = Target(f"http://127.0.0.1:{port}/report", token, time.time() + 30)
        sending = asyncio.ensure_future(asyncio.to_thread(report, LOGIN, target=target))
        assert await asyncio.to_thread(retried.wait, 10)
        async with serve_reports(port, runs=runs):
            await asyncio.wait_for(sending, 10)
    finally:
        logging.getLogger("kubeprober.probers.container_sdk").removeHandler(seen)
    assert run.reported == {"login": LOGIN}
    assert "Connection refused" in caplog.text


async def test_a_refusal_is_final_and_says_why() -> None:
    async with serve_reports() as agent:
        first, old = agent.runs.open(KEY, ("login",))
        second, _ = agent.runs.open(KEY, ("login",))
        target = Target(f"{agent.url}/report", old, time.time() + 30)
        started = time.monotonic()
        with pytest.raises(ReportFailed) as refused:
            await asyncio.to_thread(report, LOGIN, target=target)
    assert time.monotonic() - started < 5  # not retried until the deadline
    assert refused.value.status == 410
    assert str(refused.value) == (
        f"report refused (410): report refused: run {first.run_id} of probe shop/checkout: "
        f"superseded by run {second.run_id}"
    )


async def test_an_agent_that_stays_away_fails_the_report_at_the_deadline() -> None:
    (port,) = free_ports(1)
    target = Target(f"http://127.0.0.1:{port}/report", "t", time.time() + 1)
    with pytest.raises(ReportFailed, match=r"not delivered before the deadline: .*refused"):
        await asyncio.to_thread(report, LOGIN, target=target)


def test_dry_run_prints_the_report_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEPROBER_DRY_RUN", "1")
    monkeypatch.delenv("KUBEPROBER_REPORT_URL", raising=False)
    out = io.StringIO()
    report(LOGIN, out=out)
    assert json.loads(out.getvalue()) == {
        "checks": [{"name": "login", "status": "ERROR", "message": "503 from /login"}]
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KUBEPROBER_REPORT_URL and KUBEPROBER_RUN_TOKEN not set: run this in a container "
             "probe, or set KUBEPROBER_DRY_RUN=1 to print the report instead"),
        ({"KUBEPROBER_REPORT_URL": "http://a/report", "KUBEPROBER_RUN_TOKEN": "t",
          "KUBEPROBER_DEADLINE": "soon"},
         "KUBEPROBER_DEADLINE: expected an RFC 3339 time, got 'soon'"),
    ],
)  # fmt: skip
def test_the_environment_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ReportFailed) as failed:
        Target.from_env(env)
    assert str(failed.value) == message


def test_the_deadline_comes_from_the_environment() -> None:
    env = {
        "KUBEPROBER_REPORT_URL": "http://a/report",
        "KUBEPROBER_RUN_TOKEN": "t",
        "KUBEPROBER_DEADLINE": "2026-12-04T10:00:30Z",
    }
    assert Target.from_env(env) == Target("http://a/report", "t", 1796378430.0)


def test_run_checks_runs_them_at_once_within_the_timeout() -> None:
    release = threading.Event()
    both = threading.Barrier(2, timeout=5)

    def hangs() -> Outcome:
        release.wait(30)
        return Outcome.passed()

    def meets() -> None:
        both.wait()  # returns only if the other check runs at the same time

    def broken() -> Outcome:
        raise CheckFailed("cart is empty")

    def crashes() -> Outcome:
        raise KeyError("sku")

    try:
        results = run_checks(
            {
                "a": meets,
                "b": meets,
                "warn": lambda: Outcome.warn("slow"),
                "cart": broken,
                "bug": crashes,
                "hang": hangs,
            },
            timeout=1,
        )
    finally:
        release.set()
    assert [(r.name, r.status, r.message) for r in results] == [
        ("a", Status.PASS, ""),
        ("b", Status.PASS, ""),
        ("warn", Status.WARN, "slow"),
        ("cart", Status.ERROR, "cart is empty"),
        ("bug", Status.UNKNOWN, "check failed: KeyError: 'sku'"),
        ("hang", Status.UNKNOWN, "no result within 1s"),
    ]


async def test_kubeprober_report_sends_one_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_reports() as agent:
        run, token = agent.runs.open(KEY, ("login", "order"))
        monkeypatch.setenv("KUBEPROBER_REPORT_URL", f"{agent.url}/report")
        monkeypatch.setenv("KUBEPROBER_RUN_TOKEN", token)
        argv = ["report", "--check", "login", "--status", "warn", "--message", "slow login"]
        assert await asyncio.to_thread(main, argv) == 0
        undeclared = ["report", "--check", "cart", "--status", "PASS"]
        assert await asyncio.to_thread(main, undeclared) == 3
    assert run.reported == {"login": CheckReport("login", Status.WARN, "slow login")}
    assert capsys.readouterr().err.splitlines()[-1] == (
        "kubeprober report: report refused (400): check 'cart' is not declared by probe "
        "shop/checkout (its checks: login, order)"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--check", "a", "--status", "ERROR"], "kubeprober report: --message: required for ERROR"),
        (["--check", "a", "--status", "GREEN"], "argument --status: invalid choice: 'GREEN'"),
    ],
)
def test_kubeprober_report_checks_its_arguments(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["report", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    assert code == 3
    assert error in capsys.readouterr().err
