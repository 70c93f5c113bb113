"""Keep the agent's probe set in step with the Probe objects in the cluster: list, then watch.

Exists to turn a stream of API events into the validated probe set the scheduler runs, with
a validation verdict per Probe. It lists, then watches from the list's resourceVersion
(following bookmarks), relists when the version expired (410 Gone), and backs off on any
other failure, resuming the watch from the last version seen. One invalid Probe never
affects the others: an invalid edit keeps the last valid version of that Probe running,
as ``--probes`` files do. A Probe whose exec check the operator's ``--exec-namespaces`` does
not allow is invalid like any other (:mod:`exporter.exec_policy`). It must not write to the
API (see :mod:`exporter.kube.conditions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.kube.api import KubeApi
from kubeprober.exporter.kube.errors import Gone, KubeError
from kubeprober.exporter.kube.limits import Backoff, BackoffSettings
from kubeprober.exporter.kube.resources import PROBES
from kubeprober.exporter.kube.streams import WatchEvent
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import Probe, parse_probe

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
PERMISSIONS = (PROBES.permission("list"), PROBES.permission("watch"))
Key = tuple[str, str]


@dataclass(frozen=True)
class ProbeRef:
    """Identity of one Probe object, for owner references, events and conditions."""

    namespace: str
    name: str
    uid: str
    generation: int


@dataclass
class ProbeEntry:
    """What the agent knows of one Probe object. Owned by the watcher's task."""

    ref: ProbeRef
    raw: dict[str, Any]
    """The object as last seen (its status holds the conditions written so far)."""
    probe: Probe | None = None
    """The probe to run: this version if valid, else the last valid version seen."""
    probe_generation: int | None = None
    """The generation ``probe`` was parsed from."""
    error: SpecError | None = None
    """Why the current version is invalid; None when it is valid."""


@dataclass(frozen=True)
class WatchSettings:
    """Where to watch and how to retry."""

    namespace: str | None = None
    """The one namespace to watch; None watches all namespaces (needs a ClusterRoleBinding)."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    exec_namespaces: ExecNamespaces = field(default_factory=ExecNamespaces)
    """Namespaces whose Probes may run commands; none by default."""


def ref_of(obj: dict[str, Any]) -> ProbeRef:
    """Return the identity of an API object."""
    meta = obj.get("metadata") or {}
    return ProbeRef(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
    )


class ProbeWatcher:
    """Lists and watches Probes; calls ``on_change`` with the keys whose entries changed."""

    def __init__(
        self,
        api: KubeApi,
        on_change: Callable[[set[Key]], None],
        *,
        settings: WatchSettings | None = None,
    ) -> None:
        self._api = api
        self._on_change = on_change
        self.settings = settings or WatchSettings()
        self.entries: dict[Key, ProbeEntry] = {}
        """Every Probe object seen, by ``(namespace, name)``. Owned by :meth:`run`."""
        self.resource_version: str | None = None
        self.lists = 0
        """How many times the watcher listed (the first time plus every relist), for tests."""
        self._backoff = Backoff(self.settings.backoff)

    def probes(self) -> list[Probe]:
        """Return the probes to run: every valid Probe, or its last valid version."""
        return [e.probe for e in self.entries.values() if e.probe is not None]

    def ref(self, key: Key) -> ProbeRef | None:
        """Return the identity of the Probe at ``key``, if it exists."""
        entry = self.entries.get(key)
        return entry.ref if entry is not None else None

    async def run(self) -> None:
        """List and watch until cancelled; never raises API errors."""
        namespace = self.settings.namespace
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                async with self._api.watch(
                    PROBES, namespace=namespace, resource_version=self.resource_version
                ) as events:
                    async for event in events:
                        self._handle(event)
            except Gone as exc:
                log.info("Probe watch expired (%s); listing again", exc)
                self.resource_version = None
            except KubeError as exc:
                delay = self._backoff.next_delay()
                log.warning("Probe watch failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        listing = await self._api.list(PROBES, namespace=self.settings.namespace)
        self.lists += 1
        items = {(r.namespace, r.name): obj for obj in listing["items"] if (r := ref_of(obj)).name}
        changed = {k for k in self.entries if k not in items}
        for key in changed:
            del self.entries[key]
        for obj in items.values():
            changed |= self._upsert(obj)
        self.resource_version = listing["metadata"].get("resourceVersion")
        self._backoff.reset()
        log.info("listed %d Probes (resourceVersion %s)", len(items), self.resource_version)
        self._on_change(changed)

    def _handle(self, event: WatchEvent) -> None:
        self.resource_version = event.resource_version or self.resource_version
        self._backoff.reset()
        if event.type == "BOOKMARK":
            return
        ref = ref_of(event.object)
        key = (ref.namespace, ref.name)
        if event.type == "DELETED":
            if self.entries.pop(key, None) is not None:
                self._on_change({key})
            return
        if event.type in ("ADDED", "MODIFIED"):
            changed = self._upsert(event.object)
            if changed:
                self._on_change(changed)

    def _upsert(self, obj: dict[str, Any]) -> set[Key]:
        """Store one object, parsing its spec again only when its generation moved."""
        ref = ref_of(obj)
        key = (ref.namespace, ref.name)
        entry = self.entries.get(key)
        if entry is not None and entry.raw == obj:
            return set()
        if entry is None or entry.ref.uid != ref.uid:
            entry = ProbeEntry(ref, obj)  # a new object (or recreated): no earlier version
            self.entries[key] = entry
            self._parse(entry)
        else:
            # Compare what parse_probe reads rather than trust generation: a status write
            # (our conditions) changes neither, and parsing costs more than comparing.
            respec = _parsed_part(obj) != _parsed_part(entry.raw)
            entry.ref, entry.raw = ref, obj
            if respec:
                self._parse(entry)
        return {key}

    def _parse(self, entry: ProbeEntry) -> None:
        try:
            probe = parse_probe(entry.raw, source=SOURCE)
            refusal = self.settings.exec_namespaces.refusal(probe)
            if refusal is not None:
                raise refusal
        except SpecError as exc:
            entry.error = exc
            kept = " (keeping its last valid version)" if entry.probe is not None else ""
            log.error("invalid Probe %s/%s: %s%s", entry.ref.namespace, entry.ref.name, exc, kept)
            return
        entry.error = None
        entry.probe = probe
        entry.probe_generation = entry.ref.generation


def _parsed_part(obj: dict[str, Any]) -> tuple[Any, ...]:
    return (obj.get("apiVersion"), obj.get("spec"), (obj.get("metadata") or {}).get("labels"))
