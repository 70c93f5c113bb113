"""What a prober is: the contract built-in and third-party probers share.

A prober is a module with ``DESCRIPTION`` (one line), ``Spec`` (a frozen dataclass of its
``with:`` options, fields made with :func:`kubeprober.probers.options.option`) and
``async def probe(spec, ctx) -> Outcome``. Probers only do I/O: the runner owns the hard
deadline, timing, metrics and turning exceptions into UNKNOWN. A prober reports a broken
target by returning an ERROR outcome or raising :class:`CheckFailed`; its own I/O timeout
against the target (``ctx.timeout``) is ERROR too. Anything else it raises means the prober
itself is broken, and the check ends UNKNOWN.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubeprober.probers.status import Status


class CheckFailed(Exception):
    """Raise from a prober to end the check with ``status`` (ERROR by default) and a message."""

    def __init__(self, message: str, status: Status = Status.ERROR) -> None:
        super().__init__(message)
        self.status = status


def trusting(ca_file: str | None) -> ssl.SSLContext:
    """Return a verifying TLS client context trusting the system's CAs and ``ca_file``.

    A CA file that cannot be loaded is the probe's configuration at fault, not the target:
    raise CheckFailed with UNKNOWN and say which file and why, in one line.
    """
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            raise CheckFailed(
                f"caFile {ca_file}: no PEM certificate in it", Status.UNKNOWN
            ) from None
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise CheckFailed(f"caFile {ca_file}: {reason}", Status.UNKNOWN) from None
    return context


def read_secret(path: str, option: str) -> str:
    """Return the first line of a mounted secret file (a password); UNKNOWN if unreadable.

    An unreadable file is the probe's configuration at fault, not the target.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckFailed(f"{option} {path}: {why.lower()}", Status.UNKNOWN) from None


def reason(exc: BaseException) -> str:
    """Say why I/O failed in the plain words people search for ("Connection refused").

    asyncio's and aiohttp's wrappers repeat the address; the OS's and OpenSSL's words do not.
    """
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)  # its errno is OpenSSL's, not the OS's
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Outcome:
    """What a prober found. Every status but PASS carries a message saying why."""

    status: Status
    message: str = ""

    @classmethod
    def passed(cls, message: str = "") -> Outcome:
        """The target works."""
        return cls(Status.PASS, message)

    @classmethod
    def warn(cls, message: str) -> Outcome:
        """The target works but needs attention soon."""
        return cls(Status.WARN, message)

    @classmethod
    def error(cls, message: str) -> Outcome:
        """The target is broken."""
        return cls(Status.ERROR, message)


@dataclass
class Context:
    """Everything a prober gets besides its spec. Owned by the one task running the check."""

    namespace: str
    probe: str
    check: str
    timeout: float
    """Seconds the prober may spend on I/O; the runner's hard deadline comes a little later."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kubeprober.probe"))
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase (``connect``, ``tls``, ``request`` ...), filled by :meth:`phase`."""
    certificates: dict[str, float] = field(default_factory=dict)
    """Certificate expiry (unix seconds) per target, exported as a metric."""
    kube: Any = None
    """The Kubernetes API (get/list/create/patch/delete/watch) when the agent runs in a cluster."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as phase ``name`` (time adds up if entered twice)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start

    def record_certificate(self, target: str, not_after: float) -> None:
        """Report that ``target``'s certificate expires at unix time ``not_after``."""
        self.certificates[target] = not_after


# The one signature every prober implements: ``async def probe(spec, ctx) -> Outcome``.
ProbeFunction = Callable[[Any, Context], Awaitable[Outcome]]
