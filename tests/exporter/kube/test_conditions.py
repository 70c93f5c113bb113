"""Valid and Scheduled conditions: reasons for bad Probes, good ones unaffected, writes only
on change."""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.exporter.exec_policy import ExecNotAllowed
from kubeprober.exporter.kube.conditions import current, desired, reason_for, status_patch
from kubeprober.exporter.kube.watching import ProbeEntry, ProbeRef
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import PROBES
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import parse_probe
from tests.exporter.kube.conftest import (
    Agent,
    AgentFactory,
    create_probe,
    eventually,
    probe_body,
    probe_status,
    tcp_check,
)
from tests.harness.faultproxy import FaultProxy

BAD = [
    # (name, spec overrides, checks, reason, message fragment)
    ("bad-cron", {"schedule": "every tuesday"}, None, "InvalidSchedule", "spec.schedule"),
    (
        "bad-prober",
        {},
        [{"name": "x", "prober": "telepathy"}],
        "UnknownProber",
        'unknown prober "telepathy"',
    ),
    (
        "bad-with",
        {},
        [{"name": "x", "prober": "tcp", "with": {"host": "h", "port": 99999}}],
        "InvalidOptions",
        "spec.checks[0].with.port",
    ),
]


async def _conditions(kube: KubeApi, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return current(await kube.get(PROBES, name, namespace=namespace))


async def test_invalid_probes_get_valid_false_and_good_ones_run(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    agent = await start_agent()
    for name, spec, checks, _, _ in BAD:
        body = probe_body(name, checks or [tcp_check("x", open_port)], **spec)
        await create_probe(kube, kube_namespace, body)
    good = await create_probe(kube, kube_namespace, probe_body("good", [tcp_check("a", open_port)]))

    for name, _, _, reason, fragment in BAD:
        conds = await eventually(
            lambda n=name: _conditions(kube, kube_namespace, n), what=f"conditions of {name}"
        )
        assert conds["Valid"]["status"] == "False", name
        assert conds["Valid"]["reason"] == reason, name
        assert fragment in conds["Valid"]["message"], conds["Valid"]["message"]
        assert conds["Scheduled"]["status"] == "False"
        assert conds["Scheduled"]["reason"] == "InvalidSpec"
        assert agent.store.get((kube_namespace, name)) is None

    status = await eventually(
        lambda: probe_status(kube, kube_namespace, "good"), what="the good probe's status"
    )
    assert status["status"] == "PASS"
    conds = await _conditions(kube, kube_namespace, "good")
    assert conds["Valid"]["status"] == "True"
    assert conds["Scheduled"] == {
        **conds["Scheduled"],
        "status": "True",
        "reason": "Scheduled",
        "observedGeneration": good["metadata"]["generation"],
    }
    obj = await kube.get(PROBES, "good", namespace=kube_namespace)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    # Written once each: neither the echo of a write through the watch nor an edit that does
    # not touch the conditions writes anything more.
    await eventually(
        lambda: agent.mode.conditions.writes >= len(BAD) + 1, what="the condition writes"
    )
    note = {"metadata": {"annotations": {"x": "y"}}}
    await kube.patch(PROBES, "good", note, namespace=kube_namespace)
    await _marker_written(agent, kube, kube_namespace, open_port)
    assert agent.mode.conditions.writes == len(BAD) + 2


async def _marker_written(agent: Agent, kube: KubeApi, namespace: str, port: int) -> None:
    """Create a Probe and wait until its conditions are written and counted.

    The watch delivers events in order and the writer writes one Probe at a time in the order
    it heard of them, so any write that events before this one cause is counted by then.
    """
    await create_probe(kube, namespace, probe_body("marker", [tcp_check("m", port)]))
    await eventually(
        lambda: agent.mode.conditions.last_written == (namespace, "marker"),
        what="the marker's conditions",
    )


async def test_invalid_edit_keeps_the_last_valid_version(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    agent = await start_agent()
    await create_probe(kube, kube_namespace, probe_body("p", [tcp_check("a", open_port)]))
    await eventually(lambda: agent.store.get((kube_namespace, "p")), what="the probe")
    broken = {"spec": {"schedule": "not a cron"}}
    await kube.patch(PROBES, "p", broken, namespace=kube_namespace)

    async def flagged() -> dict[str, dict[str, Any]] | None:
        conds = await _conditions(kube, kube_namespace, "p")
        return conds if conds.get("Valid", {}).get("status") == "False" else None

    conds = await eventually(flagged, what="Valid=False after the bad edit")
    assert conds["Scheduled"]["status"] == "True"
    assert conds["Scheduled"]["reason"] == "LastValidSpec"
    assert "generation 1" in conds["Scheduled"]["message"]
    state = agent.store.get((kube_namespace, "p"))
    assert state is not None and state.probe.schedule is None


async def test_conflicting_condition_write_is_retried(
    kube_fault_proxy: FaultProxy,
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
) -> None:
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig)
    kube_fault_proxy.fail(409, count=1, path="/probes/c/status", method="PATCH")
    await create_probe(kube, kube_namespace, probe_body("c", [tcp_check("a", open_port)]))
    conds = await eventually(lambda: _conditions(kube, kube_namespace, "c"), what="conditions")
    assert conds["Valid"]["status"] == "True"
    await _marker_written(agent, kube, kube_namespace, open_port)
    assert agent.mode.conditions.writes == 2  # the retried write, then the marker's


def _entry(raw: dict[str, Any], *, error: SpecError | None = None) -> ProbeEntry:
    meta = raw["metadata"]
    ref = ProbeRef("ns", meta["name"], "uid-1", meta.get("generation", 1))
    probe = None if error else parse_probe(raw)
    return ProbeEntry(ref, raw, probe, 1 if probe else None, error)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("spec.schedule", "InvalidSchedule"),
        ("spec.timeZone", "InvalidSchedule"),
        ("spec.checks[2].prober", "UnknownProber"),
        ("spec.checks[0].with.port", "InvalidOptions"),
        ("spec.checks[0].with", "InvalidOptions"),
        ("spec.interval", "InvalidDuration"),
        ("spec.checks[1].timeout", "InvalidDuration"),
        ("spec.layer", "InvalidSpec"),
        ("metadata.name", "InvalidSpec"),
        ("spec.template.containers", "InvalidTemplate"),
    ],
)
def test_reason_for(path: str, reason: str) -> None:
    assert reason_for(SpecError(path, "bad")) == reason


