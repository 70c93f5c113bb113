"""Fixtures for the agent's Kubernetes layer: CRDs installed, an API facade, a running agent.

Everything goes through the harness's kubeconfig and the public API, so these tests run
unchanged against a real cluster (``K8S_TEST_KUBECONFIG``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kubeprober.exporter.kube.conditions import ConditionSettings
from kubeprober.exporter.kube.containers import PROBE_LABEL
from kubeprober.exporter.kube.events import EventSettings
from kubeprober.exporter.kube.mode import PERMISSIONS, KubeMode, KubeSettings
from kubeprober.exporter.kube.statuses import PENDING, StatusSettings
from kubeprober.exporter.scheduler import Scheduler
from kubeprober.exporter.store import ResultStore, Transition
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import NotFound
from kubeprober.kube.resources import PROBE_STATUSES, PROBES
from kubeprober.pacing import BackoffSettings
from kubeprober.probers import registry
from kubeprober.probers.result import CheckResult
from tests.conftest import FAST_API
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "manifests" / "crds"
KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))

# Quick retries: tests simulate outages of a second or two, not minutes.
FAST_BACKOFF = BackoffSettings(initial=0.05, maximum=0.5)
FAST = KubeSettings(
    backoff=FAST_BACKOFF,
    statuses=StatusSettings(backoff=FAST_BACKOFF),
    conditions=ConditionSettings(backoff=FAST_BACKOFF),
    events=EventSettings(backoff=FAST_BACKOFF),
)


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that."""
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
        except (AssertionError, KeyError, LookupError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}") from last_error
        await asyncio.sleep(interval)


def probe_body(name: str, checks: Sequence[Mapping[str, Any]], **spec: Any) -> dict[str, Any]:
    """Return a Probe manifest; ``spec`` keys as in YAML (``interval="500ms"``)."""
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": {"layer": spec.pop("layer", "application"), **spec, "checks": list(checks)},
    }


def old_job(name: str, probe: str) -> dict[str, Any]:
    """A suspended Job labelled as an earlier run of container probe ``probe`` (no pod)."""
    return {
        "metadata": {"name": name, "labels": {PROBE_LABEL: probe}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                }
            },
        },
    }


def tcp_check(name: str, port: int) -> dict[str, Any]:
    """Return a tcp check against a loopback port."""
    return {"name": name, "prober": "tcp", "with": {"host": "127.0.0.1", "port": port}}


@pytest.fixture
def open_port() -> Iterator[int]:
    """Return a loopback port that accepts connections (a tcp check there PASSes)."""
    # A thread, not the test's loop: connections still arriving when the test ends must not
    # leave transports on a closed loop.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=accept, name="open-port", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join()
        listener.close()


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port nobody listens on (a tcp check there is ERROR, refused)."""
    return free_port()


class NotifyingStore(ResultStore):
    """A result store that tells the kube layer about each run, as the agent wires it."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[tuple[str, str], Sequence[Transition]], None]] = []

    def record(
        self, key: tuple[str, str], results: Mapping[str, CheckResult], *, duration: float | None
    ) -> list[Transition]:
        transitions = super().record(key, results, duration=duration)
        for listener in self.listeners:
            listener(key, transitions)
        return transitions


@dataclass
class Agent:
    """The agent's Kubernetes mode with a real scheduler and probers, minus HTTP."""

    api: KubeApi
    store: NotifyingStore
    scheduler: Scheduler
    mode: KubeMode
    lags: list[float] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop like the agent does: the mode first, then the scheduler."""
        await self.mode.stop()
        await self.scheduler.stop()
        await self.api.close()


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest_asyncio.fixture
async def start_agent(
    kube_config_path: Path, kube_namespace: str, crds: None
) -> AsyncIterator[AgentFactory]:
    """Return a function starting agents on the test namespace; all are stopped afterwards."""
    agents: list[Agent] = []

    async def start(
        *, kubeconfig: Path | None = None, settings: KubeSettings | None = None
    ) -> Agent:
        api = KubeApi.from_kubeconfig(kubeconfig or kube_config_path, settings=FAST_API)
        store = NotifyingStore()
        scheduler = Scheduler(store, registry.probers())
        lags: list[float] = []
        mode = KubeMode(
            api,
            store,
            scheduler.apply,
            settings=replace(settings or FAST, namespace=kube_namespace),
            observe_write_lag=lags.append,
        )
        store.listeners.append(mode.on_record)
        agent = Agent(api, store, scheduler, mode, lags)
        agents.append(agent)
        await mode.start()
        await eventually(mode.synced.is_set, what="the first Probe list")
        return agent

    try:
        yield start
    finally:
        for agent in agents:
            await agent.stop()
        used = set().union(*(a.api.used for a in agents)) if agents else set()
        # Least privilege both ways: every call made is granted by the manifests' rules.
        assert used <= set(PERMISSIONS), sorted(used - set(PERMISSIONS))


async def create_probe(api: KubeApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a Probe in ``namespace``."""
    return await api.create(PROBES, body, namespace=namespace)


async def probe_status(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    """Return a ProbeStatus's ``.status`` once it holds a result ({} when absent or Pending)."""
    status = await written_status(api, namespace, name)
    return {} if status.get("status") == PENDING else status


async def written_status(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    """Return a ProbeStatus's ``.status`` as it is, Pending too ({} when absent or empty)."""
    try:
        obj = await api.get(PROBE_STATUSES, name, namespace=namespace)
    except NotFound:
        return {}
    return dict(obj.get("status") or {})


def checks_by_name(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Index a status's checks by name."""
    return {c["name"]: c for c in status.get("checks") or []}


class AgentProcess:
    """A running ``kubeprober agent`` in Kubernetes mode and the URL it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    async def get(self, path: str) -> tuple[int, Any]:
        """GET a path of the agent's HTTP API."""
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            body = await resp.json() if path == "/status" else await resp.text()
            return resp.status, body

    async def stop(self) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)


AgentStarter = Callable[..., Awaitable[AgentProcess]]


@pytest_asyncio.fixture
async def agent_process(kube_config_path: Path, kube_namespace: str) -> AsyncIterator[AgentStarter]:
    """Start agent processes; all are stopped afterwards.

    ``start(*flags, kubeconfig=None, scope=None)``: ``flags`` are added to the command line;
    ``scope`` is ``("--all-namespaces",)`` or a ``--namespace`` (default: the test namespace);
    ``kubeconfig`` the cluster's unless given.
    """
    started: list[AgentProcess] = []

    async def start(
        *flags: str, kubeconfig: Path | None = None, scope: tuple[str, ...] | None = None
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            KUBEPROBER, "agent", "--kubeconfig", str(kubeconfig or kube_config_path),
            *(scope or ("--namespace", kube_namespace)), "--listen", "127.0.0.1:0", *flags,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "serving http://127.0.0.1:" in line, line
        agent = AgentProcess(proc, line.split("serving ")[1].split("/metrics")[0])
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.stop()
