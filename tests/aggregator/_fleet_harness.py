"""A real fleet on loopback for aggregator tests: a clusters file, the aggregator, agents.

The aggregator (``run_aggregator``) and the agents (``run_agent``) run in the test's own event
loop, each stopped through its ``stop`` event; agents dial the aggregator through real
tunnels (``ws://127.0.0.1``, or ``wss://`` with a trustme CA). Nothing here is a double of the
code under test: tests only write files and talk HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import trustme
import yaml

from kubeprober.aggregator.auth import new_operator_token, token_hash
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.puller import PullSettings
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.aggregator.tokens import new_token
from kubeprober.exporter.agent import AgentSettings, run_agent

T = TypeVar("T")
PULL = PullSettings(interval=0.5, full_interval=0.5, timeout=2, debounce=0.05)
"""Short beats: tests that watch a value change without a notice (a duration) see it soon."""


def probe(
    name: str,
    prober: str,
    options: Mapping[str, Any],
    *,
    layer: str = "application",
    interval: str | None = None,
    check: str = "check",
) -> dict[str, Any]:
    """One Probe manifest with one check; no interval means it runs once, at once."""
    spec: dict[str, Any] = {
        "layer": layer,
        "timeout": "3s",
        "checks": [{"name": check, "prober": prober, "with": dict(options)}],
    }
    if interval is not None:
        spec["interval"] = interval
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": spec,
    }


def exec_probe(name: str, *argv: str, **kwargs: Any) -> dict[str, Any]:
    """An ``exec`` Probe: ``true`` passes, ``false`` is ERROR, a missing command UNKNOWN."""
    return probe(name, "exec", {"command": list(argv)}, **kwargs)


def tcp_probe(name: str, port: int, **kwargs: Any) -> dict[str, Any]:
    """A ``tcp`` Probe against 127.0.0.1:port."""
    return probe(name, "tcp", {"host": "127.0.0.1", "port": port}, **kwargs)


def write_probes(path: Path, probes: list[dict[str, Any]]) -> Path:
    """Write Probe manifests as one multi-document file and return its path."""
    path.write_text(yaml.safe_dump_all(probes, sort_keys=False) if probes else "")
    return path


@dataclass
class FleetFile:
    """The aggregator's clusters file: Clusters, their token Secrets and central Probes."""

    path: Path
    tokens: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    maintenance: set[str] = field(default_factory=set)
    probes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, *assigned: str, maintenance: bool = False) -> FleetFile:
        """Define cluster ``name`` with a fresh token and ``assigned`` probe labels."""
        self.tokens[name] = str(new_token(name))
        self.labels[name] = {f"probe/{p}": "true" for p in assigned}
        if maintenance:
            self.maintenance.add(name)
        return self

    def assign(self, cluster: str, probe_name: str) -> None:
        """Label ``cluster`` with ``probe/<probe_name>=true`` and rewrite the file."""
        self.labels[cluster][f"probe/{probe_name}"] = "true"
        self.write()

    def unassign(self, cluster: str, probe_name: str) -> None:
        """Remove the label ``probe/<probe_name>`` from ``cluster`` and rewrite the file."""
        del self.labels[cluster][f"probe/{probe_name}"]
        self.write()

    def docs(self) -> list[dict[str, Any]]:
        """Every manifest of the file."""
        docs: list[dict[str, Any]] = []
        for name, token in self.tokens.items():
            meta: dict[str, Any] = {"name": name}
            if self.labels[name]:
                meta["labels"] = dict(self.labels[name])
            docs.append(
                {
                    "apiVersion": "kubeprober.io/v1",
                    "kind": "Cluster",
                    "metadata": meta,
                    "spec": {
                        "displayName": name.title(),
                        "maintenance": name in self.maintenance,
                        "tokenSecretRef": {"name": f"token-{name}"},
                    },
                }
            )
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"token-{name}"},
                    "stringData": {"token": token},
                }
            )
        return docs + self.probes

    def write(self) -> Path:
        """Write the file and return its path."""
        self.path.write_text(yaml.safe_dump_all(self.docs(), sort_keys=False))
        return self.path

    def token_file(self, cluster: str) -> Path:
        """Write ``cluster``'s token next to the clusters file and return that path."""
        path = self.path.parent / f"{cluster}.token"
        path.write_text(self.tokens[cluster] + "\n")
        return path


