"""A small web app on loopback for the ``http`` prober tests: status codes, JSON, redirects,
slow answers and a shop that wants a login (cookie and bearer token) before it lists orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

USER, PASSWORD = "alice", "wonderland"
SESSION, TOKEN, REQUEST_ID, CSRF = "s3ss10n", "t0k3n", "r-42", "c-99"
DOCUMENT = {"status": "ok", "data": {"items": [{"name": "x", "count": 2, "ready": True}]}}


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code} from the test app")


async def text(request: web.Request) -> web.Response:
    return web.Response(text="hello kubeprober\n")


async def document(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


async def redirect(request: web.Request) -> web.Response:
    left = int(request.match_info["left"])
    if left == 0:
        return web.Response(text="landed")
    raise web.HTTPFound(f"/redirect/{left - 1}")


async def echo(request: web.Request) -> web.Response:
    body = await request.text()
    parsed = await request.json() if request.content_type == "application/json" else None
    return web.json_response(
        {"method": request.method, "headers": dict(request.headers), "body": body, "json": parsed}
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="too late")


async def slow_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 100
    await response.prepare(request)
    await response.write(b"a start...")
    await asyncio.sleep(30)
    return response


async def login(request: web.Request) -> web.Response:
    credentials = await request.json()
    if credentials != {"user": USER, "password": PASSWORD}:
        return web.json_response({"error": "bad credentials"}, status=401)
    response = web.json_response({"token": TOKEN, "user": {"id": 7}})
    response.set_cookie("session", SESSION)
    response.headers["X-Request-Id"] = REQUEST_ID
    return response


async def orders(request: web.Request) -> web.Response:
    if request.cookies.get("session") != SESSION:
        return web.json_response({"error": "no session cookie"}, status=401)
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response({"error": "bad bearer token"}, status=401)
    return web.json_response({"orders": [{"id": 1, "item": "tea"}]})


async def trace(request: web.Request) -> web.Response:
    return web.json_response({"rid": request.match_info["rid"]})


async def form(request: web.Request) -> web.Response:
    page = f'<form><input type="hidden" name="csrf" value="{CSRF}"></form>'
    return web.Response(text=page, content_type="text/html")


async def submit(request: web.Request) -> web.Response:
    if request.headers.get("X-CSRF") != CSRF:
        return web.Response(status=403, text="csrf token missing")
    return web.Response(text="submitted")


def make_app() -> web.Application:
    """Build the test app."""
    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/text", text)
    app.router.add_get("/json", document)
    app.router.add_get("/redirect/{left}", redirect)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_post("/login", login)
    app.router.add_get("/orders", orders)
    app.router.add_get("/trace/{rid}", trace)
    app.router.add_get("/form", form)
    app.router.add_post("/submit", submit)
    return app


@dataclass(frozen=True)
class Served:
    """Base URLs of the running app, plain and over TLS."""

    http: str
    https: str
    https_port: int


@contextlib.asynccontextmanager
async def serve(tls: ssl.SSLContext) -> AsyncIterator[Served]:
    """Run the app on 127.0.0.1, plain and with ``tls``, on free ports."""
    # handler_cancellation ends a slow handler when the prober gives up, so cleanup is quick.
    runner = web.AppRunner(make_app(), handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    try:
        plain, secure = _listener(), _listener()
        await web.SockSite(runner, plain).start()
        await web.SockSite(runner, secure, ssl_context=tls).start()
        http_port, https_port = plain.getsockname()[1], secure.getsockname()[1]
        yield Served(f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}", https_port)
    finally:
        await runner.cleanup()


def _listener() -> socket.socket:
    # Bound here rather than by the site, so the port is known without private attributes.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
