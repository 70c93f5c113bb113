"""Assignments through a real tunnel to an agent app that answers them well or badly."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from kubeprober.aggregator.assigner import Assigner, AssignSettings
from kubeprober.aggregator.views import ClusterView
from tests.tunnel.harness import Aggregator, make_agent, make_tls

Answer = Callable[[web.Request], Awaitable[web.Response]]
SETTINGS = AssignSettings(timeout=0.3, retry_base=5.0, retry_cap=20.0)


def body(revision: int) -> dict[str, object]:
    return {"revision": revision, "probes": []}


async def good(request: web.Request) -> web.Response:
    sent = await request.json()
    return web.json_response({"revision": sent["revision"], "accepted": [], "refused": []})


async def empty(request: web.Request) -> web.Response:
    return web.Response()


RELEASE = web.AppKey("release", asyncio.Event)  # ends silent handlers at teardown


async def silent(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()  # the aggregator gives up long before
    return web.Response()


@dataclass
class Rig:
    """An assigner with a hand-driven clock and the agent app's record of PUTs."""

    assigner: Assigner
    answer: list[Answer]
    puts: list[int] = field(default_factory=list)
    now: float = 1000.0
    view: ClusterView = field(default_factory=lambda: ClusterView("moon", connected=True))


@pytest.fixture
async def rig(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    answer: list[Answer] = [good]
    puts: list[int] = []

    async def put(request: web.Request) -> web.Response:
        puts.append((await request.json())["revision"])
        return await answer[0](request)

    app = web.Application()
    app[RELEASE] = release = asyncio.Event()
    app.router.add_put("/v1/assignment", put)
    agg = Aggregator(make_tls(tmp_path))
    await agg.start()
    assert agg.server is not None
    agent = make_agent(agg.port, agg.add_cluster("moon", tmp_path), agg.tls, app=app)
    await agent.start()
    await agent.wait_connected()
    agents = agg.server.client()
    made = Rig(Assigner(agents, SETTINGS, clock=lambda: made.now), answer, puts)
    try:
        yield made
    finally:
        release.set()
        agents.close()
        await agent.close()
        await agg.stop()


async def test_a_good_answer_is_sent_once(rig: Rig) -> None:
    await rig.assigner.push(rig.view, body(7))
    await rig.assigner.push(rig.view, body(7))
    assert (rig.puts, rig.view.assignment_revision) == ([7], 7)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (empty, "the agent answered 200 with an empty body"),
        (silent, "no answer within 0.3 s"),
    ],
    ids=["empty-200", "timeout"],
)
async def test_a_failed_revision_is_logged_and_retried_with_backoff(
    rig: Rig, caplog: pytest.LogCaptureFixture, answer: Answer, reason: str
) -> None:
    rig.answer[0] = answer
    await rig.assigner.push(rig.view, body(7))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == (
        f"assignment revision 7 to cluster moon failed: {reason}; next try in 5 s"
    )
    # Each wait doubles, up to the cap; a push before its time sends nothing.
    for wait in (5.0, 10.0, 20.0, 20.0):
        sent = len(rig.puts)
        rig.now += wait - 0.01
        await rig.assigner.push(rig.view, body(7))
        assert len(rig.puts) == sent, f"sent again before {wait} s"
        rig.now += 0.01
        await rig.assigner.push(rig.view, body(7))
        assert len(rig.puts) == sent + 1, f"not sent again after {wait} s"
    assert rig.view.assignment_revision is None
    # The agent mends its ways: the next try succeeds and ends the backoff.
    rig.answer[0] = good
    rig.now += 20.0
    await rig.assigner.push(rig.view, body(7))
    assert rig.view.assignment_revision == 7


async def test_a_new_revision_or_session_is_sent_at_once(rig: Rig) -> None:
    rig.answer[0] = empty
    await rig.assigner.push(rig.view, body(7))
    await rig.assigner.push(rig.view, body(8))
    rig.assigner.forget("moon")
    await rig.assigner.push(rig.view, body(8))
    assert rig.puts == [7, 8, 8]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"revision": 6, "accepted": [], "refused": []}, "revision: expected 7, got 6"),
        ({"revision": 7, "refused": []}, "accepted: expected a list of names, got None"),
        ({"revision": 7, "accepted": [], "refused": [{"name": "x"}]}, "refused: expected a list"),
        ([7], "the answer is not a JSON object"),
    ],
    ids=["stale-revision", "no-accepted", "refusal-without-reason", "not-an-object"],
)
async def test_an_answer_that_is_not_the_contracts_is_a_failure(
    rig: Rig, caplog: pytest.LogCaptureFixture, answer: object, reason: str
) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.json_response(answer)

    rig.answer[0] = reply
    await rig.assigner.push(rig.view, body(7))
    assert rig.view.assignment_revision is None
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert reason in record.getMessage()


async def test_an_error_status_names_the_agents_error(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "bad assignment: revision: expected an integer"}, status=400
        )

    rig.answer[0] = reply
    await rig.assigner.push(rig.view, body(7))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "the agent answered 400: bad assignment: revision: expected an integer" in (
        record.getMessage()
    )
