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


async def wind_down() -> None:
    """Leave this loop with no task and no socket, ready to be stopped and closed.

    Cancel and await every other task, as ``asyncio.run`` does on exit: a handler task still
    pending then would be destroyed later, and asyncio would blame whichever test the
    collector ran in. Then abort every transport still open. Some are known to nobody by now:
    an upstream connection whose request was cancelled between its TLS handshake and its
    hand-over to the client pool, or one still in a polite TLS shutdown. A real kube-apiserver
    answers close_notify quickly enough to land in that gap now and then.
    """
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    # asyncio has no public list of a loop's transports; its selector loop keeps one (fd ->
    # transport) to refuse a second transport on the same socket.
    open_transports = getattr(asyncio.get_running_loop(), "_transports", {})
    for transport in list(open_transports.values()):
        transport.abort()
    # abort() closes the socket in a callback scheduled at once: one turn of the loop runs it.
    await asyncio.sleep(0)
