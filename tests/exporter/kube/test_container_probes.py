"""Container probes for real: a Job per run, its pod run by the simulator reports to /report.

The agent runs in-process, listening on the simulator's host address so pods reach it; the
pods' command runs as a local process in the simulator's pod network namespace.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.exporter.agent import AgentSettings, run_agent
from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.kube.containers import (
    PROBE_LABEL,
    RUN_LABEL,
    UNOWNED_JOB_TTL,
    ContainerRunner,
    ContainerSettings,
)
from kubeprober.exporter.kube.watching import ProbeRef
from kubeprober.exporter.reports import RunDesk
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import CONFIG_MAPS, JOBS
from kubeprober.probers.probe import parse_probe
from tests.aggregator._fleet_harness import Service
from tests.binaries import binary
from tests.exporter.kube.conftest import (
    checks_by_name,
    create_probe,
    eventually,
    old_job,
    probe_status,
)
from tests.harness.simulator import LOCAL_IMAGE, UNPULLABLE_IMAGE, Simulator
from tests.manifests.test_crds import schema

SDK_SCRIPT = """
import os
from kubeprober.probers.container_sdk import report, run_checks
from kubeprober.probers.sdk import Outcome
report(*run_checks({
    "login": lambda: None,
    "order": lambda: Outcome.warn("slow order at " + os.environ["SHOP_URL"]),
}, timeout=5))
"""
# Exactly what the original kubeprober SDK sends: inline fields plus checkers, to the URL its
# environment holds, with no token header.
ORIGINAL_SCRIPT = """
import json, os, urllib.request
body = {
    "probeName": os.environ["KUBEPROBER_PROBE_NAME"],
    "probeNamespace": os.environ["KUBEPROBER_PROBE_NAMESPACE"],
    "name": "legacy-item", "status": "ERROR", "message": "",
    "lastRun": "2026-12-04T10:00:00.5+00:00",
    "checkers": [
        {"name": "login", "status": "INFO", "message": "", "lastRun": "2026-12-04T10:00:00Z"},
        {"name": "order", "status": "error", "message": "cart lost",
         "lastRun": "2026-12-04T10:00:00Z"},
    ],
}
request = urllib.request.Request(
    os.environ["KUBEPROBER_STATUS_REPORT_URL"], data=json.dumps(body).encode(),
    method="POST", headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(request).status)
"""


def container_probe(
    name: str, command: list[str], *, checks: tuple[str, ...] = ("login", "order"), **spec: Any
) -> dict[str, Any]:
    """A container Probe whose container runs ``command`` as a local process."""
    container = {"name": "probe", "image": LOCAL_IMAGE, "command": command}
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": {
            "layer": "application",
            "timeout": "20s",
            "template": {"containers": [container]},
            "checks": [{"name": c} for c in checks],
            **spec,
        },
    }


def python(script: str) -> list[str]:
    """The command running ``script`` with this interpreter (the SDK is importable there)."""
    return [sys.executable, "-c", script]


async def metrics(agent: Service) -> str:
    """The agent's /metrics text."""
    async with aiohttp.ClientSession() as http, http.get(agent.url + "/metrics") as answer:
        return await answer.text()


StartAgent = Callable[..., Awaitable[Service]]


@pytest_asyncio.fixture
async def start_container_agent(
    kube_config_path: Path, kube_namespace: str, kube_simulator: Simulator, crds: None
) -> AsyncIterator[StartAgent]:
    """Start agents running the test namespace's Probes, container probes allowed there."""
    agents: list[Service] = []

    async def start(**containers: Any) -> Service:
        settings = AgentSettings(
            probes=None,
            kubeconfig=kube_config_path,
            namespace=kube_namespace,
            host=kube_simulator.host_ip,
            port=0,
            exec_namespaces=ExecNamespaces(frozenset({kube_namespace})),
            containers=replace(ContainerSettings(poll_interval=0.2, grace=1.0), **containers),
        )
        agent = Service("agent", run_agent, settings)
        agents.append(agent)
        return await agent.start()

    try:
        yield start
    finally:
        for agent in agents:
            await agent.stop()


