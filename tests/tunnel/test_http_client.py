"""AgentClient: HTTP/1.1 over `agent` streams, against aiohttp's server and scripted raw agents.

The aiohttp group runs over the memory pipe and a real WebSocket; the raw-agent group (malformed
answers, retries, framing corner cases) over the memory pipe only, since it tests parsing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pytest
from aiohttp import web

from kubeprober.tunnel import (
    Session,
    SessionClosed,
    Stream,
    StreamReset,
    StreamState,
    TargetHandler,
    TunnelError,
)
from kubeprober.tunnel.http.client import MAX_BODY, AgentClient, BadResponse, Reply
from kubeprober.tunnel.http.serve import AppServer
from tests.tunnel.conftest import PairFactory
from tests.tunnel.harness import toy_app, wait_until

CLUSTER = "moon"
# Random rather than repeated bytes, so a lost, doubled or reordered frame changes the body.
BLOB = random.Random(7).randbytes(8 * 1024 * 1024)
CHUNKS = [b"first,", b"second,", b"x" * 70_000, b"last"]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# Most tests exercise parsing, not transports: the memory pipe is enough and fastest.
memory_only = pytest.mark.parametrize("make_pair", ["memory"], indirect=True)


# -- the agent side ---------------------------------------------------------------------------


def agent_app() -> web.Application:
    """toy_app's /small, /hang and /big, plus answers that exercise each way a body is framed."""
    app = toy_app()

    async def hello(request: web.Request) -> web.StreamResponse:
        return web.Response(text="hello", headers={"X-Probe-Result": "Yes"})

    async def echo(request: web.Request) -> web.StreamResponse:
        # the stream, not request.read(): that stops at aiohttp's 1 MiB client_max_size
        body = await request.content.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "host": request.host,
                "user_agent": request.headers.get("User-Agent"),
                "x_trace": request.headers.get("X-Trace"),
                "content_type": request.headers.get("Content-Type"),
                "content_length": request.content_length,
                "body": body.decode() if len(body) < 4096 else None,
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    async def blob(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BLOB)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in CHUNKS:
            await response.write(part)
            await asyncio.sleep(0)  # separate writes, so separate chunks on the wire
        await response.write_eof()
        return response

    async def close_header(request: web.Request) -> web.StreamResponse:
        # aiohttp keeps its side open on a hand-set header: the client must end the stream.
        return web.Response(text="bye", headers={"Connection": "close"})

    async def force_close(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="bye", headers={"Connection": "close"})
        response.force_close()
        return response

    async def no_content(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/blob", blob)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close-header", close_header)
    app.router.add_get("/force-close", force_close)
    app.router.add_get("/no-content", no_content)
    return app


