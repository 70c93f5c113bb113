"""What the agent's and the aggregator's HTTP servers log about requests.

aiohttp logs a request that does not parse — a port scanner, a TLS client on a plain port, a
broken proxy — at ERROR with a traceback, on every service that meets it. Here it is one INFO
line naming the peer and what the parser disliked; a client's mistake is not the server's
error. Everything else aiohttp logs passes through unchanged, tracebacks of real failures
included. The access log (:class:`AccessLog`, at DEBUG) and those lines never show a run
token a container probe put in its report path (``/report/TOKEN``): :func:`redact`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

_aiohttp_server = logging.getLogger("aiohttp.server")
_REPORT_TOKEN = re.compile(r"(/report/)[^/?#\s'\"]+")
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """Replace the run token of every ``/report/TOKEN`` in ``text``."""
    return _REPORT_TOKEN.sub(rf"\g<1>{REDACTED}", text)


class _BadRequestsInOneLine(logging.LoggerAdapter[logging.Logger]):
    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log a request that did not parse in one line; anything else as aiohttp would."""
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            what = exc.message.strip().splitlines()[0].rstrip(":") if exc.message else ""
            what = redact(what)
            peer = args[0] if args else "?"
            self.logger.info(
                "bad request from %s: %s %s", peer, exc.code, what or type(exc).__name__
            )
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOG = _BadRequestsInOneLine(_aiohttp_server, {})
"""Pass as ``logger=`` to ``web.AppRunner`` (or ``_make_handler``) of every server we run."""


class AccessLog(AbstractAccessLogger):
    """One DEBUG line per request: peer, method, path (tokens redacted), status, seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one answered request."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "%s %s %s %d %.3fs",
                request.remote,
                request.method,
                redact(request.path_qs),
                response.status,
                time,
            )
