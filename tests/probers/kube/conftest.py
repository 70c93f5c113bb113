"""Running Kubernetes probers against the harness's cluster, through the runner as the agent does.

Every check goes through :func:`run_check` with a :class:`ProberAccess` (``ctx.kube``) and
options parsed as a manifest's ``with:`` is, so a test sees what a user would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest_asyncio

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.runner import run_check
from kubeprober.probers import registry
from kubeprober.probers.options import parse_options
from kubeprober.probers.probe import Check, Probe
from kubeprober.probers.result import CheckResult

RunKube = Callable[..., Awaitable[CheckResult]]


def make_check(
    prober: str,
    options: dict[str, Any],
    *,
    timeout: float,
    namespace: str = "default",
    name: str = "p",
) -> tuple[Probe, Check]:
    """Return a one-check Probe ``namespace/name`` of ``prober`` with ``options`` as ``with:``."""
    found = registry.get(prober)
    assert found is not None, prober
    spec = parse_options(found.spec, options, "with")
    check = Check(name="c", prober=prober, spec=spec, options=options, timeout=timeout)
    probe = Probe(namespace=namespace, name=name, layer="kubernetes", checks=(check,))
    return probe, check


@pytest_asyncio.fixture
async def run_kube(prober_access: ProberAccess) -> RunKube:
    """``await run_kube("nodes", {...}, deadline=5)``: run one check, return its result."""

    async def run(
        prober: str, options: dict[str, Any], *, deadline: float = 10.0, namespace: str = "default"
    ) -> CheckResult:
        probe, check = make_check(prober, options, timeout=deadline, namespace=namespace)
        return await run_check(probe, check, registry.get(prober), kube=prober_access)

    return run
