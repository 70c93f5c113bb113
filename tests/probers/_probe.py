"""Run one prober as the runner would, for tests that look at the Outcome and the Context."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kubeprober.probers.options import parse_options
from kubeprober.probers.sdk import CheckFailed, Context, Kube, Outcome


async def probe(
    prober: ModuleType,
    options: dict[str, Any],
    *,
    kube: Kube | None = None,
    io_timeout: float = 5.0,
) -> tuple[Outcome, Context]:
    """Parse ``options`` as a manifest's ``with:`` and probe; CheckFailed becomes its Outcome."""
    spec = parse_options(prober.Spec, options, "with")
    ctx = Context("default", "probe", "check", timeout=5.0, kube_api=kube)
    try:
        return await prober.probe(spec, ctx), ctx
    except CheckFailed as exc:
        return Outcome(exc.status, str(exc)), ctx
