"""Status transitions become Events on the Probe."""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.exporter.kube.events import classify, event_body
from kubeprober.exporter.kube.watching import ProbeRef
from kubeprober.exporter.store import Transition
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import EVENTS, PROBES
from kubeprober.probers.status import Status
from tests.exporter.kube.conftest import (
    AgentFactory,
    create_probe,
    eventually,
    probe_body,
    tcp_check,
)


async def _events(kube: KubeApi, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = await kube.list(
        EVENTS, namespace=namespace, field_selector=f"involvedObject.name={name}"
    )
    return sorted(listing["items"], key=lambda e: e["metadata"]["name"])


async def test_transitions_are_events_on_the_probe(
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
    closed_port: int,
) -> None:
    agent = await start_agent()
    probe = await create_probe(kube, kube_namespace, probe_body("p", [tcp_check("a", open_port)]))
    await eventually(lambda: agent.mode.statuses.stats.writes >= 1, what="the first result")
    # Each edit restarts the run-once probe: PASS -> ERROR -> PASS.
    for port in (closed_port, open_port):
        spec = {"spec": {"checks": [tcp_check("a", port)]}}
        await kube.patch(PROBES, "p", spec, namespace=kube_namespace)
        want = 1 if port == closed_port else 2
        await eventually(lambda n=want: agent.mode.events.sent >= n, what=f"{want} events")

    events = await eventually(lambda: _events(kube, kube_namespace, "p"), what="events listed")
    assert [(e["type"], e["reason"]) for e in events] == [
        ("Warning", "CheckFailed"),
        ("Normal", "CheckRecovered"),
    ]
    failed = events[0]
    assert failed["involvedObject"] == {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "name": "p",
        "namespace": kube_namespace,
        "uid": probe["metadata"]["uid"],
    }
    assert failed["message"].startswith("check a: PASS -> ERROR: connection refused")
    assert failed["source"]["component"] == "kubeprober-agent"
    assert failed["count"] == 1
    assert agent.mode.events.dropped == 0


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, Status.PASS, None),
        (None, Status.INFO, None),
        (None, Status.ERROR, ("Warning", "CheckFailed")),
        (Status.PASS, Status.ERROR, ("Warning", "CheckFailed")),
        (Status.PASS, Status.UNKNOWN, ("Warning", "CheckUnknown")),
        (Status.PASS, Status.WARN, ("Warning", "CheckDegraded")),
        (Status.ERROR, Status.PASS, ("Normal", "CheckRecovered")),
        (Status.UNKNOWN, Status.INFO, ("Normal", "CheckRecovered")),
        (Status.WARN, Status.PASS, ("Normal", "CheckChanged")),
    ],
)
def test_classify(
    previous: Status | None, current: Status, expected: tuple[str, str] | None
) -> None:
    assert classify(Transition("ns", "p", "c", previous, current, "msg")) == expected


def test_event_message_is_bounded() -> None:
    t = Transition("ns", "p", "c", Status.PASS, Status.ERROR, "x" * 5000)
    ref = ProbeRef("ns", "p", "uid", 1)
    body = event_body(t, ref, kind="Warning", reason="CheckFailed", now=0.0, instance="me")
    assert len(body["message"]) == 1024
    assert body["metadata"]["name"].startswith("p.")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "1970-01-01T00:00:00Z"