def samples(text: str, family: str) -> dict[tuple[str, str, str], float]:
    """``{(probe, check, status): value}`` of one family of the agent's metrics."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == family:
                key = (s.labels["probe"], s.labels["check"], s.labels.get("status", ""))
                out[key] = s.value
    return out


async def finished(kube: KubeApi, namespace: str, name: str) -> dict[str, dict[str, Any]] | None:
    """The ProbeStatus checks once every one has a result."""
    checks = checks_by_name(await probe_status(kube, namespace, name))
    return checks if checks and all(c.get("status") for c in checks.values()) else None


async def test_containers_report_to_probestatus_and_metrics(
    start_container_agent: StartAgent, kube: KubeApi, kube_namespace: str
) -> None:
    """One probe through the SDK, one sending the original kubeprober payload; old Jobs go."""
    await kube.create(
        CONFIG_MAPS,
        {"metadata": {"name": "probe-env"}, "data": {"SHOP_URL": "https://shop.test"}},
        namespace=kube_namespace,
    )
    for i in range(3):  # earlier runs' Jobs (suspended: no pods)
        await kube.create(JOBS, old_job(f"shop-old{i}", "shop"), namespace=kube_namespace)
    agent = await start_container_agent(env_config_map="probe-env", keep_jobs=2)
    probe = await create_probe(kube, kube_namespace, container_probe("shop", python(SDK_SCRIPT)))
    await create_probe(kube, kube_namespace, container_probe("legacy", python(ORIGINAL_SCRIPT)))

    shop = await eventually(lambda: finished(kube, kube_namespace, "shop"), within=30)
    legacy = await eventually(lambda: finished(kube, kube_namespace, "legacy"), within=30)
    assert {n: (c["status"], c["message"]) for n, c in shop.items()} == {
        "login": ("PASS", ""),
        "order": ("WARN", "slow order at https://shop.test"),
    }
    assert {n: (c["status"], c["message"]) for n, c in legacy.items()} == {
        "login": ("INFO", ""),
        "order": ("ERROR", "cart lost"),
    }
    status = samples(await metrics(agent), "kubeprober_check_status")
    assert status[("shop", "login", "PASS")] == 1 and status[("shop", "order", "WARN")] == 1
    assert status[("legacy", "login", "INFO")] == 1
    assert status[("legacy", "order", "ERROR")] == 1

    # Old Jobs are deleted after the run (before its result is recorded): this run's Job and
    # the newest earlier one (of three created within a second or two: any) are kept.
    jobs = await kube.list(JOBS, namespace=kube_namespace, label_selector=f"{PROBE_LABEL}=shop")
    (job,) = [j for j in jobs["items"] if RUN_LABEL in j["metadata"]["labels"]]
    assert len(jobs["items"]) == 2
    meta, spec = job["metadata"], job["spec"]
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Probe",
        "shop",
        probe["metadata"]["uid"],
    )
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 20)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["metadata"]["labels"][RUN_LABEL] == meta["labels"][RUN_LABEL]
    env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
    token = env["KUBEPROBER_RUN_TOKEN"]
    assert env["KUBEPROBER_REPORT_URL"] == f"{agent.url}/report"
    assert env["KUBEPROBER_STATUS_REPORT_URL"] == f"{agent.url}/report/{token}"
    assert env["KUBEPROBER_RUN_ID"] == meta["labels"][RUN_LABEL]
    assert (env["KUBEPROBER_PROBE_NAME"], env["KUBEPROBER_PROBE_NAMESPACE"]) == (
        "shop",
        kube_namespace,
    )
    assert env["KUBEPROBER_DEADLINE"].endswith("Z") and env["SHOP_URL"] == "https://shop.test"


async def test_runs_that_cannot_report_end_unknown_with_the_reason(
    start_container_agent: StartAgent,
    kube: KubeApi,
    kube_namespace: str,
) -> None:
    # A report after the deadline is refused (tests/exporter/test_report_api.py); here the
    # pod cannot send one: at activeDeadlineSeconds a real Job controller deletes it.
    await start_container_agent()
    quick: dict[str, Any] = {"timeout": "2s", "checks": ("login",)}
    silent = container_probe("silent", ["sleep", "60"], **quick)
    failing = container_probe("failing", ["sh", "-c", "echo broken; exit 3"], **quick)
    unpullable = container_probe("unpullable", ["true"], **quick)
    unpullable["spec"]["template"]["containers"][0]["image"] = f"{UNPULLABLE_IMAGE}:1.0"
    nowhere = container_probe("nowhere", ["true"], **quick)
    nowhere["spec"]["template"]["nodeSelector"] = {"kubeprober.io/no-such-node": "true"}
    for body in (silent, failing, unpullable, nowhere):
        await create_probe(kube, kube_namespace, body)

    async def all_done() -> dict[str, dict[str, Any]] | None:
        found = {}
        for name in ("silent", "failing", "unpullable", "nowhere"):
            checks = await finished(kube, kube_namespace, name)
            if checks is None:
                return None
            found[name] = checks["login"]
        return found

    done = await eventually(all_done, within=40)
    assert {n: c["status"] for n, c in done.items()} == dict.fromkeys(done, "UNKNOWN")
    message = {n: c["message"] for n, c in done.items()}
    assert message["silent"].startswith("no report within 2s: pod silent-"), message
    assert message["silent"].endswith(" is Running")
    assert message["failing"].startswith("pod failing-"), message
    assert message["failing"].endswith(
        "failed: container probe exited with code 3 (Error) without reporting this check"
    )
    assert f"cannot pull image {UNPULLABLE_IMAGE}:1.0: ErrImagePull" in message["unpullable"]
    assert "unschedulable: 0/" in message["nowhere"]
    assert "didn't match Pod's node affinity/selector" in message["nowhere"]


EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "custom-probe"


@pytest_asyncio.fixture
async def shop(kube_simulator: Simulator) -> AsyncIterator[str]:
    """A shop on the simulator's host address: login and orders work, its login page is 503."""

    async def login(request: web.Request) -> web.Response:
        return web.json_response({"token": "t-" + (await request.json())["user"]})

    async def orders(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t-probe":
            return web.json_response({"error": "log in first"}, status=401)
        return web.json_response({"status": "placed"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def login_page(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    app = web.Application()
    app.router.add_post("/login", login)
    app.router.add_post("/orders", orders)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/login", login_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, kube_simulator.host_ip, 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def as_simulated(doc: dict[str, Any], command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The example Probe with its image run as a local process: ``command`` is its image's,
    with /probe/ (where the Dockerfile copies the scripts) read as the example's directory."""
    container = doc["spec"]["template"]["containers"][0]
    container["image"] = LOCAL_IMAGE
    container["command"] = [
        str(EXAMPLE / c.removeprefix("/probe/")) if c.startswith("/probe/") else c for c in command
    ]
    container["env"] = [
        {"name": e["name"], "value": env.get(e["name"], e["value"])} for e in container["env"]
    ] + [{"name": k, "value": v} for k, v in env.items() if k == "PATH"]
    return doc


def dockerfile_cmd() -> list[str]:
    """The image's CMD, from the example's Dockerfile."""
    (line,) = [x for x in (EXAMPLE / "Dockerfile").read_text().splitlines() if x.startswith("CMD")]
    cmd: list[str] = json.loads(line.removeprefix("CMD"))
    return [sys.executable if c == "python" else c for c in cmd]


async def test_the_examples_run_as_written(
    start_container_agent: StartAgent, kube: KubeApi, kube_namespace: str, shop: str
) -> None:
    """examples/custom-probe: the SDK probe (the image's CMD) and the script probe."""
    await start_container_agent()
    sdk = yaml.safe_load((EXAMPLE / "probe.yaml").read_text())
    await create_probe(
        kube, kube_namespace, as_simulated(sdk, dockerfile_cmd(), {"SHOP_URL": shop})
    )
    script = yaml.safe_load((EXAMPLE / "script-probe.yaml").read_text())
    command = script["spec"]["template"]["containers"][0]["command"]
    # The image has kubeprober and curl on its PATH; here they are where this test runs.
    path = os.pathsep.join(
        [str(Path(sys.executable).parent), str(Path(binary("curl")).parent), os.environ["PATH"]]
    )
    body = as_simulated(script, command, {"SHOP_URL": shop, "PATH": path})
    await create_probe(kube, kube_namespace, body)

    order = await eventually(lambda: finished(kube, kube_namespace, "shop-order"), within=30)
    assert {n: (c["status"], c["message"]) for n, c in order.items()} == {
        "login": ("PASS", ""),
        "order": ("PASS", ""),
    }
    health = await eventually(lambda: finished(kube, kube_namespace, "shop-health"), within=30)
    assert {n: (c["status"], c["message"]) for n, c in health.items()} == {
        "health": ("PASS", ""),
        "login-page": (
            "ERROR",
            "GET /login: curl: (22) The requested URL returned error: 503",
        ),
    }


@pytest.mark.parametrize("name", ["probe.yaml", "script-probe.yaml"])
def test_the_example_probes_pass_the_crd_schema_and_the_model(name: str) -> None:
    doc = yaml.safe_load((EXAMPLE / name).read_text())
    jsonschema.validate(doc, schema("probes"))
    assert parse_probe(doc).template is not None


@pytest.mark.parametrize("owned", [True, False], ids=["probe-object", "assigned"])
def test_jobs_of_assigned_probes_expire_those_of_probe_objects_are_collected(owned: bool) -> None:
    doc = yaml.safe_load((EXAMPLE / "probe.yaml").read_text())
    probe = parse_probe(doc)
    ref = ProbeRef(probe.namespace, probe.name, "0f0e-uid", 1)
    runner = ContainerRunner(
        None,  # type: ignore[arg-type]  # building a Job asks nothing of the API
        RunDesk(),
        lambda key: ref if owned else None,
        settings=ContainerSettings(report_url="http://127.0.0.1:8080"),
    )
    run, token = runner._runs.open(probe.key, tuple(c.name for c in probe.checks))
    job = runner._job(probe, run, token, {}, deadline=1_800_000_000.0)
    owners = job["metadata"].get("ownerReferences", [])
    if owned:
        assert [o["uid"] for o in owners] == ["0f0e-uid"]
        assert "ttlSecondsAfterFinished" not in job["spec"]  # the garbage collector has it
    else:
        assert owners == []
        assert job["spec"]["ttlSecondsAfterFinished"] == UNOWNED_JOB_TTL
