"""One watch request, read line by line in a thread and handed to asyncio through a queue.

Exists because the official client is synchronous: a watch blocks a thread for minutes, so
it gets a thread of its own (never one of the bounded request pool's) and feeds the event
loop with ``call_soon_threadsafe``. Closing the stream shuts its socket down, so the thread
ends at once rather than at the read timeout. It must not retry, relist or interpret events
beyond turning ERROR events into errors: that is :mod:`exporter.kube.watching`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kubeprober.kube.errors import (
    KubeError,
    Unavailable,
    error_for,
    status_error,
    translated,
)


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, with its object."""

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        """Return the object's resourceVersion (a BOOKMARK carries only that)."""
        rv = (self.object.get("metadata") or {}).get("resourceVersion")
        return str(rv) if rv else None


_END = object()


class WatchStream:
    """Async iterator over one watch request; use as ``async with`` so it is always closed."""

    def __init__(
        self,
        open_response: Callable[[], Any],
        *,
        action: str,
    ) -> None:
        self._open = open_response
        self._action = action
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        # Shared with the reader thread under _lock: the response once opened, and closing.
        self._response: Any = None
        self._closed = False
        self._thread = threading.Thread(target=self._read, name=f"kube-watch:{action}", daemon=True)

    async def __aenter__(self) -> WatchStream:
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended for any later call
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, dict)
        kind = str(item.get("type", ""))
        obj = item.get("object")
        if kind == "ERROR":
            raise status_error(obj, self._action)
        if not isinstance(obj, dict):
            raise Unavailable(f"{self._action}: watch event without an object: {kind}")
        return WatchEvent(kind, obj)

    def close(self) -> None:
        """Stop reading: shut the socket down so the thread returns now."""
        with self._lock:
            self._closed = True
            response = self._response
        if response is not None:
            _shutdown(response)

    @property
    def running(self) -> bool:
        """Tell whether the reader thread is still alive."""
        return self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """Tell whether the reader thread was started and has ended."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait (blocking, at most ``timeout`` seconds) until the reader thread has ended."""
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _put(self, item: object) -> None:
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        response: Any = None
        try:
            with translated(self._action):
                response = self._open()
                with self._lock:
                    self._response = response
                    closed = self._closed
                if closed:
                    return
                if response.status != 200:
                    raise error_for(response.status, response.read(), self._action)
                buffer = bytearray()
                for chunk in response.stream(None, decode_content=True):
                    buffer.extend(chunk)
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            self._put(_decode(line, self._action))
                if buffer.strip():
                    self._put(_decode(bytes(buffer), self._action))
            self._put(_END)
        except Exception as exc:
            with self._lock:
                closed = self._closed
            if not isinstance(exc, KubeError):  # a bug or an odd answer: still end the stream
                exc = Unavailable(f"{self._action}: {type(exc).__name__}: {exc}")
            self._put(_END if closed else exc)
        finally:
            if response is not None:
                response.close()
                response.release_conn()


def _decode(line: bytes, action: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise Unavailable(f"{action}: malformed watch event (cut stream?)") from exc
    if not isinstance(event, dict):
        raise Unavailable(f"{action}: watch event is not an object")
    return event


def _shutdown(response: Any) -> None:
    """Shut down a response's socket from another thread, unblocking a pending read."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is None:
        return
    # The plain socket's shutdown, not SSLSocket's: that one also drops the TLS object
    # under the reading thread's feet.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
