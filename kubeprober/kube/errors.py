"""Errors of the Kubernetes API, by what the caller should do about them.

Exists so the rest of the agent never sees ``kubernetes.client.ApiException`` or urllib3
errors: :func:`translated` converts them at the boundary (``raise ... from exc``), once. It
must not retry or log: callers decide that, knowing what they were doing. ::

    KubeError                 any API failure; .status (HTTP code or None), .reason
    ├── NotFound              404: the object (or its namespace or CRD) is not there
    ├── Conflict              409: stale resourceVersion; read afresh and retry
    │   └── AlreadyExists     409 on create
    ├── Gone                  410: watch or list resourceVersion expired; relist
    ├── Invalid               400, 422: the request itself is wrong; retrying will not help
    ├── Forbidden             401, 403: RBAC or credentials; retrying will not help
    ├── TooManyRequests       429: back off (.retry_after seconds when the server said)
    └── Unavailable           5xx, connection refused or reset, timeouts: back off, retry
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

BODY_LIMIT = 300
"""Characters of a response body kept in a message: enough for a Status message, and a
huge HTML error page from a proxy cannot flood the logs."""


class KubeError(Exception):
    """A Kubernetes API request failed."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """The object, its namespace or its resource type does not exist."""


class Conflict(KubeError):
    """The object changed since it was read (or a precondition failed)."""


class AlreadyExists(Conflict):
    """A create found the name taken."""


class Gone(KubeError):
    """The resourceVersion is too old: list again."""


class Invalid(KubeError):
    """The server rejected the request as malformed or invalid."""


class Forbidden(KubeError):
    """Credentials or RBAC do not allow the request."""


class TooManyRequests(KubeError):
    """The server asks the client to slow down."""

    def __init__(
        self, message: str, *, status: int | None = 429, reason: str = "", retry_after: float = 0.0
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class Unavailable(KubeError):
    """The server could not be reached or failed on its side: try again later."""


def truncate(text: str, limit: int = BODY_LIMIT) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode(body: bytes | str | None) -> tuple[str, str]:
    """Return (reason, message) of a Status body, or ("", the truncated raw text)."""
    if body is None:
        return "", ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        data: Any = json.loads(text)
    except ValueError:
        return "", truncate(text)
    if isinstance(data, dict) and data.get("kind") == "Status":
        return str(data.get("reason") or ""), truncate(str(data.get("message") or ""))
    return "", truncate(text)


def error_for(
    status: int, body: bytes | str | None, action: str, *, retry_after: float = 0.0
) -> KubeError:
    """Return the error for an HTTP ``status`` answer to ``action`` with its ``body``."""
    reason, detail = _decode(body)
    message = f"{action}: HTTP {status}" + (f" {reason}" if reason else "")
    message += f": {detail}" if detail else ""
    if status == 404:
        return NotFound(message, status=status, reason=reason)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(message, status=status, reason=reason)
    if status == 410:
        return Gone(message, status=status, reason=reason)
    if status in (400, 422):
        return Invalid(message, status=status, reason=reason)
    if status in (401, 403):
        return Forbidden(message, status=status, reason=reason)
    if status == 429:
        return TooManyRequests(message, status=status, reason=reason, retry_after=retry_after)
    if status >= 500 or status == 0:
        return Unavailable(message, status=status or None, reason=reason)
    return KubeError(message, status=status, reason=reason)


def status_error(obj: Any, action: str) -> KubeError:
    """Return the error a watch ERROR event's Status object stands for."""
    code = obj.get("code") if isinstance(obj, dict) else None
    return error_for(int(code) if isinstance(code, int) else 500, json.dumps(obj), action)


def retry_after(headers: Any) -> float:
    """Return the Retry-After seconds in ``headers`` (0 when absent or not a number)."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn client and transport errors raised inside into :class:`KubeError` for ``action``."""
    try:
        yield
    except KubeError:
        raise
    except ApiException as exc:
        status = exc.status if isinstance(exc.status, int) else 0
        body = exc.body if exc.body else (exc.reason or None)
        raise error_for(status, body, action, retry_after=retry_after(exc.headers)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Refused, reset, TLS failures, read timeouts, cut streams: the server is away.
        raise Unavailable(f"{action}: {truncate(str(exc) or type(exc).__name__)}") from exc
