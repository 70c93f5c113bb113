"""What a prober is: the contract built-in and third-party probers share.

A prober is a module with ``DESCRIPTION`` (one line), ``Spec`` (a frozen dataclass of its
``with:`` options, fields made with :func:`kubeprober.probers.options.option`) and
``async def probe(spec, ctx) -> Outcome``. Probers only do I/O: the runner owns the hard
deadline, timing, metrics and turning exceptions into UNKNOWN. A prober reports a broken
target by returning an ERROR outcome or raising :class:`CheckFailed`; its own I/O timeout
against the target (``ctx.timeout``) is ERROR too. Anything else it raises means the prober
itself is broken, and the check ends UNKNOWN.

Kubernetes probers reach the API through ``ctx.kube`` (:class:`Kube`) and never import
``kubernetes``: resources are named with :mod:`kubeprober.kube.resources`, objects are plain
JSON dicts, and a failed request raises :class:`KubeApiError`, which left uncaught ends the
check UNKNOWN (the API would not say; the target was not judged). A prober module that uses
``ctx.kube`` lists the grants it needs in ``PERMISSIONS``, which ``manifests/rbac/`` must give.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubeprober.kube.resources import Resource
from kubeprober.probers.status import Status

JSON = dict[str, Any]
NEEDS_KUBE = "needs a Kubernetes API: run the agent in Kubernetes mode, or check --kubeconfig"


class CheckFailed(Exception):
    """Raise from a prober to end the check with ``status`` (ERROR by default) and a message."""

    def __init__(self, message: str, status: Status = Status.ERROR) -> None:
        super().__init__(message)
        self.status = status


class KubeApiError(CheckFailed):
    """A Kubernetes API request failed; uncaught, the check ends UNKNOWN with this message.

    ``code`` is the HTTP status (None when the server could not be reached) and ``reason``
    the Status reason (``NotFound``, ``AlreadyExists``, ``Forbidden`` ...), so a prober can
    tell an expected 404 from an outage.
    """

    def __init__(self, message: str, *, code: int | None, reason: str = "") -> None:
        super().__init__(message, Status.UNKNOWN)
        self.code = code
        self.reason = reason

    @property
    def blames_cluster(self) -> bool:
        """Tell whether the API server or an admission webhook failed the request (a 5xx, or
        a webhook's refusal): then the cluster is broken, not the probe."""
        return (self.code or 0) >= 500 or "admission webhook" in str(self)


class WaitTimedOut(TimeoutError):
    """:meth:`Kube.wait_for` gave up; ``last`` is the object as last seen (None: absent).

    Uncaught, the check ends ERROR (a timeout of the prober's own): catch it to say which
    step stalled and why, from ``last``.
    """

    def __init__(self, message: str, last: JSON | None) -> None:
        super().__init__(message)
        self.last = last


Condition = Callable[[JSON | None], bool]
"""What :meth:`Kube.wait_for` waits for: true of the object, or of None when it is absent."""


class Kube(Protocol):
    """The Kubernetes API as a prober sees it: ``ctx.kube``.

    Every call is rate-limited (agent-wide) and bounded by the check's deadline
    (``ctx.timeout``): a request without an answer by then raises TimeoutError. ``namespace``
    None means a cluster-scoped resource, or all namespaces for ``list`` and ``watch``.
    Errors are :class:`KubeApiError`.
    """

    @property
    def server(self) -> str:
        """The API server's URL (``https://host:port``), for probing the server itself."""
        ...

    async def version(self) -> JSON:
        """Read the API server's ``/version`` (``gitVersion``, ``major``, ``minor`` ...)."""
        ...

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> JSON:
        """Read one object."""
        ...

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> JSON:
        """List objects, all pages: ``{"items": [...], "metadata": {"resourceVersion"}}``."""
        ...

    async def create(self, resource: Resource, body: JSON, *, namespace: str | None = None) -> JSON:
        """Create an object; return it as stored."""
        ...

    async def patch(
        self, resource: Resource, name: str, patch: JSON, *, namespace: str | None = None
    ) -> JSON:
        """Apply a JSON merge patch (RFC 7386); return the object as stored."""
        ...

    async def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete an object (dependents go to the garbage collector)."""
        ...

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, JSON]]]:
        """Watch changes after ``resource_version``: ``async with`` it, then ``async for
        kind, obj in events``, ``kind`` being ADDED, MODIFIED or DELETED. Iterating past
        the check's deadline raises TimeoutError; the stream may also just end."""
        ...

    async def wait_for(
        self,
        resource: Resource,
        name: str,
        condition: Condition,
        *,
        namespace: str | None = None,
        within: float | None = None,
    ) -> JSON | None:
        """Return the object once ``condition`` holds for it (None if it held for absence).

        Reads the object, then watches it until the condition holds, the check's deadline
        or ``within`` seconds pass (:class:`WaitTimedOut`). ``condition`` sees None while
        the object does not exist, so ``lambda obj: obj is None`` waits for a deletion.
        """
        ...


async def remove_leftovers(
    kube: Kube, resource: Resource, label_selector: str, *, namespace: str | None = None
) -> None:
    """Delete what earlier runs left behind (a run cut off by its deadline, an agent that
    crashed): the objects matching ``label_selector`` that are not being deleted already."""
    found = await kube.list(resource, namespace=namespace, label_selector=label_selector)
    for obj in found["items"]:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            await kube.delete(resource, obj["metadata"]["name"], namespace=namespace)
        except KubeApiError as exc:
            if exc.code != 404:
                raise


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
    kube_api: Kube | None = None
    """The Kubernetes API when there is one (agent in Kubernetes mode, ``check --kubeconfig``)."""

    @property
    def kube(self) -> Kube:
        """The Kubernetes API; without one the check ends UNKNOWN ("needs a Kubernetes API")."""
        if self.kube_api is None:
            raise CheckFailed(NEEDS_KUBE, Status.UNKNOWN)
        return self.kube_api

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as phase ``name`` (time adds up if entered twice)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start

    def owner_id(self) -> str:
        """Return a short stable id of this check (a hash of namespace, probe and check), a
        valid label value: label the objects a prober creates with it, to find leftovers."""
        identity = f"{self.namespace}/{self.probe}/{self.check}".encode()
        return hashlib.sha256(identity).hexdigest()[:20]

    def record_certificate(self, target: str, not_after: float) -> None:
        """Report that ``target``'s certificate expires at unix time ``not_after``."""
        self.certificates[target] = not_after


# The one signature every prober implements: ``async def probe(spec, ctx) -> Outcome``.
ProbeFunction = Callable[[Any, Context], Awaitable[Outcome]]
