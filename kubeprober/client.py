"""How ``kubeprober status`` and ``kubeprober run`` reach an aggregator, and what a failure means.

The aggregator is the first of: ``--aggregator``, ``$KUBEPROBER_AGGREGATOR``, the demo started
from the current directory (its ``.state/demo/demo.json``), ``http://127.0.0.1:8088``. The CA
trusted for it: ``--aggregator-ca``, ``$KUBEPROBER_AGGREGATOR_CA``, the demo's own CA when the
demo was chosen, else the system's. Every failure becomes one :class:`ClientError` whose text
names the URL or file at fault and what to do; this module never prints.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8088"
DEMO_INFO = Path(".state/demo/demo.json")
"""What ``kubeprober demo`` writes while it runs, relative to the directory it was started in."""
URL_ENV = "KUBEPROBER_AGGREGATOR"
CA_ENV = "KUBEPROBER_AGGREGATOR_CA"
TIMEOUT = 330.0
"""Seconds to wait for an answer: a probe run through the tunnel may take its whole timeout."""


class ClientError(Exception):
    """The aggregator could not be reached or used; the text is the line to show."""


@dataclass(frozen=True)
class Target:
    """Which aggregator to ask, how to trust it, and how to say where that choice came from."""

    url: str
    ca: Path | None = None
    token: str | None = None
    token_flag: str = "--read-token-file"
    """The flag that gives the token, for the hint when the aggregator asks for one."""
    origin: str = ""
    """Empty, or where the URL came from when no flag gave it (``$KUBEPROBER_AGGREGATOR``)."""


def resolve(
    url: str | None,
    ca: Path | None,
    token_file: Path | None,
    *,
    token_flag: str = "--read-token-file",
    env: Mapping[str, str] = os.environ,
    demo_info: Path = DEMO_INFO,
) -> Target:
    """Choose the aggregator, its CA and the bearer token; raise ClientError if one is bad."""
    origin = ""
    demo_ca: Path | None = None
    if url is None and env.get(URL_ENV):
        url, origin = env[URL_ENV], f"${URL_ENV}"
    if url is None and demo_info.is_file():
        url, demo_ca = _demo(demo_info)
        origin = f"the demo's, from {demo_info}"
    if url is None:
        url = DEFAULT_URL
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        hint = " (wss:// is where agents dial; ask the same host over https://)"
        raise ClientError(
            f"aggregator URL {url!r}{_from(origin)}: expected http:// or https://HOST[:PORT]"
            + (hint if parsed.scheme in ("ws", "wss") else "")
        )
    if ca is None and env.get(CA_ENV):
        ca = Path(env[CA_ENV])
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"{token_flag} {token_file}: {_reason(exc)}") from None
        if not token:
            raise ClientError(f"{token_flag} {token_file}: the file is empty")
    return Target(url.rstrip("/"), ca or demo_ca, token, token_flag, origin)


def _demo(path: Path) -> tuple[str, Path]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return str(info["aggregator"]), Path(info["ca"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"{path}: not a demo summary ({_reason(exc)})") from None


def _from(origin: str) -> str:
    return f" ({origin})" if origin else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}"
    return str(exc)


def _context(target: Target) -> ssl.SSLContext | None:
    if target.ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=target.ca)
    except ssl.SSLError:
        raise ClientError(f"--aggregator-ca {target.ca}: no PEM certificate in it") from None
    except OSError as exc:
        raise ClientError(f"--aggregator-ca {target.ca}: {_reason(exc)}") from None


def request_json(target: Target, path: str, *, method: str = "GET") -> Any:
    """Ask the aggregator and decode its JSON answer; raise ClientError on any failure."""
    headers = {"Accept": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    req = urllib.request.Request(target.url + path, method=method, headers=headers)
    context = _context(target)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ClientError(_refused(target, path, exc)) from None
    except urllib.error.URLError as exc:
        raise ClientError(_unreachable(target, exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ClientError(_unreachable(target, exc)) from None
    except ValueError:
        raise ClientError(f"{target.url}{path}: the answer is not JSON") from None


def _refused(target: Target, path: str, exc: urllib.error.HTTPError) -> str:
    body = exc.read().decode(errors="replace").strip()
    try:
        detail = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        detail = " ".join(body.split())[:200]
    hint = ""
    if exc.code == 401 and target.token is None:
        hint = f"; give it with {target.token_flag} FILE"
    return f"{target.url}{path}: {exc.code} {detail or exc.reason}{hint}"


def _unreachable(target: Target, reason: object) -> str:
    where = f"{target.url}{_from(target.origin)}"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"{where}: TLS certificate not trusted ({reason.verify_message}); give the CA "
            f"that signed it with --aggregator-ca PEM or ${CA_ENV}"
        )
    if isinstance(reason, ssl.SSLError):
        return (
            f"{where}: TLS handshake failed ({reason.reason or reason}); "
            "if the aggregator serves plain HTTP, use http://"
        )
    if isinstance(reason, http.client.RemoteDisconnected):
        return (
            f"{where}: the connection closed without an answer; "
            "if the aggregator serves HTTPS, use https://"
        )
    if isinstance(reason, ConnectionRefusedError):
        running = "; is the demo still running?" if target.origin.startswith("the demo") else ""
        return f"cannot reach {where}: connection refused{running}"
    if isinstance(reason, socket.gaierror):
        return f"cannot reach {where}: unknown host"
    if isinstance(reason, TimeoutError):
        return f"cannot reach {where}: no answer within {TIMEOUT:g}s"
    text = _reason(reason) if isinstance(reason, BaseException) else str(reason)
    return f"cannot reach {where}: {text}"
