"""Shutdown help shared by the harness's servers and proxies.

A TLS connection whose client never answers close_notify keeps its socket open for the SSL
shutdown timeout; the harness stops its loops sooner, so it aborts what is left instead,
which ``filterwarnings = error`` would otherwise report as an unclosed transport.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


def abort_connections(runner: web.BaseRunner) -> int:
    """Abort every connection the runner's server holds; return how many.

    Also those whose client has gone while their handler still runs (a watch being
    forwarded): the handler has dropped its transport by then, but aiohttp's server keeps it
    until the handler ends, and under TLS it is still waiting for a close_notify.
    """
    server = runner.server
    kept = getattr(server, "_connections", None)  # handler -> transport (aiohttp >= 3.10)
    if isinstance(kept, dict):
        transports = list(kept.values())
    else:
        handlers = list(getattr(server, "connections", None) or [])
        transports = [t for h in handlers if (t := getattr(h, "transport", None)) is not None]
    for transport in transports:
        transport.abort()
    return len(transports)


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
