"""Which probes run commands of their author's choosing, and whose Probes may do so.

An ``exec`` check runs a command in the agent's pod, next to its ServiceAccount token: it is
as strong as the agent. The operator's own probe files (``--probes``, ``kubeprober check``)
run it freely; Probes pushed by the aggregator need ``--accept-remote-exec``
(:mod:`exporter.assignment`); Probe objects read from the Kubernetes API run it only in the
namespaces the operator listed with ``--exec-namespaces``, since being allowed to create a
Probe must not mean being allowed to act as the agent. Container probes (``spec.template``)
will be the second kind of code: :func:`probers.probe.parse_probe` refuses them until they
run, and whoever makes them run adds them to :func:`first_exec`, so both rules cover them.

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


def first_exec(probe: Probe) -> int | None:
    """Return the index of the first check that runs a command, or None."""
    return next((i for i, c in enumerate(probe.checks) if c.prober in EXEC_PROBERS), None)


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
        index = first_exec(probe)
        if index is None or self.allows(probe.namespace):
            return None
        check = probe.checks[index]
        return ExecNotAllowed(
            f"spec.checks[{index}].prober",
            f"check {check.name} uses prober {check.prober}, which runs a command in the "
            f"agent's pod; the agent runs exec checks of Probe objects only in the namespaces "
            f"of its {FLAG} flag (now: {self}): ask its operator to add {probe.namespace}, "
            f"or use another prober",
        )

    def __str__(self) -> str:
        return ",".join(sorted(self.names)) or "none"
