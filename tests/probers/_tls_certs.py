"""Certificates and loopback TLS servers for the ``http`` and ``tls`` prober tests.

Certificates come from ``trustme`` CAs, so no test depends on the machine's trust store or on
real expiry dates: each test issues exactly the certificate it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import trustme

DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    """Return the current time, UTC, as certificates count it."""
    return datetime.datetime.now(datetime.UTC)


def issue(
    ca: trustme.CA,
    *names: str,
    valid_for: datetime.timedelta = 100 * DAY,
    age: datetime.timedelta = DAY,
) -> tuple[trustme.LeafCert, float]:
    """Issue a leaf certificate for ``names``; return it with its notAfter in unix seconds."""
    # X.509 keeps whole seconds: round so tests can compare expiries exactly.
    not_after = (now() + valid_for).replace(microsecond=0)
    cert = ca.issue_cert(*names, not_before=now() - age, not_after=not_after)
    return cert, not_after.timestamp()


def write_ca(ca: trustme.CA, directory: Path) -> str:
    """Write ``ca``'s certificate as a PEM file, for a ``caFile`` option."""
    path = directory / f"ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    """Return a server-side TLS context presenting ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext | None, *, banner: bytes = b"") -> AsyncIterator[int]:
    """Serve on 127.0.0.1 (TLS with ``context``, else plain TCP sending ``banner``); yield the port.

    Plain TCP without a banner is a hung endpoint: it accepts and never says a word. Each
    connection is held until the client leaves, then closed, so no socket outlives the block.
    """
    writers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[object]] = set()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        writer.write(banner)
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        # Closing a writer ends its reader's read(); wait so no handler outlives the server.
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        await server.wait_closed()
