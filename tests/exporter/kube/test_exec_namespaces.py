"""Probe objects run commands only in namespaces the operator allowed (``--exec-namespaces``).

Whoever may create a Probe must not gain the agent's powers: an exec check elsewhere is
refused with ``Valid=False`` naming the flag, and its command never runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.kube.conditions import current
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import JOBS, PROBES
from tests.exporter.kube.conftest import (
    FAST,
    AgentFactory,
    create_probe,
    eventually,
    probe_body,
    probe_status,
    tcp_check,
)


def touch_check(marker: Path) -> dict[str, Any]:
    """Return an exec check whose command leaves ``marker`` behind when it runs."""
    return {"name": "cmd", "prober": "exec", "with": {"command": ["touch", str(marker)]}}


async def _valid(kube: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    return current(await kube.get(PROBES, name, namespace=namespace)).get("Valid")


@pytest.mark.parametrize("allowed", ["listed", "every"])
async def test_exec_probe_runs_in_an_allowed_namespace(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, tmp_path: Path, allowed: str
) -> None:
    names = ExecNamespaces(frozenset({kube_namespace if allowed == "listed" else "*"}))
    await start_agent(settings=replace(FAST, exec_namespaces=names))
    marker = tmp_path / "ran"
    await create_probe(kube, kube_namespace, probe_body("script", [touch_check(marker)]))

    status = await eventually(
        lambda: probe_status(kube, kube_namespace, "script"), what="the exec probe's result"
    )
    assert status["status"] == "PASS", status
    assert marker.exists()
    valid = await _valid(kube, kube_namespace, "script")
    assert valid is not None and valid["status"] == "True"


async def test_exec_probe_in_another_namespace_never_runs(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, tmp_path: Path, open_port: int
) -> None:
    others = ExecNamespaces(frozenset({"kubeprober-system"}))
    agent = await start_agent(settings=replace(FAST, exec_namespaces=others))
    marker = tmp_path / "ran"
    await create_probe(kube, kube_namespace, probe_body("script", [touch_check(marker)]))
    await create_probe(kube, kube_namespace, probe_body("plain", [tcp_check("port", open_port)]))

    valid = await eventually(
        lambda: _valid(kube, kube_namespace, "script"), what="the Valid condition"
    )
    assert valid["status"] == "False"
    assert valid["reason"] == "ExecNotAllowed"
    message = valid["message"]
    assert message.startswith("spec.checks[0].prober: check cmd uses prober exec"), message
    assert "--exec-namespaces flag (now: kubeprober-system)" in message
    assert f"add {kube_namespace}" in message
    # Both Probes were handed over together; the other one ran, this one never did.
    plain = await eventually(
        lambda: probe_status(kube, kube_namespace, "plain"), what="the tcp probe's result"
    )
    assert plain["status"] == "PASS", plain
    assert not marker.exists()
    assert agent.store.get((kube_namespace, "script")) is None
    assert await probe_status(kube, kube_namespace, "script") == {}


async def test_container_probe_in_another_namespace_never_runs(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str
) -> None:
    others = ExecNamespaces(frozenset({"kubeprober-system"}))
    await start_agent(settings=replace(FAST, exec_namespaces=others))
    body = probe_body("job", [{"name": "login"}])
    body["spec"]["template"] = {"containers": [{"name": "probe", "image": "busybox"}]}
    await create_probe(kube, kube_namespace, body)

    valid = await eventually(lambda: _valid(kube, kube_namespace, "job"), what="Valid")
    assert valid["status"] == "False"
    assert valid["reason"] == "ExecNotAllowed"
    assert valid["message"].startswith(
        "spec.template: container probe: it runs a pod of its author's choosing; "
    ), valid["message"]
    assert "--exec-namespaces flag (now: kubeprober-system)" in valid["message"]
    assert (await kube.list(JOBS, namespace=kube_namespace))["items"] == []
