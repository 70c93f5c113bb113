"""A tiny shop API for examples/middleware.yaml: log in for a token, then list orders with it.

Run: python examples/shop_app.py PORT CERT KEY  (HTTPS on 127.0.0.1; aiohttp comes with
kubeprober). POST /api/login takes {"user": "kubeprober", "password": "not-a-real-password"}
and answers {"data": {"token": ...}}; GET /api/orders wants "Authorization: Bearer TOKEN".
"""

from __future__ import annotations

import secrets
import ssl
import sys

from aiohttp import web

USER, PASSWORD = "kubeprober", "not-a-real-password"
TOKENS = web.AppKey("tokens", set[str])


async def login(request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("user") != USER or body.get("password") != PASSWORD:
        return web.json_response({"status": "denied"}, status=401)
    token = secrets.token_hex(16)
    request.app[TOKENS].add(token)
    return web.json_response({"status": "ok", "data": {"token": token}})


async def orders(request: web.Request) -> web.Response:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token not in request.app[TOKENS]:
        return web.json_response({"status": "log in first"}, status=401)
    return web.json_response({"status": "ok", "data": {"orders": [{"id": 1, "item": "tea"}]}})


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app[TOKENS] = set()
    app.router.add_post("/api/login", login)
    app.router.add_get("/api/orders", orders)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
