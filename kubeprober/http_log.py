"""What the agent's and the aggregator's HTTP servers log about requests that do not parse.

aiohttp logs such a request — a port scanner, a TLS client on a plain port, a broken proxy —
at ERROR with a traceback, on every service that meets it. Here it is one INFO line naming
the peer and what the parser disliked; a client's mistake is not the server's error.
Everything else aiohttp logs passes through unchanged, tracebacks of real failures included.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

_aiohttp_server = logging.getLogger("aiohttp.server")


class _BadRequestsInOneLine(logging.LoggerAdapter[logging.Logger]):
    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log a request that did not parse in one line; anything else as aiohttp would."""
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            what = exc.message.strip().splitlines()[0].rstrip(":") if exc.message else ""
            peer = args[0] if args else "?"
            self.logger.info(
                "bad request from %s: %s %s", peer, exc.code, what or type(exc).__name__
            )
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOG = _BadRequestsInOneLine(_aiohttp_server, {})
"""Pass as ``logger=`` to ``web.AppRunner`` (or ``_make_handler``) of every server we run."""
