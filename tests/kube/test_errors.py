"""Client and transport errors become one tree, with short messages."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from kubeprober.kube.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
    error_for,
    translated,
)


def _status(code: int, reason: str, message: str = "m") -> bytes:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (404, "NotFound", NotFound),
        (409, "Conflict", Conflict),
        (409, "AlreadyExists", AlreadyExists),
        (410, "Expired", Gone),
        (400, "BadRequest", Invalid),
        (422, "Invalid", Invalid),
        (401, "Unauthorized", Forbidden),
        (403, "Forbidden", Forbidden),
        (429, "TooManyRequests", TooManyRequests),
        (500, "InternalError", Unavailable),
        (503, "ServiceUnavailable", Unavailable),
        (504, "Timeout", Unavailable),
        (418, "Teapot", KubeError),
    ],
)
def test_error_for_status(code: int, reason: str, cls: type[KubeError]) -> None:
    err = error_for(code, _status(code, reason, "it broke"), "get probes ns/p")
    assert type(err) is cls
    assert err.status == code and err.reason == reason
    assert str(err) == f"get probes ns/p: HTTP {code} {reason}: it broke"


def test_alreadyexists_is_a_conflict() -> None:
    assert isinstance(error_for(409, _status(409, "AlreadyExists"), "x"), Conflict)


def test_long_bodies_are_truncated() -> None:
    err = error_for(502, b"<html>" + b"proxy error " * 1000, "list probes")
    assert len(str(err)) < 400 and str(err).endswith("…")


@pytest.mark.parametrize(
    ("raised", "cls", "text"),
    [
        (ApiException(status=404, reason="Not Found"), NotFound, "HTTP 404"),
        (
            ApiException(http_resp=None, body=_status(409, "Conflict", "stale").decode()),
            KubeError,
            "stale",
        ),
        (urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"), Unavailable, "timed"),
        (urllib3.exceptions.ProtocolError("Connection aborted."), Unavailable, "aborted"),
        (ConnectionRefusedError(111, "Connection refused"), Unavailable, "refused"),
    ],
)
def test_translated(raised: Exception, cls: type[KubeError], text: str) -> None:
    with pytest.raises(cls, match=text) as caught, translated("get probes ns/p"):
        raise raised
    assert caught.value.__cause__ is raised
    assert str(caught.value).startswith("get probes ns/p: ")


def test_translated_leaves_kube_errors_alone() -> None:
    original = Gone("watch: expired")
    with pytest.raises(Gone) as caught, translated("watch"):
        raise original
    assert caught.value is original


def test_retry_after_is_kept() -> None:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": "3"}
    with pytest.raises(TooManyRequests) as caught, translated("patch"):
        raise exc
    assert caught.value.retry_after == 3.0
