"""An async facade over the official (sync) Kubernetes client: get, list, create, patch,
delete and watch any namespaced resource, as plain JSON dicts.

Exists so both services (and later ``ctx.kube`` for Kubernetes probers) reach the API through
one small surface that never blocks the event loop: each request runs in a bounded thread
pool with a connect and read timeout, so a cancelled ``await`` leaves a thread that ends by
itself within the timeout; each watch gets a thread of its own (:mod:`kubeprober.kube.streams`).
Errors come out as :mod:`kubeprober.kube.errors`. It must not retry, cache or rate-limit: the
callers know which failures matter to them. Every call records the permission it needed in
:attr:`KubeApi.used`, which the RBAC test compares with the manifests.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from kubeprober.kube.errors import KubeError, error_for, retry_after, translated
from kubeprober.kube.resources import Permission, Resource
from kubeprober.kube.streams import WatchStream

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
# Our callers back off and retry on their own; urllib3 only gets to retry a read on a stale
# pooled connection (GETs only, by its rules), not a refused connect or an error status.
RETRIES = urllib3.Retry(total=None, connect=0, read=1, redirect=0, status=0, other=0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class ApiSettings:
    """How a service talks to the API server."""

    workers: int = 4
    """Threads for ordinary requests: writes are coalesced upstream, so a few suffice, and the
    bound keeps a slow API server from piling up threads."""
    connect_timeout: float = 5.0
    """Seconds to open a connection: a loopback or in-cluster API server answers in
    milliseconds; longer means it is away."""
    request_timeout: float = 30.0
    """Seconds to wait for an answer: the apiserver's own default request timeout is 60 s,
    but our services rather retry than hold a thread that long."""
    watch_timeout: int = 300
    """Seconds a watch request asks the server to keep it open (``timeoutSeconds``). Shorter
    than the server's default (30-60 min) so a silently dead connection is noticed soon."""
    watch_read_margin: float = 30.0
    """Seconds past ``watch_timeout`` the reader waits for data before calling the stream dead."""
    list_page_size: int = 500
    """Objects per list page (``limit``): bounds memory per answer on a big cluster."""


