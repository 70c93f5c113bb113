"""Who may read the aggregator's API and who may act on it: bearer tokens and their rights.

Reading (``/status``, ``/metrics``) and acting (the run API) are separate rights, so a
dashboard's token cannot trigger runs. Reads are open unless ``--read-token-file`` sets the
read token. Running probes always needs an *operator token*: ``--operator-tokens FILE`` holds
``name: sha256`` lines, so the aggregator keeps no operator secret and its logs say which
operator acted, never with what. The file is read again when it changes: removing a line
revokes that token within seconds, without a restart. An operator token also reads. Tunnel,
health, the board page and the OpenAPI document are not guarded here (the tunnel checks agent
tokens itself).

It must not know what the guarded handlers do; they find the acting operator's name in
``request[OPERATOR]``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("kubeprober.aggregator.audit")

OPERATOR = web.RequestKey("operator", str)
"""The name of the operator token that authorised the request."""
READ_PATHS = ("/status", "/metrics")
RUN_PATHS = ("/api/v1/clusters/",)
_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.@]{0,62}")
_HASH = re.compile(r"[0-9a-f]{64}")


def bearer(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, scheme in any case, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def token_hash(token: str) -> str:
    """Return what ``--operator-tokens`` stores: sha256 of the token, in hex (``sha256sum``)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_operator_token() -> str:
    """Return a fresh random operator token (256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class OperatorTokens:
    """Names of operator tokens by the sha256 of each token."""

    names: Mapping[bytes, str]

    @classmethod
    def parse(cls, text: str, *, source: str) -> OperatorTokens:
        """Read ``name: sha256-hex`` lines (``#`` comments, blank lines); ValueError names
        the file, the line and what is wrong there."""
        names: dict[bytes, str] = {}
        seen: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, colon, digest = (part.strip() for part in line.partition(":"))
            where = f"{source}:{number}"
            if not colon or not _NAME.fullmatch(name):
                raise ValueError(f"{where}: expected 'NAME: SHA256' with a name like alice")
            if not _HASH.fullmatch(digest):
                raise ValueError(
                    f"{where}: {name}: expected the token's sha256 in 64 lowercase hex digits "
                    "(kubeprober token prints the line)"
                )
            if name in seen:
                raise ValueError(f"{where}: {name}: name already used on an earlier line")
            seen.add(name)
            names[bytes.fromhex(digest)] = name
        if not names:
            raise ValueError(f"{source}: no operator tokens: the run API would be unusable")
        return cls(names)

    @classmethod
    def load(cls, path: Path) -> OperatorTokens:
        """Read the ``--operator-tokens`` file; OSError or ValueError naming it."""
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path))

    def who(self, token: str) -> str | None:
        """Return the name of ``token``, or None; compares with every entry in constant time."""
        given = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, name in self.names.items():
            if hmac.compare_digest(given, digest):
                found = name
        return found


class OperatorTokensFile:
    """The ``--operator-tokens`` file and the tokens last read from it. Owned by the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.tokens = OperatorTokens({})
        self.reload()

    def reload(self) -> bool:
        """Read the file again if it changed; return whether it did. On OSError or ValueError
        the tokens read before stay, and the same broken version is not reported twice."""
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.tokens = OperatorTokens.load(self.path)
        log.info(
            "operator tokens from %s: %s", self.path, ", ".join(sorted(self.tokens.names.values()))
        )
        return True


def open_reads_warning(host: str, *, read_token: str | None) -> str | None:
    """Return the warning due when ``host`` is reachable from elsewhere and reads are open."""
    if read_token is not None or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # "" or "0.0.0.0"-like wildcards, or a name that may resolve anywhere
    return (
        f"NO TOKEN PROTECTS READS: listening on {host or 'every address'} without "
        "--read-token-file, so anyone who reaches it reads every cluster's /status and /metrics"
    )


def _refuse(status: int, text: str, *, invalid: bool = False) -> web.Response:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return web.Response(status=status, text=text + "\n", headers={"WWW-Authenticate": challenge})


def guard(read_token: str | None, operators: OperatorTokensFile | None) -> Middleware:
    """Middleware: reads need the read token (when set) or an operator token; runs need an
    operator token."""
    want_read = read_token.encode() if read_token is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        run = request.path.startswith(RUN_PATHS)
        if not run and not (want_read is not None and request.path.startswith(READ_PATHS)):
            return await handler(request)
        if run and operators is None:
            return _refuse(
                403,
                "running probes is off: start the aggregator with --operator-tokens FILE "
                "(make a token with `kubeprober token NAME`)",
            )
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            what = "operator token" if run else "token"
            return _refuse(401, f"{what} required (Authorization: Bearer TOKEN)")
        name = operators.tokens.who(token) if operators is not None else None
        if name is not None:
            request[OPERATOR] = name
            return await handler(request)
        is_read = want_read is not None and hmac.compare_digest(token.encode(), want_read)
        if run and is_read:
            return _refuse(403, "the read token cannot run probes: use an operator token")
        if not run and is_read:
            return await handler(request)
        log.warning("%s %s from %s: invalid token", request.method, request.path, request.remote)
        return _refuse(401, "invalid token", invalid=True)

    return middleware
