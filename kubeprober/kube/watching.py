"""List, then watch: one resource's objects kept in step with the API server.

Exists so every consumer (the agent's Probe watcher, the aggregator's fleet) follows objects
by the same rules: list (all pages), watch from the list's resourceVersion following
bookmarks, list again when the version expired (410 Gone), and back off on any other
failure, resuming the watch from the last version seen. It hands what it sees to its
consumer's callbacks and must not interpret objects itself; :class:`Mirror` is the consumer
for those that only need the current objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from kubeprober.interning import interned
from kubeprober.kube.api import JSON, KubeApi
from kubeprober.kube.errors import Gone, KubeError
from kubeprober.kube.resources import Permission, Resource
from kubeprober.kube.streams import WatchEvent
from kubeprober.outage import Outage
from kubeprober.pacing import Backoff, BackoffSettings

log = logging.getLogger(__name__)
Key = tuple[str, str]
"""An object's ``(namespace, name)``."""


def key_of(obj: JSON) -> Key:
    """Return an object's ``(namespace, name)``."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


@dataclass(frozen=True)
class Selection:
    """Which objects of a resource to follow."""

    resource: Resource
    namespace: str | None = None
    """One namespace; None follows all namespaces (needs a ClusterRoleBinding)."""
    label_selector: str | None = None
    field_selector: str | None = None
    backoff: BackoffSettings = field(default_factory=BackoffSettings)

    @property
    def permissions(self) -> tuple[Permission, ...]:
        """The grants following these objects needs."""
        return (self.resource.permission("list"), self.resource.permission("watch"))

    def describe(self) -> str:
        """Name what is followed, for logs."""
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        labels = f" labelled {self.label_selector}" if self.label_selector else ""
        fields = f" with {self.field_selector}" if self.field_selector else ""
        return f"{self.resource.plural}{labels}{fields} in {where}"


class ListWatch:
    """Lists and watches one selection; hands every listing and event to its consumer."""

    def __init__(
        self,
        api: KubeApi,
        selection: Selection,
        *,
        on_list: Callable[[list[JSON]], None],
        on_event: Callable[[WatchEvent], None],
        on_failure: Callable[[KubeError], None] = lambda exc: None,
    ) -> None:
        """``on_failure`` hears of each failed list or watch (it is retried anyway), so a
        consumer can say why it has nothing yet."""
        self._api = api
        self.selection = selection
        self._on_list = on_list
        self._on_event = on_event
        self._on_failure = on_failure
        self.resource_version: str | None = None
        """Where the next watch starts; None lists first. Owned by :meth:`run`."""
        self.lists = 0
        """How many times it listed (the first time plus every relist), for tests."""
        self.synced = asyncio.Event()
        """Set once the first listing was handed on."""
        self._backoff = Backoff(selection.backoff)
        self._outage = Outage(log, f"watch of {selection.describe()}")

    @property
    def failures(self) -> int:
        """Failed attempts in a row since the last good listing or event."""
        return self._backoff.failures

    async def run(self) -> None:
        """List and watch until cancelled; never raises API errors (they are logged)."""
        s = self.selection
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                async with self._api.watch(
                    s.resource,
                    namespace=s.namespace,
                    resource_version=self.resource_version,
                    label_selector=s.label_selector,
                    field_selector=s.field_selector,
                ) as events:
                    async for event in events:
                        self.resource_version = event.resource_version or self.resource_version
                        self._working()
                        if event.type != "BOOKMARK":
                            self._on_event(event)
            except Gone as exc:
                log.info("watch of %s expired (%s); listing again", s.describe(), exc)
                self.resource_version = None
            except KubeError as exc:
                delay = self._backoff.next_delay()
                self._outage.failed(str(exc), delay)
                self._on_failure(exc)
                await asyncio.sleep(delay)

    def _working(self) -> None:
        self._outage.succeeded()
        self._backoff.reset()

    async def _list(self) -> None:
        s = self.selection
        listing = await self._api.list(
            s.resource,
            namespace=s.namespace,
            label_selector=s.label_selector,
            field_selector=s.field_selector,
        )
        self.lists += 1
        self.resource_version = listing["metadata"].get("resourceVersion")
        self._working()
        items = [obj for obj in listing["items"] if key_of(obj)[1]]
        log.info(
            "listed %d %s (resourceVersion %s)", len(items), s.describe(), self.resource_version
        )
        self._on_list(items)
        self.synced.set()


class Mirror:
    """The current objects of a selection, by key, with apiVersion and kind filled in,
    ``metadata.managedFields`` left out and their strings :func:`interned`.

    ``on_change`` is called (from the watching task) whenever an object was added, changed
    or removed; given ``matters`` (what of an object its consumer reads), a change that
    leaves that the same calls nothing.
    """

    def __init__(
        self,
        api: KubeApi,
        selection: Selection,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_failure: Callable[[KubeError], None] = lambda exc: None,
        matters: Callable[[JSON], object] | None = None,
    ) -> None:
        self.objects: dict[Key, JSON] = {}
        """Owned by the watching task; readers on the same loop see a consistent dict."""
        self.indexed: dict[str, set[Key]] = {}
        """After :meth:`index_by`: the keys of the objects by what its function says of each,
        so a consumer interested in a few of thousands does not walk them all."""
        self._index: Callable[[JSON], str] | None = None
        self._index_of: dict[Key, str] = {}
        self._on_change = on_change
        self._matters = matters
        self.watch = ListWatch(
            api, selection, on_list=self._replace, on_event=self._apply, on_failure=on_failure
        )

    def index_by(self, index: Callable[[JSON], str]) -> None:
        """Keep :attr:`indexed` by ``index`` of each object from now on (one index a mirror,
        as client-go's indexers keep theirs)."""
        self._index, self._index_of, self.indexed = index, {}, {}
        for key, obj in self.objects.items():
            self._reindex(key, obj)

    def _reindex(self, key: Key, obj: JSON | None) -> None:
        if self._index is None:
            return
        was = self._index_of.pop(key, None)
        if was is not None:
            self.indexed[was].discard(key)
            if not self.indexed[was]:
                del self.indexed[was]
        if obj is not None:
            value = self._index_of[key] = self._index(obj)
            self.indexed.setdefault(value, set()).add(key)

    def _filled(self, obj: JSON) -> JSON:
        # List items of built-in kinds come without them; parsers of manifests need both.
        resource = self.watch.selection.resource
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        # The API server's field-ownership bookkeeping, read by no consumer: once its status
        # is written a Cluster carries a tree of dozens of small dicts, and every aggregator
        # replica mirrors every Cluster of the fleet.
        (obj.get("metadata") or {}).pop("managedFields", None)
        return interned(obj)

    def _replace(self, items: list[JSON]) -> None:
        self.objects = {key_of(obj): self._filled(obj) for obj in items}
        if self._index is not None:
            self.index_by(self._index)
        self._on_change()

    def _apply(self, event: WatchEvent) -> None:
        key = key_of(event.object)
        if event.type == "DELETED":
            self._reindex(key, None)
            if self.objects.pop(key, None) is not None:
                self._on_change()
        elif event.type in ("ADDED", "MODIFIED"):
            before = self.objects.get(key)
            after = self.objects[key] = self._filled(event.object)
            self._reindex(key, after)
            if (
                before is None
                or self._matters is None
                or (self._matters(before) != self._matters(after))
            ):
                self._on_change()
