"""Async get, list, create and status-patch of namespaced objects, as plain JSON dicts.

Exists so the aggregator reaches the Kubernetes API through one small surface that never
blocks the event loop: every request runs in a bounded thread pool with connect and read
timeouts (a cancelled ``await`` leaves a thread that ends by itself within the timeout), and
client and transport errors are translated here, once, into the tree below. It must not
retry, cache or rate-limit (callers know which failures matter), and must not log payloads.
Every call records the permission it needed in :attr:`KubeApi.used`; the RBAC test holds
those against ``manifests/rbac/aggregator/``. ::

    KubeError          any API failure; .status (HTTP code or None)
    ├── NotFound       404: the object, its namespace or its CRD is not there
    ├── AlreadyExists  409 on create: the name is taken
    ├── Forbidden      401, 403: credentials or RBAC; retrying will not help
    └── Unavailable    5xx, refused, reset, timeouts: try again later
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
BODY_LIMIT = 300
"""Characters of an error body kept in a message: a Status message fits, an HTML page not."""
# Callers retry on their own schedule; urllib3 may only retry a read on a stale pooled socket.
RETRIES = urllib3.Retry(total=None, connect=0, read=1, redirect=0, status=0, other=0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeError(Exception):
    """A Kubernetes API request failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """The object, its namespace or its resource type does not exist."""


class AlreadyExists(KubeError):
    """A create found the name taken."""


class Forbidden(KubeError):
    """Credentials or RBAC do not allow the request."""


class Unavailable(KubeError):
    """The server could not be reached or failed on its side."""


