"""Which probes run commands of their author's choosing, and whose Probes may do so.

An ``exec`` check runs a command in the agent's pod, next to its ServiceAccount token: it is
as strong as the agent. The operator's own probe files (``--probes``, ``kubeprober check``)
run it freely; Probes pushed by the aggregator need ``--accept-remote-exec``
(:mod:`exporter.assignment`); Probe objects read from the Kubernetes API run it only in the
namespaces the operator listed with ``--exec-namespaces``, since being allowed to create a
Probe must not mean being allowed to act as the agent. Container probes (``spec.template``)
are the second kind of code: a pod of the author's choosing, started by the agent with its
rights to create Jobs. :func:`code_at` finds both, so both rules cover them.

It must not decide validity of a spec (that is :mod:`probers.probe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import Probe

EXEC_PROBERS = frozenset({"exec"})
"""Probers that run a command of the Probe author's choosing on the agent's host."""
EVERY_NAMESPACE = "*"
FLAG = "--exec-namespaces"


class ExecNotAllowed(SpecError):
    """A Probe object that would run a command in a namespace the operator did not allow."""


def code_at(probe: Probe) -> tuple[str, str] | None:
    """Return the field that runs code of the author's choosing, and what it runs; or None."""
    if probe.template is not None:
        return "spec.template", "container probe: it runs a pod of its author's choosing"
    for i, check in enumerate(probe.checks):
        if check.prober in EXEC_PROBERS:
            return (
                f"spec.checks[{i}].prober",
                f"check {check.name} uses prober {check.prober}, which runs a command in the "
                "agent's pod",
            )
    return None


@dataclass(frozen=True)
class ExecNamespaces:
    """Namespaces whose Probe objects may run commands (``--exec-namespaces``)."""

    names: frozenset[str] = frozenset()
    """Namespace names, or ``*`` for every namespace. Empty (the default): none may."""

    @classmethod
    def parse(cls, text: str) -> ExecNamespaces:
        """Read ``NS,NS,...`` or ``*``; raise ValueError for both at once."""
        names = frozenset(n.strip() for n in text.split(",") if n.strip())
        if EVERY_NAMESPACE in names and len(names) > 1:
            raise ValueError("'*' means every namespace: give names or '*', not both")
        return cls(names)

    def allows(self, namespace: str) -> bool:
        """Whether Probes of ``namespace`` may run commands."""
        return EVERY_NAMESPACE in self.names or namespace in self.names

    def refusal(self, probe: Probe) -> ExecNotAllowed | None:
        """Return why this Probe object may not run, or None when it may."""
        found = code_at(probe)
        if found is None or self.allows(probe.namespace):
            return None
        path, what = found
        return ExecNotAllowed(
            path,
            f"{what}; the agent runs exec checks and container probes of Probe objects only "
            f"in the namespaces of its {FLAG} flag (now: {self}): ask its operator to add "
            f"{probe.namespace}, or use another prober",
        )

    def __str__(self) -> str:
        return ",".join(sorted(self.names)) or "none"
