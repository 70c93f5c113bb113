"""Raw HTTP calls through a kubernetes ApiClient, for asserting exact status codes and bodies.

The generated client hides Status bodies behind exceptions and cannot ask for Tables; tests
of API behaviour use this instead, with the same credentials and TLS settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client


@dataclass
class Answer:
    """An HTTP answer: status, decoded JSON body (or None) and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """Return the Status reason of an error body."""
        return self.body.get("reason") if isinstance(self.body, dict) else None


def _send(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any,
    *,
    query: dict[str, Any] | None,
    headers: dict[str, str],
    stream: bool,
) -> Any:
    """Send a request with the client's credentials; return the urllib3 response."""
    _, url, hdrs, _, _ = api.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()),
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    data = json.dumps(body) if body is not None else None
    return api.rest_client.pool_manager.request(
        method, url, body=data, headers=hdrs, preload_content=not stream
    )


def call(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: dict[str, Any] | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> Answer:
    """Make one request and return its answer (errors included, never raised)."""
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type
    resp = _send(api, method, path, body, query=query, headers=headers, stream=False)
    try:
        decoded = json.loads(resp.data) if resp.data else None
    except ValueError:
        decoded = resp.data.decode(errors="replace")
    return Answer(resp.status, decoded, dict(resp.headers))


def watch(
    api: client.ApiClient,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    accept: str = "application/json",
) -> Iterator[dict[str, Any]]:
    """Yield the events of a watch request until the server ends it."""
    q = {"watch": "true", **(query or {})}
    resp = _send(api, "GET", path, None, query=q, headers={"Accept": accept}, stream=True)
    try:
        if resp.status != 200:
            raise AssertionError(f"watch {path}: HTTP {resp.status}: {resp.data!r}")
        buf = b""
        for chunk in resp.stream(4096, decode_content=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)
    finally:
        resp.release_conn()
        resp.close()
