"""Watch streams: initial events, replay from a resourceVersion, bookmarks, 410 and timeouts.

Subscribes before reading the current state so no change between the two is lost, then skips
queued events the initial state already covers.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import ApiError
from .objects import Objects
from .resources import ResourceType
from .store import Event
from .tables import table

Match = Callable[[dict[str, Any]], bool]


def transform(event: Event, match: Match) -> tuple[str, dict[str, Any]] | None:
    """Return the (type, object) a filtered watch sees for a stored event, if any.

    An object leaving the selector is DELETED as the watch last saw it (the old labels), with
    the resourceVersion of the change, as the apiserver's watch cache sends it.
    """
    if event.type == "DELETED":
        return ("DELETED", event.new) if match(event.old or event.new) else None
    was = event.old is not None and match(event.old)
    now = match(event.new)
    if was and now:
        return ("MODIFIED", event.new)
    if now:
        return ("ADDED", event.new)
    if was:
        assert event.old is not None
        last = copy.deepcopy(event.old)
        last["metadata"]["resourceVersion"] = event.new["metadata"]["resourceVersion"]
        return ("DELETED", last)
    return None


class WatchStream:
    """One watch connection: writes newline-delimited JSON events to an aiohttp response."""

    def __init__(
        self, api: Objects, rt: ResourceType, *, as_table: bool, bookmark_interval: float
    ) -> None:
        self.api = api
        self.rt = rt
        self.as_table = as_table
        self.bookmark_interval = bookmark_interval
        self.sent_columns = False
        self.resp: web.StreamResponse | None = None

    async def serve(
        self, request: web.Request, *, namespace: str | None, match: Match, params: dict[str, str]
    ) -> web.StreamResponse:
        """Stream events until timeoutSeconds, client disconnect or server shutdown."""
        store = self.api.store
        timeout = float(params.get("timeoutSeconds") or 0) or None
        deadline = time.monotonic() + timeout if timeout else None
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        rv_param = params.get("resourceVersion", "")
        initial = params.get("sendInitialEvents") == "true"

        def full_match(obj: dict[str, Any]) -> bool:
            if namespace is not None and obj["metadata"].get("namespace", "") != namespace:
                return False
            return match(obj)

        watcher = store.subscribe(self.rt.key)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            self.resp = resp
            await resp.prepare(request)
            start_rv = store.rv
            try:
                if initial or rv_param in ("", "0"):
                    for obj in store.items(self.rt.key, namespace):
                        if full_match(obj):
                            await self.send("ADDED", obj)
                    if initial:
                        await self.bookmark(start_rv, initial_end=True)
                else:
                    try:
                        rv = store.revision(rv_param)
                    except ValueError as exc:
                        raise ApiError(400, f"invalid resource version: {rv_param}") from exc
                    for ev in store.since(self.rt.key, rv):
                        out = transform(ev, full_match)
                        if out:
                            await self.send(*out)
            except ApiError as err:
                await self._write({"type": "ERROR", "object": err.status()})
                return resp
            last_bookmark = time.monotonic()
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = 1.0 if deadline is None else min(1.0, deadline - now)
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                        await self.bookmark(store.rv)
                        last_bookmark = time.monotonic()
                    continue
                if ev is None:
                    break
                if ev.rv <= start_rv:
                    continue
                out = transform(ev, full_match)
                if out:
                    await self.send(*out)
            return resp
        except ConnectionResetError:
            assert self.resp is not None
            return self.resp
        finally:
            store.unsubscribe(watcher)

    async def send(self, typ: str, obj: dict[str, Any]) -> None:
        """Write one event, as a Table row when the client asked for tables."""
        view = self.api.view(self.rt, obj)
        if self.as_table:
            body: dict[str, Any] = table(
                self.rt,
                [view],
                rv=view["metadata"]["resourceVersion"],
                with_columns=not self.sent_columns,
            )
            self.sent_columns = True
        else:
            body = view
        await self._write({"type": typ, "object": body})

    async def bookmark(self, rv: int, *, initial_end: bool = False) -> None:
        """Write a BOOKMARK carrying only a resourceVersion."""
        meta: dict[str, Any] = {"resourceVersion": self.api.store.version(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        await self._write(
            {
                "type": "BOOKMARK",
                "object": {
                    "kind": self.rt.kind,
                    "apiVersion": self.rt.api_version,
                    "metadata": meta,
                },
            }
        )

    async def _write(self, event: dict[str, Any]) -> None:
        assert self.resp is not None
        await self.resp.write((json.dumps(event) + "\n").encode())
