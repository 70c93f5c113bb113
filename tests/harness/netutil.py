"""Shutdown help shared by the harness's aiohttp servers.

A TLS connection whose client never answers close_notify keeps its socket open for the SSL
shutdown timeout; the harness stops its loops sooner, so it aborts what is left instead,
which ``filterwarnings = error`` would otherwise report as an unclosed transport.
"""

from __future__ import annotations

from aiohttp import web


def abort_connections(runner: web.BaseRunner) -> int:
    """Abort every connection the runner's server holds; return how many."""
    server = runner.server
    conns = list(getattr(server, "connections", None) or [])
    for proto in conns:
        transport = getattr(proto, "transport", None)
        if transport is not None:
            transport.abort()
    return len(conns)
