"""Which probers exist: built-ins by name, plus third-party ones from entry points.

The map below is the single list of built-in probers; spec validation, the runner and
``kubeprober probers`` all read it from here. A plugin is a module following
:mod:`probers.sdk`, published under the entry-point group ``kubeprober.probers`` with the
prober's name as the entry-point name.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from kubeprober.kube.resources import Permission
from kubeprober.probers.sdk import ProbeFunction

ENTRY_POINT_GROUP = "kubeprober.probers"

BUILTIN: dict[str, str] = {
    "certificates": "kubeprober.probers.certificates",
    "addons": "kubeprober.probers.addons",
    "dns": "kubeprober.probers.dns",
    "etcd": "kubeprober.probers.etcd",
    "exec": "kubeprober.probers.exec",
    "expiry": "kubeprober.probers.expiry",
    "http": "kubeprober.probers.http",
    "ingress": "kubeprober.probers.ingress",
    "mysql": "kubeprober.probers.mysql",
    "namespace": "kubeprober.probers.namespace",
    "nodes": "kubeprober.probers.nodes",
    "pod-lifecycle": "kubeprober.probers.pod_lifecycle",
    "redis": "kubeprober.probers.redis",
    "service": "kubeprober.probers.service",
    "tcp": "kubeprober.probers.tcp",
    "tls": "kubeprober.probers.tls",
    "webhooks": "kubeprober.probers.webhooks",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prober:
    """A registered prober: its name, one-line description, options class and probe function."""

    name: str
    description: str
    spec: type
    probe: ProbeFunction
    origin: str
    """``builtin`` or the distribution a plugin came from."""
    permissions: tuple[Permission, ...] = ()
    """The Kubernetes grants it needs (the module's ``PERMISSIONS``), for the RBAC manifests."""


def _from_module(name: str, module: ModuleType, origin: str) -> Prober:
    missing = [a for a in ("DESCRIPTION", "Spec", "probe") if not hasattr(module, a)]
    if missing:
        raise TypeError(f"prober {name!r} ({module.__name__}) lacks {', '.join(missing)}")
    needs = tuple(getattr(module, "PERMISSIONS", ()))
    return Prober(name, module.DESCRIPTION, module.Spec, module.probe, origin, needs)


@functools.cache
def probers() -> dict[str, Prober]:
    """Every prober by name: built-ins first; a plugin cannot replace a built-in."""
    found = {
        name: _from_module(name, importlib.import_module(mod), "builtin")
        for name, mod in BUILTIN.items()
    }
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("plugin prober %r from %s ignored: the name is taken", ep.name, ep.value)
            continue
        try:
            origin = ep.dist.name if ep.dist else ep.value
            found[ep.name] = _from_module(ep.name, ep.load(), origin)
        except Exception as exc:  # a broken plugin must not take the agent down
            log.error("plugin prober %r from %s failed to load: %s", ep.name, ep.value, exc)
    return found


def get(name: str) -> Prober | None:
    """Return the prober called ``name``, or None."""
    return probers().get(name)
