"""Shutdown help shared by the harness's servers and proxies.

A TLS connection whose client never answers close_notify keeps its socket open for the SSL
shutdown timeout; the harness stops its loops sooner, so it aborts what is left instead,
which ``filterwarnings = error`` would otherwise report as an unclosed transport.
"""

from __future__ import annotations

import asyncio

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


async def cancel_other_tasks() -> None:
    """Cancel and await every other task of this loop, as ``asyncio.run`` does on exit.

    A harness loop is stopped and closed right after; a handler task still pending then
    would be destroyed later, and asyncio would blame whichever test the collector ran in.
    """
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
