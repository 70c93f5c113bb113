"""``POST /report`` served as the agent serves it: both body shapes, tokens, refusals, logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kubeprober.exporter.reports import RunDesk
from kubeprober.probers.report import MAX_BODY_BYTES
from kubeprober.probers.status import Status
from tests.exporter.report_server import serve_reports

KEY = ("shop", "checkout")
CHECKS = ("login", "order")


class Agent:
    """The agent's listen address with a run desk the test opens runs on."""

    def __init__(self, url: str, runs: RunDesk, session: aiohttp.ClientSession) -> None:
        self.url, self.runs, self.session = url, runs, session

    async def post(
        self, body: object, *, token: str = "", path_token: str = "", raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST a report; return the status and the JSON answer."""
        url = f"{self.url}/report" + (f"/{path_token}" if path_token else "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(url, data=data, headers=headers) as answer:
            return answer.status, await answer.json()


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    """Serve the agent's app on 127.0.0.1 through the agent's own runner."""
    async with serve_reports() as server, aiohttp.ClientSession() as session:
        yield Agent(server.url, server.runs, session)


def ours(*checks: tuple[str, str]) -> dict[str, Any]:
    """Our shape of report."""
    return {"checks": [{"name": n, "status": s, "message": f"{n} said {s}"} for n, s in checks]}


def original(*checks: tuple[str, str], probe: tuple[str, str] = KEY) -> dict[str, Any]:
    """Exactly what the original kubeprober SDK sends: inline fields plus checkers."""
    return {
        "probeName": probe[1],
        "probeNamespace": probe[0],
        "name": "checkout-item",
        "status": "error",
        "message": "",
        "lastRun": "2026-12-04T10:00:00Z",
        "checkers": [
            {"name": n, "status": s, "message": "", "lastRun": "2026-12-04T10:00:00.123456+00:00"}
            for n, s in checks
        ],
    }


async def test_our_shape_with_a_bearer_token_completes_the_run(agent: Agent) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    assert await agent.post(ours(("login", "PASS")), token=token) == (
        200,
        {"run": run.run_id, "accepted": ["login"]},
    )
    assert not run.complete.is_set()  # order not reported yet
    assert (await agent.post(ours(("order", "WARN")), token=token))[0] == 200
    assert run.complete.is_set()
    assert {n: (c.status, c.message) for n, c in run.reported.items()} == {
        "login": (Status.PASS, "login said PASS"),
        "order": (Status.WARN, "order said WARN"),
    }


async def test_the_original_payload_with_the_token_in_the_path(agent: Agent) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    status, _ = await agent.post(original(("login", "info"), ("order", "Error")), path_token=token)
    assert status == 200
    assert {n: c.status for n, c in run.reported.items()} == {
        "login": Status.INFO,
        "order": Status.ERROR,
    }
    assert run.complete.is_set()


@pytest.mark.parametrize(
    ("token", "path_token", "message"),
    [
        ("", "", "run token required: Authorization: Bearer, or POST /report/TOKEN"),
        ("not-a-token", "", "unknown run token"),
        ("", "not-a-token", "unknown run token"),
    ],
)
async def test_without_a_known_token_nothing_is_taken(
    agent: Agent, token: str, path_token: str, message: str
) -> None:
    run, _ = agent.runs.open(KEY, CHECKS)
    answer = await agent.post(ours(("login", "PASS")), token=token, path_token=path_token)
    assert answer == (401, {"error": message})
    assert run.reported == {}


async def test_a_superseded_run_is_gone_410_for_us_and_400_for_the_original_sdk(
    agent: Agent,
) -> None:
    first, old = agent.runs.open(KEY, CHECKS)
    second, new = agent.runs.open(KEY, CHECKS)
    gone = f"report refused: run {first.run_id} of probe shop/checkout: superseded by run "
    assert await agent.post(ours(("login", "PASS")), token=old) == (
        410,
        {"error": gone + second.run_id},
    )
    # The original SDK retries every answer but 200 and 400: it must hear 400 to stop.
    assert (await agent.post(original(("login", "PASS")), path_token=old))[0] == 400
    assert first.reported == {} and second.reported == {}
    assert (await agent.post(ours(("login", "PASS")), token=new))[0] == 200


async def test_a_report_after_the_run_ended_is_gone(agent: Agent) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    agent.runs.close(run)
    status, answer = await agent.post(ours(("login", "PASS")), token=token)
    assert (status, answer["error"]) == (
        410,
        f"report refused: run {run.run_id} of probe shop/checkout: it has already ended",
    )
    assert run.reported == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "bad report: not JSON: Expecting property name enclosed in double quotes: "
               "line 1 column 2 (char 1)"),
        (b"\xff", "bad report: not JSON: 'utf-8' codec can't decode byte 0xff in position 0: "
                  "invalid start byte"),
        (b"[]", "bad report: expected a JSON object, got []"),
        (b"{}", "bad report: checks: expected a non-empty list of checks, got null"),
        (b'{"checks": [], "x": 1}', "bad report: x: unknown field (known: checks, or checkers)"),
        (b'{"checks": [{"name": "login", "status": "GREEN"}]}',
         'bad report: checks[0].status: expected one of PASS, INFO, WARN, ERROR, UNKNOWN, '
         'got "GREEN"'),
        (b'{"checks": [{"name": "login"}]}',
         "bad report: checks[0].status: expected one of PASS, INFO, WARN, ERROR, UNKNOWN, "
         "got null"),
        (b'{"checks": [{"name": "no spaces", "status": "PASS"}]}',
         'bad report: checks[0].name: expected a check name, got "no spaces"'),
        (b'{"checks": [{"name": "login", "status": "PASS"}, {"name": "login", "status": "PASS"}]}',
         'bad report: checks[1].name: duplicate check "login"'),
        (b'{"checks": [{"name": "login", "status": "PASS", "message": 3}]}',
         "bad report: checks[0].message: expected a string, got 3"),
        (json.dumps(ours(("login", "PASS"), ("cart", "PASS"))).encode(),
         "check 'cart' is not declared by probe shop/checkout (its checks: login, order)"),
        (json.dumps(original(("login", "PASS"), probe=("shop", "other"))).encode(),
         "probeNamespace/probeName: this token belongs to probe shop/checkout, not shop/other"),
        (json.dumps({**original(("login", "PASS")), "probeName": None}).encode(),
         "bad report: probeName: expected the probe's name, got null"),
        (json.dumps({**original(("login", "PASS")), "lastRun": "yesterday"}).encode(),
         'bad report: lastRun: expected an RFC 3339 time like 2026-12-04T10:00:00Z, '
         'got "yesterday"'),
    ],
)  # fmt: skip
async def test_a_malformed_body_is_400_naming_the_problem(
    agent: Agent, raw: bytes, message: str
) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    assert await agent.post(None, token=token, raw=raw) == (400, {"error": message})
    assert run.reported == {}


async def test_an_oversized_report_is_413_with_or_without_a_length(agent: Agent) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    big = json.dumps(ours(("login", "PASS"))).encode() + b" " * MAX_BODY_BYTES
    refused = (413, {"error": f"report larger than {MAX_BODY_BYTES} bytes"})
    assert await agent.post(None, token=token, raw=big) == refused

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    url = f"{agent.url}/report/{token}"
    async with agent.session.post(url, data=chunks()) as answer:
        assert (answer.status, await answer.json()) == refused
    assert run.reported == {}


async def test_a_path_token_reaches_no_log_line_and_no_answer(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    run, token = agent.runs.open(KEY, CHECKS)
    agent.runs.open(("shop", "other"), CHECKS)
    answers = []
    with caplog.at_level(logging.DEBUG):
        for body in (b"{", json.dumps(ours(("cart", "PASS"))).encode()):
            answers.append(await agent.post(None, path_token=token, raw=body))
        answers.append(await agent.post(ours(("login", "PASS")), path_token=token))
        agent.runs.close(run)
        answers.append(await agent.post(ours(("order", "PASS")), path_token=token))
        # A request line the parser refuses, carrying the token: the INFO line redacts it.
        host, port = agent.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST /report/{token} HTTP/1.1 extra\r\nHost: x\r\n\r\n".encode())
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
    assert [status for status, _ in answers] == [400, 400, 200, 410]
    assert token not in json.dumps(answers)
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if token in line]
    access = [r.getMessage() for r in caplog.records if r.name == "kubeprober.exporter.access"]
    assert len(access) == 5 and all("POST /report/REDACTED " in line for line in access[:4])
    assert any("bad request from 127.0.0.1: 400" in line for line in lines)
