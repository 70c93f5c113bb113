"""``ctx.kube``: the Kubernetes API handed to probers, paced and bounded by each check's deadline.

Exists so Kubernetes probers reach the cluster through the shared layer (:mod:`kubeprober.kube`)
without seeing it: :class:`ProberAccess` is the agent's one door (its token bucket is shared by
every check), and :meth:`ProberAccess.for_check` gives each run a :class:`CheckApi` that
implements :class:`kubeprober.probers.sdk.Kube` under that run's deadline. Errors of the layer
leave as :class:`~kubeprober.probers.sdk.KubeApiError`. It must not retry or interpret
objects: the prober knows what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from kubeprober.kube.api import JSON, KubeApi
from kubeprober.kube.errors import Gone, KubeError
from kubeprober.kube.resources import Resource
from kubeprober.kube.streams import WatchStream
from kubeprober.pacing import TokenBucket
from kubeprober.probers.durations import format_duration
from kubeprober.probers.sdk import CheckFailed, Condition, KubeApiError, WaitTimedOut
from kubeprober.probers.status import Status

T = TypeVar("T")


@dataclass(frozen=True)
class AccessSettings:
    """How hard probers may press the API server, all checks of the agent together."""

    rate: float = 20.0
    """Requests per second on average: a pod-lifecycle run makes about ten, so dozens of
    Kubernetes checks every 30 s stay far below this, while a broken prober in a loop cannot
    flood the API server."""
    burst: int = 50
    """Requests at once: checks scheduled together start without waiting."""


class ProberAccess:
    """The agent's (or ``check``'s) Kubernetes API for probers, one rate limit for all."""

    def __init__(self, api: KubeApi, *, settings: AccessSettings | None = None) -> None:
        self.api = api
        self.settings = settings or AccessSettings()
        self._bucket = TokenBucket(self.settings.rate, self.settings.burst)

    def for_check(self, timeout: float) -> CheckApi:
        """Return the API for one run that may spend ``timeout`` seconds on I/O."""
        return CheckApi(self.api, self._bucket, deadline=time.monotonic() + timeout)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except KubeError as exc:
        raise KubeApiError(str(exc), code=exc.status, reason=exc.reason) from exc


class CheckApi:
    """:class:`kubeprober.probers.sdk.Kube` for one check run, until its deadline."""

    def __init__(self, api: KubeApi, bucket: TokenBucket, *, deadline: float) -> None:
        self._api = api
        self._bucket = bucket
        self.deadline = deadline
        """``time.monotonic()`` after which no call waits any longer."""

    @property
    def server(self) -> str:
        """The API server's URL (``https://host:port``)."""
        return self._api.server

    def _loop_deadline(self, at: float | None = None) -> float:
        """Convert a monotonic deadline into the event loop's clock."""
        loop = asyncio.get_running_loop()
        return loop.time() + ((self.deadline if at is None else at) - time.monotonic())

    async def _paced(self) -> None:
        """Take a token of the agent's rate limit, within the deadline."""
        try:
            async with asyncio.timeout_at(self._loop_deadline()):
                await self._bucket.take()
        except TimeoutError:
            raise CheckFailed(
                f"Kubernetes API requests are over the agent's rate limit "
                f"({self._bucket.rate:g}/s); no request could be sent in time",
                Status.UNKNOWN,
            ) from None

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Pace, then send ``request`` and await its answer within the deadline."""
        await self._paced()
        try:
            async with asyncio.timeout_at(self._loop_deadline()):
                with _translated():
                    return await request()
        except TimeoutError:
            raise TimeoutError(f"{what}: no answer within the check's timeout") from None

    async def version(self) -> JSON:
        """Read ``/version`` (every authenticated client may)."""
        return await self._call("read /version", self._api.server_version)

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> JSON:
        """Read one object."""
        return await self._call(
            f"get {resource.plural} {name}",
            lambda: self._api.get(resource, name, namespace=namespace or ""),
        )

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> JSON:
        """List objects, all pages (each page is paced)."""
        return await self._call(
            f"list {resource.plural}",
            lambda: self._api.list(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
            ),
        )

    async def create(self, resource: Resource, body: JSON, *, namespace: str | None = None) -> JSON:
        """Create an object."""
        return await self._call(
            f"create {resource.plural}",
            lambda: self._api.create(resource, body, namespace=namespace or ""),
        )

    async def patch(
        self, resource: Resource, name: str, patch: JSON, *, namespace: str | None = None
    ) -> JSON:
        """Merge-patch an object."""
        return await self._call(
            f"patch {resource.plural} {name}",
            lambda: self._api.patch(resource, name, patch, namespace=namespace or ""),
        )

    async def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete an object."""
        await self._call(
            f"delete {resource.plural} {name}",
            lambda: self._api.delete(resource, name, namespace=namespace or ""),
        )

    @contextlib.asynccontextmanager
    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> AsyncIterator[AsyncIterator[tuple[str, JSON]]]:
        """Watch changes; iterating past the deadline raises TimeoutError."""
        await self._paced()
        stream = self._api.watch(
            resource,
            namespace=namespace,
            resource_version=resource_version,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        async with stream:
            yield _Events(stream, self._loop_deadline(), f"watch {resource.plural}")

    async def wait_for(
        self,
        resource: Resource,
        name: str,
        condition: Condition,
        *,
        namespace: str | None = None,
        within: float | None = None,
    ) -> JSON | None:
        """Return the object once ``condition`` holds; raise WaitTimedOut when time is up."""
        until = self.deadline if within is None else min(self.deadline, time.monotonic() + within)
        started = time.monotonic()
        last: JSON | None = None
        where = f"{namespace}/{name}" if namespace else name
        try:
            async with asyncio.timeout_at(self._loop_deadline(until)):
                while True:
                    found = await self._find(resource, name, namespace)
                    last = (found["items"] or [None])[0]
                    if condition(last):
                        return last
                    try:
                        async with self.watch(
                            resource,
                            namespace=namespace,
                            field_selector=f"metadata.name={name}",
                            resource_version=found["metadata"].get("resourceVersion"),
                        ) as events:
                            async for kind, obj in events:
                                last = None if kind == "DELETED" else obj
                                if condition(last):
                                    return last
                    except KubeApiError as exc:
                        if not isinstance(exc.__cause__, Gone):
                            raise
                    # The watch ended or expired: read afresh and watch again.
        except TimeoutError:
            waited = format_duration(round(time.monotonic() - started, 1))
            raise WaitTimedOut(
                f"{resource.plural} {where}: condition not met within {waited}", last
            ) from None

    async def _find(self, resource: Resource, name: str, namespace: str | None) -> JSON:
        return await self.list(
            resource, namespace=namespace, field_selector=f"metadata.name={name}"
        )


class _Events:
    """A watch's ADDED, MODIFIED and DELETED events until ``deadline`` (loop time)."""

    def __init__(self, stream: WatchStream, deadline: float, what: str) -> None:
        self._stream = stream
        self._deadline = deadline
        self._what = what

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> tuple[str, JSON]:
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    with _translated():
                        event = await anext(self._stream)
            except TimeoutError:
                raise TimeoutError(f"{self._what}: still watching at the check's timeout") from None
            if event.type != "BOOKMARK":
                return event.type, event.object