class KubeApi:
    """Async get/list/create/patch/delete/watch of namespaced resources, as JSON dicts."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str = "default",
        settings: ApiSettings | None = None,
    ) -> None:
        self._client = api_client
        self.namespace = namespace
        """The namespace of the kubeconfig context (or the pod's): the default for --namespace."""
        self.settings = settings or ApiSettings()
        self._executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="kube-api")
        self._watches: set[WatchStream] = set()
        self.used: set[Permission] = set()
        """Every permission a call needed so far (set.add is atomic: threads may add too)."""
        self._lock = threading.Lock()
        self._requests = 0  # guarded by _lock: request threads count
        self._lanes: list[KubeApi] = []

    @property
    def server(self) -> str:
        """Return the API server's URL (``https://host:port``) from the kubeconfig or the pod."""
        return str(self._client.configuration.host)

    @property
    def configuration(self) -> client.Configuration:
        """Return the client's configuration (server, TLS, credentials) for other HTTP clients."""
        cfg: client.Configuration = self._client.configuration
        return cfg

    @property
    def requests(self) -> int:
        """Return how many requests were sent (watches included, and those of its lanes), for
        benchmarks and tests."""
        return self._requests + sum(lane.requests for lane in self._lanes)

    def lane(self) -> KubeApi:
        """Return this API with a request thread of its own, for requests that must not queue
        behind the others: a replica's Lease renewals behind thousands of status writes when
        it takes over a dead replica's clusters. Same client, connections and permissions
        record; closed with this one."""
        lane = copy.copy(self)
        lane._executor = ThreadPoolExecutor(1, thread_name_prefix="kube-api-lane")
        lane._watches, lane._lanes, lane._requests = set(), [], 0
        self._lanes.append(lane)
        return lane

    @classmethod
    def from_kubeconfig(
        cls, path: Path, *, context: str | None = None, settings: ApiSettings | None = None
    ) -> KubeApi:
        """Build from a kubeconfig file (its current context unless ``context`` is given)."""
        load: Any = config.new_client_from_config  # untyped in the client
        contexts_of: Any = config.list_kube_config_contexts
        try:
            api_client = load(config_file=str(path), context=context)
            contexts, active = contexts_of(config_file=str(path))
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
            raise KubeError(f"kubeconfig {path}: {' '.join(str(exc).split())}") from exc
        if not api_client.configuration.verify_ssl:
            log.warning(
                "INSECURE: kubeconfig %s turns TLS verification off (insecure-skip-tls-verify): "
                "whoever answers at %s is taken for the API server",
                path,
                api_client.configuration.host,
            )
        if context is not None:
            active = next((c for c in contexts if c.get("name") == context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
        return cls(api_client, namespace=namespace, settings=settings)

    @classmethod
    def in_cluster(cls, *, settings: ApiSettings | None = None) -> KubeApi:
        """Build from the pod's service account."""
        cfg = client.Configuration()
        load: Any = config.load_incluster_config  # untyped in the client
        try:
            load(client_configuration=cfg)
        except ConfigException as exc:
            raise KubeError(f"in-cluster config: {exc}") from exc
        try:
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            namespace = "default"
        return cls(client.ApiClient(cfg), namespace=namespace, settings=settings)

    @classmethod
    def load(
        cls,
        kubeconfig: Path | None,
        *,
        namespace: str | None = None,
        settings: ApiSettings | None = None,
    ) -> KubeApi:
        """Use ``kubeconfig`` if given, else in-cluster config in a pod, else $KUBECONFIG.

        ``namespace`` replaces the context's (or the pod's) as :attr:`namespace`.
        """
        if kubeconfig is not None:
            api = cls.from_kubeconfig(kubeconfig, settings=settings)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            api = cls.in_cluster(settings=settings)
        else:
            default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
            api = cls.from_kubeconfig(Path(default).expanduser(), settings=settings)
        api.namespace = namespace or api.namespace
        return api

    # -- requests -----------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, *, namespace: str) -> JSON:
        """Read one object."""
        return await self._send(
            "GET",
            resource.path(namespace, name),
            resource.permission("get"),
            action=f"get {resource.plural} {_named(namespace, name)}",
        )

    async def server_version(self) -> JSON:
        """Read ``/version`` (open to every authenticated client: no RBAC grant needed)."""
        timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout, read=self.settings.request_timeout
        )
        call = functools.partial(
            self._request, "GET", "/version", {}, None, "application/json", timeout,
            "read /version",
        )  # fmt: skip
        return await self._in_thread(call)

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> JSON:
        """List objects (all pages); no namespace means all namespaces.

        Returns ``{"items": [...], "metadata": {"resourceVersion": ...}}``: the version to
        start a watch from.
        """
        query: dict[str, str] = {"limit": str(self.settings.list_page_size)}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        where = namespace if namespace is not None else "all namespaces"
        items: list[JSON] = []
        while True:
            page = await self._send(
                "GET",
                resource.path(namespace),
                resource.permission("list"),
                query=query,
                action=f"list {resource.plural} in {where}",
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                rv = meta.get("resourceVersion")
                return {"items": items, "metadata": {"resourceVersion": rv}}
            query["continue"] = meta["continue"]

    async def create(self, resource: Resource, body: JSON, *, namespace: str) -> JSON:
        """Create an object in ``namespace``."""
        meta = body.get("metadata") or {}
        # A generated name is not known yet: say what it starts with.
        name = meta.get("name") or f"{meta.get('generateName', '')}*"
        return await self._send(
            "POST",
            resource.path(namespace),
            resource.permission("create"),
            body=body,
            action=f"create {resource.plural} {_named(namespace, name)}",
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: JSON,
        *,
        namespace: str,
        subresource: str | None = None,
    ) -> JSON:
        """Apply a JSON merge patch (RFC 7386) to an object or one of its subresources."""
        sub = f"/{subresource}" if subresource else ""
        return await self._send(
            "PATCH",
            resource.path(namespace, name, subresource),
            resource.permission("patch", subresource),
            body=patch,
            content_type=MERGE_PATCH,
            action=f"patch {resource.plural}{sub} {_named(namespace, name)}",
        )

    async def patch_status(
        self, resource: Resource, name: str, patch: JSON, *, namespace: str
    ) -> JSON:
        """Merge-patch the status subresource."""
        return await self.patch(resource, name, patch, namespace=namespace, subresource="status")

    async def delete(
        self, resource: Resource, name: str, *, namespace: str, background: bool = False
    ) -> None:
        """Delete an object; with ``background``, its dependents go to the garbage collector
        whatever the kind's default (a batch/v1 Job's default orphans its pods)."""
        await self._send(
            "DELETE",
            resource.path(namespace, name),
            resource.permission("delete"),
            query={"propagationPolicy": "Background"} if background else None,
            action=f"delete {resource.plural} {_named(namespace, name)}",
        )

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> WatchStream:
        """Watch changes after ``resource_version``; use as ``async with ... as events``.

        ERROR events are raised as errors (:class:`~kubeprober.kube.errors.Gone` when the
        version expired); BOOKMARK events carry only a newer resourceVersion.
        """
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.settings.watch_timeout),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        path = resource.path(namespace)
        self.used.add(resource.permission("watch"))
        timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.watch_timeout + self.settings.watch_read_margin,
        )
        where = namespace if namespace is not None else "all namespaces"
        stream = WatchStream(
            functools.partial(self._open, "GET", path, query, None, "", timeout),
            action=f"watch {resource.plural} in {where}",
        )
        self._watches = {w for w in self._watches if not w.ended}
        self._watches.add(stream)
        return stream

    async def close(self) -> None:
        """Stop watches, refuse new requests and close idle connections.

        Waits (up to ``connect_timeout``) for the watches' reader threads to end, so none is
        still opening a connection once this returns; running requests end by themselves
        within ``request_timeout``, and queued ones are dropped.
        """
        streams = [*self._watches, *(w for lane in self._lanes for w in lane._watches)]
        for api in (self, *self._lanes):
            api._watches.clear()
        for stream in streams:
            stream.close()
        for executor in (self._executor, *(lane._executor for lane in self._lanes)):
            executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self.settings.connect_timeout

        def join() -> None:
            for stream in streams:
                stream.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join)
        close: Any = self._client.close  # untyped in the client
        close()

    # -- plumbing -----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        permission: Permission,
        *,
        query: dict[str, str] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
        action: str,
    ) -> JSON:
        self.used.add(permission)
        timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout, read=self.settings.request_timeout
        )
        call = functools.partial(
            self._request, method, path, query or {}, body, content_type, timeout, action
        )
        return await self._in_thread(call)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _open(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: JSON | None,
        content_type: str,
        timeout: urllib3.Timeout,
    ) -> Any:
        """Send a request and return the unread urllib3 response (runs in a thread)."""
        with self._lock:
            self._requests += 1
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        # param_serialize adds the bearer token, refreshing it (exec plugins, projected
        # service account tokens) when the configuration says so.
        _, url, headers, _, _ = self._client.param_serialize(
            method,
            path,
            query_params=list(query.items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        data = json.dumps(body).encode() if body is not None else None
        return self._client.rest_client.pool_manager.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=timeout,
            retries=RETRIES,
            preload_content=False,
        )

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: JSON | None,
        content_type: str,
        timeout: urllib3.Timeout,
        action: str,
    ) -> JSON:
        """Send a request and return its decoded JSON answer (runs in a thread)."""
        with translated(action):
            response = self._open(method, path, query, body, content_type, timeout)
            try:
                data = response.read()
            finally:
                response.release_conn()
        if not 200 <= response.status < 300:
            raise error_for(
                response.status, data, action, retry_after=retry_after(response.headers)
            )
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            raise error_for(502, data, f"{action}: answer is not JSON") from None
        return decoded if isinstance(decoded, dict) else {"value": decoded}


def _named(namespace: str, name: str) -> str:
    """Return ``namespace/name``, or just ``name`` for a cluster-scoped object."""
    return f"{namespace}/{name}" if namespace else name
