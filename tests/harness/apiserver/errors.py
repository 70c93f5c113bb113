"""Kubernetes ``Status`` error bodies, raised as exceptions by the server's handlers.

Kept apart so every module reports failures in the exact shape clients parse
(``reason``, ``code``, ``details``) instead of inventing its own.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An error answered to the client as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        """Return the ``Status`` body."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(group: str, plural: str, name: str) -> ApiError:
    """Return the 404 for a missing object."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        404,
        f'{what} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    """Return the 409 for a create of an existing name."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        f'{what} "{name}" already exists',
        reason="AlreadyExists",
        details={"name": name, "group": group, "kind": plural},
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    """Return the 409 for a write with a stale resourceVersion."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        reason="Conflict",
        details={"name": name, "group": group, "kind": plural},
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """Return the 422 for a failed validation; causes are (field, reason, message)."""
    text = ", ".join(f"{field}: {msg}" for field, _, msg in causes)
    gk = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        f'{gk} "{name}" is invalid: {text}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": reason, "message": msg, "field": field} for field, reason, msg in causes
            ],
        },
    )
