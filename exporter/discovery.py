"""Follow the Kubernetes objects checks take their targets from (``targets.fromObjects``).

Exists so a check's targets follow the cluster live: one list-and-watch (the shared layer's
:class:`~kubeprober.kube.watching.Mirror`) per distinct selection, shared by every check
that asks for it; on each change the targets of those checks are worked out again and handed
to ``on_targets`` (the agent updates the store and runs new targets at once). A target's
run is kept while its fields stay the same, so an event binds only what changed. Without
an API (file mode, ``check``) such checks get no targets and say why. It must not run probes
nor write to the API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kubeprober.exporter.store import TargetSet
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import KubeError
from kubeprober.kube.resources import (
    ENDPOINT_SLICES,
    INGRESSES,
    NODES,
    PODS,
    SERVICES,
    Permission,
    Resource,
)
from kubeprober.kube.watching import Key, Mirror, Selection
from kubeprober.pacing import BackoffSettings
from kubeprober.probers.probe import Check, Probe, bind
from kubeprober.probers.targets import FromObjects, Target, discovered
from kubeprober.tasks import spawn, stop

log = logging.getLogger(__name__)

RESOURCES: dict[str, Resource] = {
    "Service": SERVICES,
    "Ingress": INGRESSES,
    "EndpointSlice": ENDPOINT_SLICES,
    "Pod": PODS,
    "Node": NODES,
}
PERMISSIONS: tuple[Permission, ...] = tuple(
    p for resource in RESOURCES.values() for p in Selection(resource).permissions
)
"""Following any kind of target: list and watch (Nodes are cluster-scoped)."""
NO_API = (
    "no Kubernetes API to discover targets from: run the agent in Kubernetes mode, or check "
    "--kubeconfig"
)

User = tuple[Key, str]
"""A check that discovers: its probe's key and its name."""


@dataclass
class _Source:
    """One followed selection and the checks that use it. Owned by the event loop."""

    mirror: Mirror
    task: asyncio.Task[None]
    users: set[User] = field(default_factory=set)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the objects were listed, or listing them failed: the checks know their lot."""


class Discovery:
    """Keeps one Mirror per selection in use and hands each check its current targets."""

    def __init__(
        self,
        api: KubeApi | None,
        on_targets: Callable[[Key, str, TargetSet], None],
        *,
        backoff: BackoffSettings | None = None,
    ) -> None:
        self._api = api
        self._on_targets = on_targets
        self._backoff = backoff or BackoffSettings()
        # All owned by the event loop (apply and the mirrors' callbacks):
        self._checks: dict[User, Check] = {}
        self._sources: dict[Selection, _Source] = {}
        self._runs: dict[User, dict[Target, Check]] = {}
        self._left_out: dict[User, int] = {}

    @property
    def watches(self) -> int:
        """Selections followed right now, for tests."""
        return len(self._sources)

    def apply(self, probes: Iterable[Probe]) -> None:
        """Follow what the checks of ``probes`` discover; stop following what none uses."""
        wanted = {
            (p.key, c.name): c
            for p in probes
            for c in p.checks
            if c.targets is not None and c.targets.discovery is not None
        }
        for user, check in list(self._checks.items()):
            if wanted.get(user) != check:
                self._leave(user)
        for user, check in wanted.items():
            if user not in self._checks:
                self._join(user, check)

    async def settled(self) -> None:
        """Wait until every selection followed now was listed once, or failed to be."""
        await asyncio.gather(*(s.settled.wait() for s in self._sources.values()))

    async def stop(self) -> None:
        """Stop every watch and wait for them."""
        tasks = [s.task for s in self._sources.values()]
        self._sources.clear()
        self._checks.clear()
        self._runs.clear()
        await stop(tasks)

    def _selection(self, spec: FromObjects) -> Selection:
        return Selection(
            RESOURCES[spec.kind],
            namespace=spec.namespace,
            label_selector=spec.label_selector,
            field_selector=spec.field_selector,
            backoff=self._backoff,
        )

    def _join(self, user: User, check: Check) -> None:
        self._checks[user] = check
        assert check.targets is not None and check.targets.discovery is not None
        if self._api is None:
            self._on_targets(user[0], user[1], TargetSet(message=NO_API))
            return
        selection = self._selection(check.targets.discovery)
        source = self._sources.get(selection)
        if source is None:
            mirror = Mirror(
                self._api,
                selection,
                on_change=lambda: self._changed(selection),
                on_failure=lambda exc: self._failed(selection, exc),
            )
            task = spawn(mirror.watch.run(), f"discover:{selection.describe()}")
            source = self._sources[selection] = _Source(mirror, task)
        source.users.add(user)
        if source.mirror.watch.synced.is_set():
            self._push(user, source.mirror)

    def _leave(self, user: User) -> None:
        check = self._checks.pop(user)
        self._runs.pop(user, None)
        self._left_out.pop(user, None)
        if self._api is None or check.targets is None or check.targets.discovery is None:
            return
        selection = self._selection(check.targets.discovery)
        source = self._sources[selection]
        source.users.discard(user)
        if not source.users:
            del self._sources[selection]
            source.task.cancel()

    def _changed(self, selection: Selection) -> None:
        source = self._sources.get(selection)
        if source is None:
            return  # stopped while its last event was handed over
        source.settled.set()
        for user in sorted(source.users):
            self._push(user, source.mirror)

    def _failed(self, selection: Selection, exc: KubeError) -> None:
        """Say why a check has no targets yet; once listed, it keeps the last ones known."""
        source = self._sources.get(selection)
        if source is None or source.mirror.watch.synced.is_set():
            return
        source.settled.set()
        message = f"cannot follow {selection.describe()}: {exc}"
        for user in sorted(source.users):
            self._on_targets(user[0], user[1], TargetSet(message=message))

    def _push(self, user: User, mirror: Mirror) -> None:
        """Work out one check's targets from its mirror and hand them over."""
        check = self._checks[user]
        assert check.targets is not None and check.targets.discovery is not None
        found: dict[str, Target] = {}
        for obj in mirror.objects.values():
            for target in discovered(check.targets.discovery, check.targets.used, obj):
                found.setdefault(target.name, target)  # an EndpointSlice address twice
        known = self._runs.get(user, {})
        runs: dict[Target, Check] = {}

        def bound(target: Target) -> Check:
            run = known.get(target) or bind(check, target)
            runs[target] = run
            return run

        targets = TargetSet.of(check, found.values(), bound=bound)
        self._runs[user] = runs
        if targets.left_out != self._left_out.get(user, 0):
            self._left_out[user] = targets.left_out
            log.warning(
                "%s/%s check %s: %d targets beyond its cap of %d left out",
                user[0][0],
                user[0][1],
                user[1],
                targets.left_out,
                check.targets.max,
            )
        self._on_targets(user[0], user[1], targets)