async def read_request(stream: Stream, buf: bytearray) -> tuple[str, str, bytes] | None:
    """Return the next request's method, path and body from ``stream``; None at its end."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = await stream.read()
        if not chunk:
            return None
        buf += chunk
    lines = bytes(buf[:end]).decode().split("\r\n")
    del buf[: end + 4]
    method, path, _ = lines[0].split(" ")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    while len(buf) < length:
        chunk = await stream.read()
        if not chunk:
            return None
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return method, path, body


@dataclass
class RawAgent:
    """An agent answering each request with the raw bytes scripted for its path.

    A path mapped to None ends the stream (FIN) without an answer; a path in ``close_after``
    ends it right after its answer.
    """

    routes: Mapping[str, bytes | None]
    close_after: frozenset[str] = frozenset()
    trickle: bool = False  # one byte per frame, so every parse crosses read boundaries
    seen: list[tuple[int, str, str]] = field(default_factory=list)

    async def __call__(self, stream: Stream) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            method, path, _ = request
            self.seen.append((stream.id, method, path))
            raw = self.routes[path]
            if raw is None:
                return
            if self.trickle:
                for i in range(len(raw)):
                    await stream.write(raw[i : i + 1])
            else:
                await stream.write(raw)
            if path in self.close_after:
                return


@dataclass
class EndsKeptStream:
    """Answer the first request on each stream, then end the stream on the second, unanswered.

    Ending only once the second request has arrived makes the race deterministic: the client
    has already picked the kept stream and written to it, as when an agent's keep-alive timer
    fires while a request is on its way.
    """

    how: str  # "fin" or "rst"
    seen: list[tuple[int, str, str]] = field(default_factory=list)

    async def __call__(self, stream: Stream) -> None:
        buf = bytearray()
        for answered in (True, False):
            request = await read_request(stream, buf)
            if request is None:
                return
            self.seen.append((stream.id, request[0], request[1]))
            if answered:
                await stream.write(OK)
        if self.how == "rst":
            stream.reset()
        # returning makes the session's serve() send FIN (a no-op after a reset)


# -- rigs -------------------------------------------------------------------------------------


@dataclass
class Rig:
    client: AgentClient
    aggregator: Session  # opens `agent` streams, as the aggregator does
    agent: Session  # dialled in and serves them, as the agent does
    streams: list[Stream]  # agent-side streams, in the order they were opened

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        # A client that waits forever is a failure to report, not a suite to kill.
        async with asyncio.timeout(5):
            return await self.client.request(CLUSTER, method, path, body=body, headers=headers)

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)


class RigFactory(Protocol):
    async def __call__(
        self,
        target: web.Application | TargetHandler,
        *,
        max_body: int | None = None,
        idle_timeout: float = 30.0,
        keepalive_timeout: float = 75.0,
    ) -> Rig: ...


@pytest.fixture
async def make_rig(make_pair: PairFactory) -> AsyncIterator[RigFactory]:
    clients: list[AgentClient] = []
    servers: list[AppServer] = []

    async def factory(
        target: web.Application | TargetHandler,
        *,
        max_body: int | None = None,
        idle_timeout: float = 30.0,
        keepalive_timeout: float = 75.0,
    ) -> Rig:
        handler: TargetHandler
        if isinstance(target, web.Application):
            server = AppServer(target, keepalive_timeout=keepalive_timeout)
            await server.start()
            servers.append(server)
            handler = server.handle
        else:
            handler = target
        streams: list[Stream] = []

        async def recorded(stream: Stream) -> None:
            streams.append(stream)
            await handler(stream)

        agent, aggregator = await make_pair(client_targets={"agent": recorded})

        def lookup(cluster: str) -> Session | None:
            return aggregator if cluster == CLUSTER else None

        limit = {} if max_body is None else {"max_body": max_body}  # None: the client's default
        client = AgentClient(lookup, idle_timeout=idle_timeout, **limit)
        clients.append(client)
        return Rig(client, aggregator, agent, streams)

    yield factory
    for client in clients:
        client.close()
    for server in servers:
        await server.close()


async def rig_app(
    make_rig: RigFactory, *, idle_timeout: float = 30.0, keepalive_timeout: float = 75.0
) -> Rig:
    return await make_rig(
        agent_app(), idle_timeout=idle_timeout, keepalive_timeout=keepalive_timeout
    )


# -- against aiohttp's server, over both transports ------------------------------------------


async def test_get_returns_status_reason_lowercase_headers_and_body(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.get("/hello")
    assert (reply.status, reply.reason, reply.body) == (200, "OK", b"hello")
    assert reply.headers["x-probe-result"] == "Yes"
    assert reply.headers["content-length"] == "5"
    assert reply.headers["content-type"].startswith("text/plain")
    assert all(name == name.lower() for name in reply.headers)


async def test_reply_json_and_request_headers(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.request("GET", "/echo?x=1", headers={"X-Trace": "t-1"})
    seen = reply.json()
    assert seen["method"] == "GET" and seen["path"] == "/echo?x=1"
    assert seen["host"] == CLUSTER
    assert seen["user_agent"] == "kubeprober-aggregator"
    assert seen["x_trace"] == "t-1"
    # a GET without a body must not announce one
    assert seen["content_length"] is None
    assert (await rig.get("/small")).json() == {"ok": True, "path": "/small"}


async def test_an_app_already_started_elsewhere_is_refused() -> None:
    """An app another runner started is refused: AppServer would run its startup again."""
    app = toy_app()
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        with pytest.raises(ValueError, match="already started"):
            await AppServer(app).start()
    finally:
        await runner.cleanup()


async def test_five_gets_reuse_one_stream(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    for _ in range(5):
        reply = await rig.get("/small")
        assert reply.status == 200 and reply.json()["ok"] is True
    assert len(rig.streams) == 1
    assert rig.aggregator.num_streams == 1
    assert rig.client.idle_streams(CLUSTER) == 1


async def test_concurrent_gets_get_a_stream_each_then_reuse_them(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    for _ in range(2):
        replies = await asyncio.gather(*(rig.get("/small") for _ in range(10)))
        assert [r.status for r in replies] == [200] * 10
        assert all(r.json() == {"ok": True, "path": "/small"} for r in replies)
    # the second round found ten idle streams and opened none
    assert len({s.id for s in rig.streams}) == len(rig.streams) == 10
    assert rig.aggregator.num_streams == 10
    assert rig.client.idle_streams(CLUSTER) == 10


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_json_body_reaches_the_handler(make_rig: RigFactory, method: str) -> None:
    rig = await rig_app(make_rig)
    body = json.dumps({"probe": "dns", "n": [1, 2, 3]}).encode()
    reply = await rig.request(
        method, "/echo", body=body, headers={"Content-Type": "application/json"}
    )
    seen = reply.json()
    assert seen["method"] == method
    assert seen["body"] == body.decode()
    assert seen["content_length"] == len(body)
    assert seen["content_type"] == "application/json"
    # the body was consumed exactly: the stream carries the next request fine
    assert (await rig.get("/small")).status == 200
    assert len(rig.streams) == 1


async def test_empty_post_announces_zero_length(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    # Without Content-Length: 0 the server would wait for a body that never comes.
    reply = await rig.request("POST", "/echo")
    assert reply.json()["content_length"] == 0


async def test_large_upload_arrives_intact(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    body = BLOB[: 3 * 1024 * 1024]  # several windows: the write must wait for credit
    reply = await rig.request("POST", "/echo", body=body)
    seen = reply.json()
    assert seen["size"] == len(body)
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()


async def test_large_body_arrives_byte_exact(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.get("/blob")
    assert reply.headers["content-length"] == str(len(BLOB))
    assert len(reply.body) == len(BLOB)
    assert reply.body == BLOB
    big = await rig.get("/big?size=1000003")
    assert big.body == b"b" * 1000003
    assert len(rig.streams) == 1


async def test_chunked_answer_is_dechunked(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.get("/chunked")
    assert reply.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in reply.headers
    assert reply.body == b"".join(CHUNKS)
    # the terminating chunk was consumed: the stream is reused for the next request
    assert (await rig.get("/hello")).body == b"hello"
    assert len(rig.streams) == 1


@pytest.mark.parametrize("path", ["/close-header", "/force-close"])
async def test_connection_close_answer_is_read_and_not_kept(
    make_rig: RigFactory, path: str
) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.get(path)
    assert (reply.status, reply.body) == (200, b"bye")
    assert reply.headers["connection"].lower() == "close"
    assert rig.client.idle_streams(CLUSTER) == 0
    # both ends let go of the stream: nobody is left holding it open
    await wait_until(
        lambda: rig.aggregator.num_streams == rig.agent.num_streams == 0, 3, "stream closed"
    )
    assert rig.streams[0].state is StreamState.CLOSED
    assert (await rig.get("/hello")).body == b"hello"
    assert len(rig.streams) == 2


async def test_no_content_and_head_have_empty_bodies(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    empty = await rig.get("/no-content")
    assert (empty.status, empty.body) == (204, b"")
    head = await rig.request("HEAD", "/hello")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == "5"  # what a GET would carry, not sent
    # had either read a body, the next answer would come out garbled
    assert (await rig.get("/hello")).body == b"hello"
    assert len(rig.streams) == 1


async def test_not_found_is_a_reply_not_an_error(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    reply = await rig.get("/nope")
    assert (reply.status, reply.reason) == (404, "Not Found")
    assert rig.client.idle_streams(CLUSTER) == 1


async def test_cancelled_request_resets_its_stream(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await rig.get("/hang")
    assert rig.client.idle_streams(CLUSTER) == 0
    assert rig.aggregator.num_streams == 0  # reset locally, so already forgotten
    await wait_until(lambda: rig.streams[0].state is StreamState.RESET, 2, "the agent sees RST")
    reply = await rig.get("/small")
    assert reply.status == 200
    assert len(rig.streams) == 2


async def test_stream_closed_by_agent_keepalive_is_not_reused(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig, keepalive_timeout=0.1)
    assert (await rig.get("/small")).status == 200
    await wait_until(
        lambda: rig.streams[0].state is not StreamState.ESTABLISHED, 3, "aiohttp's idle close"
    )
    # the agent queued its FIN before this ping's answer: once back, the FIN has arrived
    await rig.aggregator.ping()
    # not idempotent, so it only succeeds because the closed stream was never written to
    reply = await rig.request("POST", "/echo", body=b"once")
    assert reply.json()["body"] == "once"
    assert len(rig.streams) == 2


async def test_idle_timeout_lets_old_streams_go(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig, idle_timeout=0.05)
    assert (await rig.get("/small")).status == 200
    await asyncio.sleep(0.1)
    assert (await rig.get("/small")).status == 200
    assert len(rig.streams) == 2
    assert rig.aggregator.num_streams == 1  # the expired one was reset, not leaked


async def test_close_resets_idle_streams(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    await asyncio.gather(*(rig.get("/small") for _ in range(3)))
    assert rig.client.idle_streams(CLUSTER) == 3
    rig.client.close()
    assert rig.client.idle_streams(CLUSTER) == 0
    await wait_until(
        lambda: rig.aggregator.num_streams == rig.agent.num_streams == 0, 2, "streams reset"
    )
    assert all(s.state is StreamState.RESET for s in rig.streams)
    # closing only drops what is idle; the client still works
    assert (await rig.get("/small")).status == 200


async def test_forget_resets_only_that_clusters_idle_streams(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    await rig.get("/small")
    rig.client.forget("mars")  # another cluster: nothing of moon's is touched
    assert rig.client.idle_streams(CLUSTER) == 1
    rig.client.forget(CLUSTER)
    assert rig.client.idle_streams(CLUSTER) == 0
    await wait_until(lambda: rig.aggregator.num_streams == 0, 2, "stream reset")


# -- not connected, unsafe requests -----------------------------------------------------------


@memory_only
async def test_unknown_cluster_fails_fast(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SessionClosed, match="not connected"):
        async with asyncio.timeout(1):
            await rig.client.get("mars", "/small")
    assert loop.time() - started < 0.1


@memory_only
async def test_closed_session_is_not_connected(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    assert (await rig.get("/small")).status == 200
    await rig.aggregator.close()
    with pytest.raises(SessionClosed, match="not connected"):
        await rig.get("/small")
    assert rig.client.idle_streams(CLUSTER) == 0


UNSAFE: list[tuple[str, str, str, dict[str, str], str]] = [
    (CLUSTER, "GET", "/x", {"X-A": "1\r\nX-Evil: 2"}, "printable"),
    (CLUSTER, "GET", "/x", {"X-A\r\nX-Evil": "2"}, "printable"),
    (CLUSTER, "GET", "/x\r\nX-Evil: 2", {}, "printable"),
    (CLUSTER, "GET", "/x\n", {}, "printable"),
    (CLUSTER, "GET\r\n", "/x", {}, "printable"),
    ("moon\r\nX-Evil: 2", "GET", "/x", {}, "printable"),  # the Host header
    (CLUSTER, "GET", "small", {}, "must start with /"),
    (CLUSTER, "GET", "", {}, "must start with /"),
    (CLUSTER, "GET", "/a b", {}, "no space"),
    (CLUSTER, "GE T", "/x", {}, "no space"),
    # framing headers are the client's: a caller's copy would be a second, conflicting one
    (CLUSTER, "POST", "/x", {"content-length": "5"}, "header content-length is set by"),
    (CLUSTER, "GET", "/x", {"HOST": "mars"}, "header host is set by"),
    (CLUSTER, "GET", "/x", {"Transfer-Encoding": "chunked"}, "header transfer-encoding"),
]


@memory_only
async def test_unsafe_request_fields_raise_before_sending(make_rig: RigFactory) -> None:
    # One rig for all cases: each test's setup costs more than all these requests together.
    agent = RawAgent({"/x": OK})
    rig = await make_rig(agent)
    wrong: list[str] = []
    for cluster, method, path, headers, match in UNSAFE:
        try:
            await rig.client.request(cluster, method, path, headers=headers)
        except ValueError as exc:
            if match not in str(exc):
                wrong.append(f"{method!r} {path!r} {headers!r}: {exc}")
        else:
            wrong.append(f"{method!r} {path!r} {headers!r}: sent")
    assert not wrong, wrong
    # A good request after them: anything they had sent would have reached the agent first.
    assert (await rig.client.request(CLUSTER, "GET", "/x")).status == 200
    assert [(method, path) for _, method, path in agent.seen] == [("GET", "/x")]
    assert len(rig.streams) == 1


def test_reply_json_rejects_a_body_that_is_not_json() -> None:
    with pytest.raises(ValueError):
        Reply(200, "OK", {}, b"<html>").json()


# -- malformed and unusual answers, from a raw agent ------------------------------------------

_TE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

MALFORMED: dict[str, tuple[bytes, str]] = {
    "status-line": (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "invalid status line"),
    "status-code": (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", "invalid status line"),
    "status-garbage": (b"hello there\r\n\r\n", "invalid status line"),
    "header-no-colon": (
        b"HTTP/1.1 200 OK\r\nX-Broken\r\nContent-Length: 0\r\n\r\n",
        "invalid header line 'X-Broken'",
    ),
    "header-folded": (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n X-B: 2\r\nContent-Length: 0\r\n\r\n",
        "invalid header line",
    ),
    "content-length-text": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
        "invalid Content-Length '2x'",
    ),
    "content-length-negative": (
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
        "invalid Content-Length",
    ),
    "content-length-conflict": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nok!",
        "conflicting Content-Length",
    ),
    "chunk-size": (_TE + b"zz\r\nok\r\n0\r\n\r\n", "invalid chunk size b'zz'"),
    "chunk-size-empty": (_TE + b"\r\nok\r\n0\r\n\r\n", "invalid chunk size"),
    "chunk-no-crlf": (_TE + b"2\r\nokXX0\r\n\r\n", "chunk not followed by CRLF"),
    "chunk-line-endless": (_TE + b"1;" + b"e" * 2000, "chunk size line longer than 1024"),
    "head-endless": (
        b"HTTP/1.1 200 OK\r\nX-Filler: " + b"f" * (70 * 1024),
        "response head longer than 65536",
    ),
    "content-length-over-max": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
        "body of 5000 bytes is larger than 1000",
    ),
    "chunked-over-max": (
        _TE + b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\nb\r\n0\r\n\r\n",
        "chunked body larger than 1000",
    ),
    "to-end-over-max": (b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 1500, "body larger than 1000"),
}


@memory_only
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_answer_raises_bad_response_then_client_recovers(
    make_rig: RigFactory, case: str
) -> None:
    raw, match = MALFORMED[case]
    # The agent keeps the stream open after its answer: the client must not wait for more.
    agent = RawAgent({"/bad": raw, "/ok": OK})
    rig = await make_rig(agent, max_body=1000)
    with pytest.raises(BadResponse, match=match):
        await rig.get("/bad")
    assert rig.client.idle_streams(CLUSTER) == 0
    assert rig.aggregator.num_streams == 0  # reset locally, so already forgotten
    reply = await rig.get("/ok")
    assert (reply.status, reply.body) == (200, b"ok")
    # the poisoned stream was reset, the good answer came on a fresh one
    assert [s for s, _, _ in agent.seen] == [rig.streams[0].id, rig.streams[1].id]
    assert rig.aggregator.num_streams == 1
    await wait_until(lambda: rig.streams[0].state is StreamState.RESET, 2, "the agent sees RST")


@memory_only
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_answer_over_the_default_limit_is_refused_at_once(
    make_rig: RigFactory, framing: str
) -> None:
    assert MAX_BODY == 8 * 1024 * 1024  # "a few MiB": docs/contracts.md says so
    over = MAX_BODY + 1
    raw = {
        # Only the head: the client must refuse on the announced size, not read (or wait) first.
        "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % over,
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % over,
    }[framing]
    rig = await make_rig(RawAgent({"/huge": raw, "/ok": OK}))
    with pytest.raises(BadResponse, match=f"larger than {MAX_BODY}"):
        async with asyncio.timeout(5):
            await rig.get("/huge")
    assert (await rig.get("/ok")).status == 200


@memory_only
async def test_body_without_length_is_read_to_the_end(make_rig: RigFactory) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, until FIN"
    agent = RawAgent({"/stream": raw, "/ok": OK}, close_after=frozenset({"/stream"}))
    rig = await make_rig(agent)
    reply = await rig.get("/stream")
    assert reply.body == b"all of it, until FIN"
    assert rig.client.idle_streams(CLUSTER) == 0
    await wait_until(
        lambda: rig.aggregator.num_streams == rig.agent.num_streams == 0, 2, "stream closed"
    )
    assert rig.streams[0].state is StreamState.CLOSED  # ended politely, not reset
    assert (await rig.get("/ok")).body == b"ok"
    assert len(rig.streams) == 2


@memory_only
async def test_http10_answer_is_not_kept(make_rig: RigFactory) -> None:
    agent = RawAgent({"/old": b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold", "/ok": OK})
    rig = await make_rig(agent)
    assert (await rig.get("/old")).body == b"old"
    assert rig.client.idle_streams(CLUSTER) == 0
    assert (await rig.get("/ok")).body == b"ok"
    assert len(rig.streams) == 2


@memory_only
async def test_interim_answers_are_skipped(make_rig: RigFactory) -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    )
    agent = RawAgent({"/slow": interim + OK, "/ok": OK})
    rig = await make_rig(agent)
    reply = await rig.get("/slow")
    assert (reply.status, reply.reason, reply.body) == (200, "OK", b"ok")
    assert "link" not in reply.headers  # the interim answer's headers are not the answer's
    assert (await rig.get("/ok")).body == b"ok"
    assert len(rig.streams) == 1


@memory_only
async def test_endless_interim_answers_are_refused(make_rig: RigFactory) -> None:
    agent = RawAgent({"/chatty": b"HTTP/1.1 102 Processing\r\n\r\n" * 20 + OK, "/ok": OK})
    rig = await make_rig(agent)
    with pytest.raises(BadResponse, match="more than 8 interim"):
        await rig.get("/chatty")
    assert (await rig.get("/ok")).body == b"ok"


@memory_only
async def test_callers_user_agent_replaces_the_default(make_rig: RigFactory) -> None:
    rig = await rig_app(make_rig)
    # spelled differently from the default: both would be sent, and the default read first
    reply = await rig.request("GET", "/echo", headers={"user-agent": "probe/1"})
    assert reply.json()["user_agent"] == "probe/1"


@memory_only
async def test_answer_trickled_one_byte_per_frame_is_parsed(make_rig: RigFactory) -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n9\r\nworld\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    agent = RawAgent({"/trickle": raw, "/ok": OK}, trickle=True)
    rig = await make_rig(agent)
    reply = await rig.get("/trickle")
    assert reply.headers["x-a"] == "1"
    assert reply.body == b"hello world\r\n\r\n"
    assert "x-trailer" not in reply.headers
    # the trailer and its blank line were consumed, so the stream is reusable
    assert (await rig.get("/ok")).body == b"ok"
    assert len(rig.streams) == 1


@memory_only
async def test_kept_stream_with_unread_bytes_is_not_reused(make_rig: RigFactory) -> None:
    # Bytes past the answer mean the framing disagrees: the stream must not carry another one.
    agent = RawAgent({"/extra": OK + b"HTTP/1.1 200 OK\r\n", "/ok": OK})
    rig = await make_rig(agent)
    assert (await rig.get("/extra")).body == b"ok"
    assert (await rig.get("/ok")).body == b"ok"
    assert [s for s, _, _ in agent.seen] == [rig.streams[0].id, rig.streams[1].id]
    await wait_until(lambda: rig.streams[0].state is StreamState.RESET, 2, "the agent sees RST")


# -- retries ----------------------------------------------------------------------------------


@memory_only
@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_get_on_a_kept_stream_the_agent_ended_is_retried(
    make_rig: RigFactory, how: str
) -> None:
    agent = EndsKeptStream(how)
    rig = await make_rig(agent)
    assert (await rig.get("/a")).body == b"ok"
    reply = await rig.get("/b")
    assert reply.body == b"ok"
    first, second = (s.id for s in rig.streams)
    assert agent.seen == [(first, "GET", "/a"), (first, "GET", "/b"), (second, "GET", "/b")]
    assert rig.client.idle_streams(CLUSTER) == 1
    await wait_until(lambda: rig.aggregator.num_streams == 1, 2, "the ended stream let go")


@memory_only
@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_post_on_a_kept_stream_the_agent_ended_is_not_retried(
    make_rig: RigFactory, how: str
) -> None:
    agent = EndsKeptStream(how)
    rig = await make_rig(agent)
    assert (await rig.get("/a")).body == b"ok"
    with pytest.raises(TunnelError) as info:
        await rig.request("POST", "/b", body=b"{}")
    assert isinstance(info.value, StreamReset)
    if how == "fin":
        assert "before its answer ended" in str(info.value)
    # the agent may have acted on it: sending it again could do it twice
    assert agent.seen == [(rig.streams[0].id, "GET", "/a"), (rig.streams[0].id, "POST", "/b")]
    assert rig.client.idle_streams(CLUSTER) == 0
    assert rig.aggregator.num_streams == 0
    assert (await rig.get("/c")).body == b"ok"
    assert len(rig.streams) == 2


@memory_only
async def test_fresh_stream_ended_early_is_not_retried(make_rig: RigFactory) -> None:
    agent = RawAgent({"/gone": None, "/half": OK[:-1]}, close_after=frozenset({"/half"}))
    rig = await make_rig(agent)
    with pytest.raises(StreamReset, match="before its answer ended"):
        await rig.get("/gone")
    with pytest.raises(StreamReset, match="before its answer ended"):
        await rig.get("/half")
    # a stream just opened cannot have been closed by a keep-alive timer: no second try
    assert [p for _, _, p in agent.seen] == ["/gone", "/half"]
    assert rig.client.idle_streams(CLUSTER) == 0
    assert rig.aggregator.num_streams == 0  # the ended streams are let go, not left half open


@memory_only
async def test_kept_stream_the_agent_ended_while_idle_is_skipped(make_rig: RigFactory) -> None:
    agent = RawAgent({"/ok": OK, "/bye": OK}, close_after=frozenset({"/bye"}))
    rig = await make_rig(agent)
    assert (await rig.get("/bye")).body == b"ok"
    assert rig.client.idle_streams(CLUSTER) == 1  # keep-alive answer: kept, then FIN
    await wait_until(lambda: rig.streams[0].state is StreamState.LOCAL_CLOSE, 2, "agent's FIN")
    await rig.aggregator.ping()  # the FIN was queued before the ping's answer
    # not idempotent, so it only succeeds because the ended stream was never written to
    assert (await rig.request("POST", "/ok", body=b"x")).body == b"ok"
    assert [(s, m) for s, m, _ in agent.seen] == [
        (rig.streams[0].id, "GET"),
        (rig.streams[1].id, "POST"),
    ]
    await wait_until(lambda: rig.agent.num_streams == 1, 2, "the ended stream let go")


# -- regressions: answers an earlier version accepted -----------------------------------------


@memory_only
async def test_status_code_of_non_ascii_digits_is_bad_response(make_rig: RigFactory) -> None:
    # b"\xb2" is "²" in Latin-1: str.isdigit() says yes, int() says no.
    raw = b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n"
    rig = await make_rig(RawAgent({"/bad": raw}))
    with pytest.raises(BadResponse, match="invalid status line"):
        await rig.get("/bad")


SIZES = [b"-7", b"+5", b"0x5", b"0_5"]


@memory_only
async def test_chunk_size_must_be_hex_digits_only(make_rig: RigFactory) -> None:
    # int(text, 16) also takes a sign, a 0x prefix and underscores; "-7" with five bytes of
    # data reads as "hello", so the framing silently goes wrong.
    routes = {f"/{i}": _TE + size + b"\r\nhello\r\n0\r\n\r\n" for i, size in enumerate(SIZES)}
    rig = await make_rig(RawAgent(routes))
    accepted: list[str] = []
    for path, size in zip(routes, SIZES, strict=True):
        try:
            reply = await rig.get(path)
        except BadResponse as exc:
            assert "invalid chunk size" in str(exc)
        else:
            accepted.append(f"chunk size {size!r} read as body {reply.body!r}")
    assert not accepted, accepted


@memory_only
async def test_head_over_the_limit_is_refused_even_when_it_ends(make_rig: RigFactory) -> None:
    # MAX_HEAD is what the client accepts; arriving in one frame must not lift it.
    filler = b"X-Filler: " + b"f" * (100 * 1024)
    raw = b"HTTP/1.1 200 OK\r\n" + filler + b"\r\nContent-Length: 2\r\n\r\nok"
    rig = await make_rig(RawAgent({"/bad": raw}))
    with pytest.raises(BadResponse, match="response head longer than 65536"):
        await rig.get("/bad")
