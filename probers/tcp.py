"""The ``tcp`` prober: prove a port accepts connections and, optionally, speaks the right protocol.

Most middleware outages (a database that stopped listening, a Service whose endpoints are gone,
a firewall that drops packets) show up first as a TCP connect that is refused or hangs. This
prober connects, optionally upgrades to TLS, sends a line and checks the banner that comes back,
so "port open" can be tightened to "the server answers like Redis" without a dedicated prober.
It only does I/O: certificate expiry belongs to the ``tls`` prober.

``with:`` options:

- ``host``, ``port``: the target (a name is resolved by the agent's resolver).
- ``send``: text written after connecting (and after the TLS handshake), e.g. ``"PING\\r\\n"``.
- ``expect``: a regular expression searched in what the server sends first; reading stops at
  the first match, at end of stream or at the timeout (at most 64 KiB is read).
- ``tls``: do a TLS handshake verified against the system CAs and ``caFile`` when given;
  ``serverName`` overrides the name checked in the certificate (default: ``host``).

A refused connection, a timeout, a failed handshake or a banner that does not match is ERROR.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import Context, Outcome, trusting

DESCRIPTION = "Connect to a TCP port, optionally over TLS, and check what the server says."

# Banners are short; a server streaming without end must not fill the agent's memory.
_READ_LIMIT = 64 * 1024
# A clean close (FIN, TLS close_notify) is polite but must not hold a finished check.
_CLOSE_GRACE = 1.0


@dataclass(frozen=True)
class Spec:
    """Options of the ``tcp`` prober."""

    host: str = option("host name or IP address to connect to")
    port: int = option("TCP port", minimum=1, maximum=65535)
    send: str | None = option("text to send once connected (UTF-8)", default=None)
    expect: str | None = option(
        "regular expression searched in the first bytes the server sends", default=None
    )
    tls: bool = option("do a TLS handshake after connecting", default=False)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )
    server_name: str | None = option(
        "name sent as SNI and checked against the certificate; default host", default=None
    )

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise SpecError("host", f"expected a host name or IP address, got {shown(self.host)}")
        if self.expect is not None:
            try:
                re.compile(self.expect)
            except re.error as exc:
                msg = f"expected a regular expression, got {shown(self.expect)} ({exc})"
                raise SpecError("expect", msg) from None
        for key, value in (("caFile", self.ca_file), ("serverName", self.server_name)):
            if value is not None and not self.tls:
                raise SpecError(key, f"{shown(value)} given but tls is false; add tls: true")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Connect to the target, exchange what the spec asks and judge the reply."""
    target = _target(spec.host, spec.port)
    tls = trusting(spec.ca_file) if spec.tls else None
    step = f"connecting to {target}"
    writer: asyncio.StreamWriter | None = None
    received = bytearray()  # kept here so a timeout can say what did arrive
    try:
        async with asyncio.timeout(ctx.timeout):
            with ctx.phase("connect"):
                reader, writer = await asyncio.open_connection(spec.host, spec.port)
            if tls is not None:
                step = f"in the TLS handshake with {target}"
                with ctx.phase("tls"):
                    await writer.start_tls(tls, server_hostname=spec.server_name or spec.host)
            if spec.send is None and spec.expect is None:
                return Outcome.passed(f"connected to {target}")
            with ctx.phase("request"):
                if spec.send is not None:
                    step = f"sending to {target}"
                    writer.write(spec.send.encode())
                    await writer.drain()
                if spec.expect is None:
                    return Outcome.passed(
                        f"connected to {target} and sent {len(spec.send or '')} chars"
                    )
                step = f"waiting for {shown(spec.expect)} from {target}"
                return await _expect(reader, re.compile(spec.expect), target, received)
    except TimeoutError:
        got = ""
        if spec.expect is not None and step.startswith("waiting"):
            got = f"; got {_show(received)}" if received else "; got nothing"
        return Outcome.error(f"timed out after {ctx.timeout:g}s {step}{got}")
    except ConnectionRefusedError:
        return Outcome.error(f"connection refused by {target}")
    except ssl.SSLCertVerificationError as exc:
        return Outcome.error(f"TLS certificate of {target} rejected: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Outcome.error(f"TLS handshake with {target} failed: {exc.reason or exc}")
    except OSError as exc:  # unreachable network, reset, unresolvable name ...
        return Outcome.error(f"{step}: {exc.strerror or exc}")
    finally:
        if writer is not None:
            await _close(writer)


async def _expect(
    reader: asyncio.StreamReader, pattern: re.Pattern[str], target: str, received: bytearray
) -> Outcome:
    """Read into ``received`` until ``pattern`` matches, the stream ends or the limit is hit."""
    while True:
        chunk = await reader.read(4096)
        received += chunk
        if pattern.search(received.decode(errors="replace")):
            return Outcome.passed(f"{target} answered {_show(received)}")
        want = shown(pattern.pattern)
        if not chunk:
            got = _show(received) if received else "nothing"
            return Outcome.error(f"{target} answered {got} and closed, expected {want}")
        if len(received) >= _READ_LIMIT:
            return Outcome.error(
                f"{target} sent {len(received)} bytes without matching {want}: {_show(received)}"
            )


def _show(data: bytearray) -> str:
    """Render received bytes for a message: decoded, quoted, escaped and shortened."""
    return shown(data.decode(errors="replace"))


def _target(host: str, port: int) -> str:
    """Render ``host:port`` as people write it, bracketing IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the connection cleanly if the peer lets us, else drop it."""
    if writer.transport.is_closing():  # e.g. a failed TLS handshake already closed it
        writer.transport.abort()
        return
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()
    except BaseException:  # cancelled while closing: never leave the socket open
        writer.transport.abort()
        raise
