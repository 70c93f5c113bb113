"""Shutdown help of the harness's loops: nothing left open when a loop stops."""

from __future__ import annotations

import asyncio
import socket

from tests.harness.netutil import wind_down


def test_wind_down_closes_connections_no_one_kept() -> None:
    """A connection whose owner dropped it unclosed (a request cancelled mid-connect) is closed."""

    async def forget_a_connection() -> socket.socket:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
        sock: socket.socket = transport.get_extra_info("socket")
        del transport  # only the loop knows the connection now
        waiter = asyncio.create_task(asyncio.sleep(3600))  # left running, as a handler would be
        await wind_down()
        server.close()
        await server.wait_closed()
        assert waiter.cancelled()
        return sock

    assert asyncio.run(forget_a_connection()).fileno() == -1
