"""Object storage with one global resourceVersion counter, an event log and watch fan-out.

This is the etcd + watch-cache of the test server. It only stores and notifies: the rules for
what a write means (finalizers, generation, status) live in ``objects.py``. Everything here
runs on the server's event loop thread, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .resources import Registry, ResourceType

Key = tuple[str, str]  # (group, plural)
# resourceVersions start high so that "1" is always older than the retained window, as on
# a real cluster whose watch cache starts at the first resourceVersion it saw.
START_RV = 1000


@dataclass(frozen=True)
class Event:
    """One change as the watch cache records it (old is None for ADDED)."""

    rv: int
    key: Key
    type: str
    old: dict[str, Any] | None
    new: dict[str, Any]


@dataclass(eq=False)
class Watcher:
    """A subscription to events of one resource; the store pushes, the watch handler pops."""

    key: Key
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


class Store:
    """All objects, the event log for watch replay and the live watchers."""

    def __init__(self, registry: Registry, *, window: int = 2000) -> None:
        self.registry = registry
        self.rv = START_RV
        self.objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}
        self.by_uid: dict[str, tuple[Key, str, str]] = {}
        self.window = window
        self.log: deque[Event] = deque()
        # Events at or below this resourceVersion have been dropped from the log.
        self.compacted = START_RV
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []
        self.opaque = False
        """Write resourceVersions that are not numbers (as clients must take them: opaque)."""

    def version(self, rv: int) -> str:
        """Render resourceVersion ``rv``: its number, or opaque (``k`` + reversed hex)."""
        return f"k{rv:x}"[::-1] if self.opaque else str(rv)

    def revision(self, text: str) -> int:
        """The number of a resourceVersion rendered by :meth:`version`; ValueError if none."""
        if text.endswith("k"):
            return int(text[-2::-1], 16)
        return int(text)

    def bucket(self, key: Key) -> dict[tuple[str, str], dict[str, Any]]:
        """Return the objects of one resource, keyed (namespace, name)."""
        return self.objects.setdefault(key, {})

    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        """Return the stored object (not a copy: callers must not mutate it)."""
        return self.bucket(key).get((namespace, name))

    def items(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        """Return stored objects sorted by namespace and name."""
        b = self.bucket(key)
        keys = sorted(k for k in b if namespace is None or k[0] == namespace)
        return [b[k] for k in keys]

    def exists_uid(self, uid: str) -> bool:
        """Tell whether an object with this uid is stored."""
        return uid in self.by_uid

    def by_uid_object(self, uid: str) -> dict[str, Any] | None:
        """Return the stored object with this uid."""
        where = self.by_uid.get(uid)
        return self.get(*where) if where else None

    def write(self, rt: ResourceType, obj: dict[str, Any], *, created: bool) -> dict[str, Any]:
        """Store obj under a new resourceVersion and notify; return the stored copy."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self.bucket(rt.key).get(key)
        self.rv += 1
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = self.version(self.rv)
        self.bucket(rt.key)[key] = new
        self.by_uid[meta["uid"]] = (rt.key, *key)
        self._record(Event(self.rv, rt.key, "ADDED" if created else "MODIFIED", old, new))
        return new

    def remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Delete obj for good and notify; return its last state."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self.bucket(rt.key).pop(key)
        self.by_uid.pop(meta["uid"], None)
        self.rv += 1
        gone = copy.deepcopy(old)
        # A DELETED event carries the resourceVersion of the deletion, as etcd reports it.
        gone["metadata"]["resourceVersion"] = self.version(self.rv)
        self._record(Event(self.rv, rt.key, "DELETED", old, gone))
        return gone

    def drop_resource(self, rt: ResourceType) -> None:
        """Delete every object of a resource (a CRD went away)."""
        for obj in list(self.bucket(rt.key).values()):
            self.remove(rt, obj)
        self.objects.pop(rt.key, None)

    def _record(self, event: Event) -> None:
        self.log.append(event)
        while len(self.log) > self.window:
            self.compacted = self.log.popleft().rv
        for w in list(self.watchers):
            if w.key == event.key:
                w.queue.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    def since(self, key: Key, rv: int) -> list[Event]:
        """Return the retained events of one resource after rv; 410 when rv is too old."""
        if rv < self.compacted:
            raise ApiError(
                410,
                f"too old resource version: {rv} ({self.compacted})",
                reason="Expired",
            )
        return [e for e in self.log if e.rv > rv and e.key == key]

    def subscribe(self, key: Key) -> Watcher:
        """Start receiving events of one resource."""
        w = Watcher(key)
        self.watchers.add(w)
        return w

    def unsubscribe(self, watcher: Watcher) -> None:
        """Stop receiving events."""
        self.watchers.discard(watcher)

    def close_watchers(self) -> None:
        """End every watch (server shutdown)."""
        for w in list(self.watchers):
            w.queue.put_nowait(None)
