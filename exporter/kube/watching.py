"""Keep the agent's probe set in step with the Probe objects in the cluster.

Exists to turn the Probe objects (followed by the shared layer's list-then-watch,
:mod:`kubeprober.kube.watching`) into the validated probe set the scheduler runs, with a
validation verdict per Probe. One invalid Probe never affects the others: an invalid edit
keeps the last valid version of that Probe running, as ``--probes`` files do. A Probe whose
exec check the operator's ``--exec-namespaces`` does not allow is invalid like any other
(:mod:`kubeprober.exporter.exec_policy`). It must not write to the API (see
:mod:`kubeprober.exporter.kube.conditions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import PROBES
from kubeprober.kube.streams import WatchEvent
from kubeprober.kube.watching import Key, ListWatch, Selection, key_of
from kubeprober.pacing import BackoffSettings
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import Probe, parse_probe

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
PERMISSIONS = Selection(PROBES).permissions


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
        self._on_change = on_change
        self.settings = settings or WatchSettings()
        self.entries: dict[Key, ProbeEntry] = {}
        """Every Probe object seen, by ``(namespace, name)``. Owned by :meth:`run`."""
        selection = Selection(
            PROBES, namespace=self.settings.namespace, backoff=self.settings.backoff
        )
        self.watch = ListWatch(api, selection, on_list=self._replace, on_event=self._handle)

    @property
    def lists(self) -> int:
        """How many times the watcher listed (the first time plus every relist), for tests."""
        return self.watch.lists

    @property
    def resource_version(self) -> str | None:
        """Where the next watch starts; None lists first."""
        return self.watch.resource_version

    @resource_version.setter
    def resource_version(self, version: str | None) -> None:
        self.watch.resource_version = version

    def probes(self) -> list[Probe]:
        """Return the probes to run: every valid Probe, or its last valid version."""
        return [e.probe for e in self.entries.values() if e.probe is not None]

    def ref(self, key: Key) -> ProbeRef | None:
        """Return the identity of the Probe at ``key``, if it exists."""
        entry = self.entries.get(key)
        return entry.ref if entry is not None else None

    async def run(self) -> None:
        """List and watch until cancelled; never raises API errors."""
        await self.watch.run()

    def _replace(self, items: list[dict[str, Any]]) -> None:
        listed = {key_of(obj): obj for obj in items}
        changed = {k for k in self.entries if k not in listed}
        for key in changed:
            del self.entries[key]
        for obj in listed.values():
            changed |= self._upsert(obj)
        self._on_change(changed)

    def _handle(self, event: WatchEvent) -> None:
        key = key_of(event.object)
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