@dataclass(frozen=True, order=True)
class Permission:
    """One RBAC grant: ``verb`` on ``resource`` (``plural`` or ``plural/subresource``)."""

    group: str
    resource: str
    verb: str


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: its API path and kind."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """Return ``group/version`` (just ``version`` for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        """Return the URL path of the collection, or of one object (or its subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        base += f"/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base + (f"/{sub}" if sub else "")

    def permission(self, verb: str, sub: str | None = None) -> Permission:
        """Return the grant ``verb`` needs on this resource (or its subresource)."""
        return Permission(self.group, f"{self.plural}/{sub}" if sub else self.plural, verb)


GROUP = "kubeprober.io"
CLUSTERS = Resource(GROUP, "v1", "clusters", "Cluster")
PROBES = Resource(GROUP, "v1", "probes", "Probe")
SECRETS = Resource("", "v1", "secrets", "Secret")


@dataclass(frozen=True)
class ApiSettings:
    """How the aggregator talks to the API server."""

    workers: int = 4
    """Threads for requests: three lists per reload and rate-limited status patches need
    few, and the bound keeps a slow API server from piling up threads."""
    connect_timeout: float = 5.0
    """Seconds to connect: an in-cluster API server answers in milliseconds."""
    request_timeout: float = 30.0
    """Seconds to wait for an answer; shorter than the apiserver's own 60 s."""
    list_page_size: int = 500
    """Objects per list page: bounds one answer's memory in a big fleet."""


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= BODY_LIMIT else text[: BODY_LIMIT - 1] + "…"


def error_for(status: int, body: bytes, action: str) -> KubeError:
    """Return the error for an HTTP ``status`` answer to ``action``."""
    text = body.decode("utf-8", "replace")
    reason = detail = ""
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            reason, detail = str(doc.get("reason") or ""), str(doc.get("message") or "")
            text = ""
    message = f"{action}: HTTP {status}{' ' + reason if reason else ''}"
    message += f": {_truncate(detail or text)}" if (detail or text) else ""
    if status == 404:
        return NotFound(message, status=status)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(message, status=status)
    if status in (401, 403):
        return Forbidden(message, status=status)
    if status >= 500:
        return Unavailable(message, status=status)
    return KubeError(message, status=status)


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn transport errors raised inside into :class:`Unavailable` for ``action``."""
    try:
        yield
    except KubeError:
        raise
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Unavailable(f"{action}: {_truncate(str(exc) or type(exc).__name__)}") from exc


class KubeApi:
    """Async get/list/create/patch of namespaced objects of one namespace, as JSON dicts."""

    def __init__(
        self, api_client: client.ApiClient, *, namespace: str, settings: ApiSettings | None = None
    ) -> None:
        self._client = api_client
        self.namespace = namespace
        self.settings = settings or ApiSettings()
        self._executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="agg-kube")
        self.used: set[Permission] = set()
        """Every permission a call needed so far."""
        self._lock = threading.Lock()
        self._requests = 0  # guarded by _lock: request threads count

    @property
    def requests(self) -> int:
        """Return how many requests were sent, for tests and benchmarks."""
        return self._requests

    @classmethod
    def load(
        cls,
        kubeconfig: Path | None,
        *,
        namespace: str | None = None,
        settings: ApiSettings | None = None,
    ) -> KubeApi:
        """Build from ``kubeconfig`` (its current context), or in a pod from its account."""
        try:
            if kubeconfig is not None:
                load_config: Any = config.new_client_from_config  # untyped in the client
                contexts_of: Any = config.list_kube_config_contexts
                api_client = load_config(config_file=str(kubeconfig))
                _, active = contexts_of(config_file=str(kubeconfig))
                default = (active or {}).get("context", {}).get("namespace") or "default"
            else:
                cfg = client.Configuration()
                load_incluster: Any = config.load_incluster_config
                load_incluster(client_configuration=cfg)
                api_client = client.ApiClient(cfg)
                default = _pod_namespace()
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
            where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
            raise KubeError(f"{where}: {' '.join(str(exc).split())}") from exc
        return cls(api_client, namespace=namespace or default, settings=settings)

    async def get(self, resource: Resource, name: str) -> JSON:
        """Read one object."""
        return await self._send(
            "GET",
            resource.path(self.namespace, name),
            resource.permission("get"),
            action=f"get {resource.plural} {self.namespace}/{name}",
        )

    async def list(self, resource: Resource) -> list[JSON]:
        """List every object of ``resource`` in the namespace (all pages), kind filled in."""
        query = {"limit": str(self.settings.list_page_size)}
        items: list[JSON] = []
        while True:
            page = await self._send(
                "GET",
                resource.path(self.namespace),
                resource.permission("list"),
                query=query,
                action=f"list {resource.plural} in {self.namespace}",
            )
            for item in page.get("items") or []:
                # List items of built-in kinds come without them; parse_fleet needs both.
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    async def create(self, resource: Resource, body: JSON) -> JSON:
        """Create an object in the namespace."""
        name = (body.get("metadata") or {}).get("name", "")
        return await self._send(
            "POST",
            resource.path(self.namespace),
            resource.permission("create"),
            body=body,
            action=f"create {resource.plural} {self.namespace}/{name}",
        )

    async def patch_status(self, resource: Resource, name: str, patch: JSON) -> JSON:
        """Merge-patch (RFC 7386) an object's status subresource."""
        return await self._send(
            "PATCH",
            resource.path(self.namespace, name, "status"),
            resource.permission("patch", "status"),
            body=patch,
            content_type=MERGE_PATCH,
            action=f"patch {resource.plural}/status {self.namespace}/{name}",
        )

    async def close(self) -> None:
        """Refuse new requests and close idle connections; running ones end by timeout."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        close: Any = self._client.close  # untyped in the client
        close()

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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._request, method, path, query or {}, body, content_type, action
        )

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: JSON | None,
        content_type: str,
        action: str,
    ) -> JSON:
        """Send one request and decode its JSON answer (runs in a pool thread)."""
        with self._lock:
            self._requests += 1
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout, read=self.settings.request_timeout
        )
        with translated(action):
            # param_serialize adds the bearer token, refreshing it when the config says so.
            _, url, headers, _, _ = self._client.param_serialize(
                method,
                path,
                query_params=list(query.items()),
                header_params=headers,
                auth_settings=["BearerToken"],
            )
            response = self._client.rest_client.pool_manager.request(
                method,
                url,
                body=json.dumps(body).encode() if body is not None else None,
                headers=headers,
                timeout=timeout,
                retries=RETRIES,
                preload_content=False,
            )
            try:
                data = response.read()
            finally:
                response.release_conn()
        if not 200 <= response.status < 300:
            raise error_for(response.status, data, action)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            raise Unavailable(f"{action}: answer is not JSON") from None
        return decoded if isinstance(decoded, dict) else {}


def _pod_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"