@dataclass
class Tls:
    """A trustme CA and a server certificate for 127.0.0.1, as files."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """Write a throwaway CA and a 127.0.0.1/localhost server certificate."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    tls = Tls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(tls.ca))
    issued.cert_chain_pems[0].write_to_path(str(tls.cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(tls.cert), append=True)
    issued.private_key_pem.write_to_path(str(tls.key))
    return tls


class Service:
    """One in-process ``run_aggregator`` or ``run_agent``, stopped through its ``stop`` event."""

    def __init__(
        self, name: str, run: Callable[..., Coroutine[Any, Any, None]], settings: Any
    ) -> None:
        self.name = name
        self.settings = settings
        self._run = run
        self.url = ""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Service:
        """Start it and wait for the URL it listens on."""
        self._stop = asyncio.Event()
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            self._run(self.settings, on_listening=listening.set_result, stop=self._stop),
            name=f"test-{self.name}",
        )
        either: set[asyncio.Future[Any]] = {self._task, listening}
        await asyncio.wait(either, timeout=10, return_when="FIRST_COMPLETED")
        if self._task.done():
            self._task.result()  # raise what stopped it
        self.url = listening.result()
        return self

    async def stop(self) -> None:
        """Set its stop event and wait until it has shut down."""
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        await asyncio.wait_for(task, 20)

    @property
    def running(self) -> bool:
        """Whether it was started and has not been stopped."""
        return self._task is not None


def write_operator_tokens(path: Path, *names: str) -> dict[str, str]:
    """Write an ``--operator-tokens`` file with a fresh token per name; return the tokens."""
    tokens = {name: new_operator_token() for name in names}
    path.write_text("".join(f"{n}: {token_hash(t)}\n" for n, t in tokens.items()))
    return tokens


def aggregator(
    clusters: Path,
    *,
    read_token_file: Path | None = None,
    operator_tokens_file: Path | None = None,
    tls: Tls | None = None,
    offline_after: float = 30.0,
    reload_interval: float = 0.2,
    pull: PullSettings = PULL,
    **limits: Any,
) -> Service:
    """An aggregator on a free loopback port with short pull settings; ``limits`` are
    further AggregatorSettings fields (``max_answer=...``)."""
    settings = AggregatorSettings(
        clusters_file=clusters,
        host="127.0.0.1",
        port=0,
        tls_cert=tls.cert if tls else None,
        tls_key=tls.key if tls else None,
        read_token_file=read_token_file,
        operator_tokens_file=operator_tokens_file,
        pull=pull,
        offline_after=offline_after,
        reload_interval=reload_interval,
        **limits,
    )
    return Service("aggregator", run_aggregator, settings)


def agent(
    cluster: str,
    *,
    fleet: FleetFile,
    aggregator_url: str,
    probes: Path,
    state_dir: Path | None = None,
    accept_remote_exec: bool = False,
    ca: Path | None = None,
) -> Service:
    """An agent of ``cluster`` that dials the aggregator at ``aggregator_url`` (http[s]://)."""
    settings = AgentSettings(
        probes=probes,
        state_dir=state_dir,
        host="127.0.0.1",
        port=0,
        cluster=cluster,
        reload_interval=0.2,
        aggregator=aggregator_url.replace("http", "ws", 1),
        token_file=fleet.token_file(cluster),
        aggregator_ca=ca,
        accept_remote_exec=accept_remote_exec,
    )
    return Service(f"agent-{cluster}", run_agent, settings)


async def get_json(
    http: aiohttp.ClientSession, url: str, *, token: str | None = None
) -> dict[str, Any]:
    """GET ``url`` and return its JSON body, asserting 200."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 200, f"GET {url}: {resp.status} {body}"
        doc: dict[str, Any] = await resp.json()
        return doc


async def eventually(
    fetch: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within: float,
    what: str,
    every: float = 0.1,
) -> T:
    """Call ``fetch`` until ``accept`` likes its answer; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await fetch()
        if accept(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}; last: {value!r}")
        await asyncio.sleep(every)


def cluster_of(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The entry of cluster ``name`` in a unified /status document."""
    found = [c for c in doc["clusters"] if c["name"] == name]
    assert found, f"cluster {name} not in /status: {[c['name'] for c in doc['clusters']]}"
    entry: dict[str, Any] = found[0]
    return entry


def probe_names(entry: Mapping[str, Any]) -> set[str]:
    """Names of the probes one cluster entry lists."""
    return {p["name"] for p in entry["probes"]}


def has_results(entry: Mapping[str, Any], *names: str) -> bool:
    """Whether the cluster is Online and each named probe has a result."""
    got = {p["name"]: p for p in entry["probes"]}
    return entry["state"] == "Online" and all(
        n in got and got[n]["lastRun"] is not None for n in names
    )