def test_reason_for_an_exec_check_not_allowed() -> None:
    assert reason_for(ExecNotAllowed("spec.checks[0].prober", "not here")) == "ExecNotAllowed"


def test_status_patch_only_when_changed_and_keeps_transition_times() -> None:
    raw = probe_body("p", [tcp_check("a", 1)], interval="30s")
    raw["metadata"]["generation"] = 3
    entry = _entry(raw)
    patch = status_patch(entry, now=1_700_000_000.0)
    assert patch is not None
    conds = {c["type"]: c for c in patch["status"]["conditions"]}
    assert patch["status"]["observedGeneration"] == 3
    assert conds["Valid"]["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert conds["Scheduled"]["message"] == "runs every 30s"

    # Applied: nothing more to write.
    entry.raw = {**raw, "status": patch["status"]}
    assert status_patch(entry, now=1_700_000_100.0) is None

    # Suspended: Scheduled flips (new time), Valid keeps its time.
    raw2 = {**entry.raw, "spec": {**raw["spec"], "suspend": True}}
    entry2 = _entry(raw2)
    patch2 = status_patch(entry2, now=1_700_000_200.0)
    assert patch2 is not None
    conds2 = {c["type"]: c for c in patch2["status"]["conditions"]}
    assert conds2["Scheduled"]["reason"] == "Suspended"
    assert conds2["Scheduled"]["lastTransitionTime"] == "2023-11-14T22:16:40Z"
    assert conds2["Valid"]["lastTransitionTime"] == "2023-11-14T22:13:20Z"


def test_valid_names_every_error_of_the_probe() -> None:
    raw = probe_body("p", [tcp_check("a", 0)], schedule="every tuesday")
    with pytest.raises(SpecError) as raised:
        parse_probe(raw)
    want = desired(_entry(raw, error=raised.value))
    assert want["Valid"]["reason"] == "InvalidSchedule"  # the first error's
    message = want["Valid"]["message"]
    assert message.startswith("spec.schedule: expected a cron expression"), message
    assert "; spec.checks[0].with.port: expected integer 1-65535, got 0" in message


def test_desired_for_an_invalid_probe() -> None:
    raw = probe_body("p", [tcp_check("a", 1)])
    want = desired(_entry(raw, error=SpecError("spec.schedule", "expected a cron expression")))
    assert want["Valid"]["status"] == "False"
    assert want["Valid"]["message"] == "spec.schedule: expected a cron expression"
    assert want["Scheduled"]["status"] == "False"
