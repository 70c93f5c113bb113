"""``/api/v1/clusters/{cluster}/kube/…``: an operator's Kubernetes API requests, passed to that
cluster's agent on a `kube-api` tunnel stream, the answer streamed back as it comes.

Exists so plain kubectl works against a managed cluster through the aggregator
(``kubeprober kubeconfig``) while the aggregator holds no credential for it: the agent makes
the request as its ``kubeprober-api-proxy`` ServiceAccount and decides what passes
(exporter/api_proxy.py). The guard (auth.py) lets only named operator tokens in; this module
names the operator to the agent and writes the audit line. One request per stream, sent as
HTTP/1.0 so the agent frames the answer by Content-Length or by the end of the stream, and a
watch flows through as its events arrive. Must not interpret the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from kubeprober.aggregator import auth
from kubeprober.aggregator.kube import FORWARDED, Holder, HolderFailed
from kubeprober.aggregator.state import Aggregator
from kubeprober.http_server import BodyRefused, last_answer, read_body
from kubeprober.kube.passthrough import status_answer
from kubeprober.tunnel import TunnelError
from kubeprober.tunnel.errors import TargetRefused
from kubeprober.tunnel.http.client import MAX_HEAD, BadResponse, Connection, parse_head
from kubeprober.tunnel.opening import OpenCode
from kubeprober.tunnel.stream import Stream

TARGET = "kube-api"
OPERATOR_HEADER = "X-Kubeprober-Operator"
ROUTE = "/api/v1/clusters/{cluster}/kube/{tail:.*}"
# request headers passed to the agent; the operator's Authorization never leaves here
_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
_ANSWER_HEADERS = ("content-type", "content-encoding", "warning", "audit-id", "cache-control")
# bytes of request body accepted (the API server's own limit is 3 MiB)
MAX_REQUEST_BODY = 3 * 1024 * 1024
# seconds for the agent to answer with a head (it waits for the API server's, 60 s at most)
HEAD_TIMEOUT = 75.0
READ_SIZE = 256 * 1024


def _encode(cluster: str, operator: str, request: web.Request, path: str, body: bytes) -> bytes:
    fields = {"Host": cluster, OPERATOR_HEADER: operator}
    fields.update({n: request.headers[n] for n in _REQUEST_HEADERS if n in request.headers})
    if body:
        fields["Content-Length"] = str(len(body))
    for text in (path, *fields.values()):
        # aiohttp refuses CR and LF in what it parsed; this keeps the request's framing ours
        if not (text.isascii() and text.isprintable()) or " " in path:
            raise ValueError(f"request field not printable ASCII: {text[:80]!r}")
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{request.method} {path} HTTP/1.0\r\n{head}\r\n".encode() + body


@dataclass(slots=True)
class _Outcome:
    """What the audit line reports, whatever way the request ends."""

    code: int = 0
    size: int = 0

    def refuse(self, code: int, reason: str, message: str) -> web.Response:
        self.code = code
        return status_answer(code, reason, message)


def handler(agg: Aggregator) -> Handler:
    """The route's handler: pass one request to the cluster's agent, stream the answer back,
    write the audit line."""

    async def proxy(request: web.Request) -> web.StreamResponse:
        cluster = request.match_info["cluster"]
        operator = request[auth.OPERATOR]
        started = time.monotonic()
        outcome = _Outcome()
        try:
            return await _proxy(agg, request, cluster, operator, outcome)
        finally:
            watching = "watch=true" in request.query_string.split("&")
            auth.log.info(
                "api-proxy operator=%s cluster=%s verb=%s path=%s code=%d bytes=%d seconds=%.3f",
                operator,
                cluster,
                "WATCH" if watching and request.method == "GET" else request.method,
                request.path.removeprefix(f"/api/v1/clusters/{cluster}/kube"),
                outcome.code,
                outcome.size,
                time.monotonic() - started,
            )

    return proxy


async def _proxy(
    agg: Aggregator, request: web.Request, cluster: str, operator: str, outcome: _Outcome
) -> web.StreamResponse:
    prefix = f"/api/v1/clusters/{cluster}/kube/"
    if cluster not in agg.views or not request.raw_path.startswith(prefix):
        return outcome.refuse(404, "NotFound", f"no cluster {cluster}")
    path = request.raw_path[len(prefix) - 1 :]
    session = agg.tunnel.session(cluster)
    holder: Holder | None = None
    if session is None and agg.kube is not None and not request.headers.get(FORWARDED):
        holder = agg.kube.peers.holder(cluster)  # its tunnel is on another replica
    if session is None and holder is None:
        return outcome.refuse(503, "ServiceUnavailable", f"cluster {cluster} is not connected")
    try:
        body = await read_body(request, MAX_REQUEST_BODY)
    except BodyRefused as exc:
        answer = (
            outcome.refuse(413, "RequestEntityTooLarge", "request body larger than 3 MiB")
            if exc.status == 413
            else outcome.refuse(408, "Timeout", exc.text)
        )
        return await last_answer(request, answer)
    if session is None:
        assert holder is not None
        return await _on_holder(agg, request, holder, body, outcome)
    try:
        wire = _encode(cluster, operator, request, path, body)
    except ValueError as exc:
        return outcome.refuse(400, "BadRequest", str(exc))
    try:
        stream = await session.open(TARGET)
    except TargetRefused as exc:
        if exc.code == OpenCode.UNKNOWN_TARGET:
            text = f"the agent of cluster {cluster} runs without --accept-api-proxy"
        else:
            text = f"the agent of cluster {cluster} refused: {exc.text}"
        return outcome.refuse(403, "Forbidden", text)
    except TunnelError as exc:
        return outcome.refuse(502, "InternalError", f"cluster {cluster}: {exc}")
    try:
        return await _relay(request, stream, wire, cluster, outcome)
    finally:
        # Nothing is left to say on it. A client that leaves a quiet watch cancels this
        # handler (the aggregator's server runs with handler_cancellation), so the agent's
        # end of that watch is reset here too.
        stream.reset()


async def _on_holder(
    agg: Aggregator, request: web.Request, holder: Holder, body: bytes, outcome: _Outcome
) -> web.StreamResponse:
    """Pass the request, with the operator's token, to the replica holding the cluster's
    tunnel, and stream its answer back as it comes (a watch's events too); 502 if it gives
    no head within what its own agent is allowed (:data:`HEAD_TIMEOUT`) and a margin."""
    assert agg.kube is not None
    names = ("Authorization", *_REQUEST_HEADERS)
    try:
        async with agg.kube.peers.open_on_holder(
            holder,
            request.match_info["cluster"],
            method=request.method,
            path=request.raw_path,
            headers={n: request.headers[n] for n in names if n in request.headers},
            body=body,
            within=HEAD_TIMEOUT,
        ) as reply:
            outcome.code = reply.status
            answer = web.StreamResponse(
                status=reply.status,
                reason=reply.reason,
                headers={n: reply.headers[n] for n in _ANSWER_HEADERS if n in reply.headers},
            )
            if reply.content_length is not None:
                answer.content_length = reply.content_length
            await answer.prepare(request)
            try:
                async for chunk in reply.content.iter_any():
                    await answer.write(chunk)
                    outcome.size += len(chunk)
                await answer.write_eof()
            except (aiohttp.ClientError, ConnectionError):
                pass  # either end went away: the client's answer is cut
            return answer
    except HolderFailed as exc:
        return outcome.refuse(502, "InternalError", str(exc))


async def _relay(
    request: web.Request, stream: Stream, wire: bytes, cluster: str, outcome: _Outcome
) -> web.StreamResponse:
    conn = Connection(stream)
    try:
        async with asyncio.timeout(HEAD_TIMEOUT):
            await stream.write(wire)
            _, code, reason, headers = parse_head(
                await conn.read_until(b"\r\n\r\n", MAX_HEAD, "response head")
            )
    except (TunnelError, TimeoutError) as exc:
        return outcome.refuse(502, "InternalError", f"cluster {cluster}: {exc or 'no answer'}")
    outcome.code = code
    answer = web.StreamResponse(
        status=code,
        reason=reason,
        headers={name: headers[name] for name in _ANSWER_HEADERS if name in headers},
    )
    length = int(headers["content-length"]) if "content-length" in headers else None
    if length is not None:
        answer.content_length = length
    await answer.prepare(request)
    await _pump(stream, conn, answer, length, outcome)
    return answer


async def _pump(
    stream: Stream,
    conn: Connection,
    answer: web.StreamResponse,
    length: int | None,
    outcome: _Outcome,
) -> None:
    """Copy the body (``length`` bytes, or up to the end of the stream) to the client."""
    try:
        left = length if length is not None else -1
        if conn.buf:
            chunk = bytes(conn.buf[: left if left >= 0 else None])
            conn.buf.clear()
            await answer.write(chunk)
            outcome.size += len(chunk)
            left -= len(chunk) if left >= 0 else 0
        while left != 0:
            chunk = await stream.read(READ_SIZE if left < 0 else min(left, READ_SIZE))
            if not chunk:
                break
            await answer.write(chunk)
            outcome.size += len(chunk)
            left -= len(chunk) if left >= 0 else 0
        await answer.write_eof()
    except (TunnelError, BadResponse, ConnectionError):
        pass  # either end went away: the stream is reset and the client's answer cut
