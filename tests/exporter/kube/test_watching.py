"""Probe watch: Probes created, edited, suspended and deleted while the agent runs; watches
cut, expired (410) and resumed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from kubeprober.exporter.kube.watching import ProbeWatcher, WatchSettings
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import Gone, Unavailable
from kubeprober.kube.resources import PROBES
from kubeprober.kube.streams import WatchStream
from kubeprober.tasks import spawn, stop
from tests.exporter.kube.conftest import (
    FAST_BACKOFF,
    AgentFactory,
    create_probe,
    eventually,
    probe_body,
    probe_status,
    tcp_check,
)
from tests.harness.faultproxy import FaultProxy


async def test_probes_follow_create_edit_suspend_delete(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    agent = await start_agent()
    key = (kube_namespace, "p")
    await create_probe(kube, kube_namespace, probe_body("p", [tcp_check("a", open_port)]))
    await eventually(lambda: _checks(agent, key) == ["a"], what="the new probe")
    await eventually(lambda: _ran(agent, key, "a"), what="its first run")

    # Edit: a second check appears, the first keeps its history.
    edit = {"spec": {"checks": [tcp_check("a", open_port), tcp_check("b", open_port)]}}
    await kube.patch(PROBES, "p", edit, namespace=kube_namespace)
    await eventually(lambda: _checks(agent, key) == ["a", "b"], what="the edit")
    await eventually(lambda: _ran(agent, key, "b"), what="the new check's run")

    # Suspend: the probe stays defined (its results kept) but stops running.
    await kube.patch(PROBES, "p", {"spec": {"suspend": True}}, namespace=kube_namespace)

    def suspended() -> bool:
        state = agent.store.get(key)
        return state is not None and state.probe.suspend

    await eventually(suspended, what="the suspension")
    assert _ran(agent, key, "a")

    async def says_suspended() -> bool:
        status = await probe_status(kube, kube_namespace, "p")
        return str(status.get("message", "")).startswith("suspended")

    await eventually(says_suspended, what="the ProbeStatus to say so")

    # Delete: gone from the running set.
    await kube.delete(PROBES, "p", namespace=kube_namespace)
    await eventually(lambda: agent.store.get(key) is None, what="the deletion")
    assert agent.mode.watcher.lists == 1  # all through the one watch


async def test_watch_cut_resumes_without_relisting(
    kube_fault_proxy: FaultProxy,
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
) -> None:
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig)
    await eventually(lambda: kube_fault_proxy.drop_watches() > 0, what="a watch to drop")
    await create_probe(kube, kube_namespace, probe_body("after-cut", [tcp_check("a", open_port)]))
    await eventually(
        lambda: agent.store.get((kube_namespace, "after-cut")), what="the probe after the cut"
    )
    assert agent.mode.watcher.lists == 1  # resumed from its resourceVersion


async def test_expired_watch_relists(
    kube_fault_proxy: FaultProxy,
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
) -> None:
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig)
    await create_probe(kube, kube_namespace, probe_body("kept", [tcp_check("a", open_port)]))
    await eventually(lambda: agent.store.get((kube_namespace, "kept")), what="the first probe")
    # The resumed watch finds its resourceVersion expired: 410 Gone, as after etcd compaction.
    kube_fault_proxy.fail(410, count=1, path="watch=true")
    await eventually(lambda: kube_fault_proxy.drop_watches() > 0, what="a watch to drop")
    await create_probe(kube, kube_namespace, probe_body("missed", [tcp_check("a", open_port)]))
    await eventually(lambda: agent.mode.watcher.lists == 2, what="the relist")
    await eventually(
        lambda: agent.store.get((kube_namespace, "missed")), what="the probe made meanwhile"
    )
    assert agent.store.get((kube_namespace, "kept")) is not None


async def test_expired_in_stream_relists(
    kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    await create_probe(kube, kube_namespace, probe_body("there", [tcp_check("a", open_port)]))
    changes: list[set[tuple[str, str]]] = []
    settings = WatchSettings(kube_namespace, FAST_BACKOFF)
    watcher = ProbeWatcher(kube, changes.append, settings=settings)
    # A version long compacted away: the server answers the watch with an ERROR event
    # carrying a 410 Expired Status, inside a 200 stream, as a real apiserver does.
    watcher.resource_version = "1"
    task = spawn(watcher.run(), "test-watch-expired")
    try:
        await eventually(lambda: watcher.lists == 1, what="the relist after 410")
    finally:
        await stop([task])
    assert (kube_namespace, "there") in watcher.entries
    assert changes == [{(kube_namespace, "there")}]


async def test_all_namespaces(kube: KubeApi, kube_namespace: str, open_port: int) -> None:
    changes: list[set[tuple[str, str]]] = []
    watcher = ProbeWatcher(kube, changes.append, settings=WatchSettings(None, FAST_BACKOFF))
    task = spawn(watcher.run(), "test-watch-all")
    try:
        await eventually(lambda: watcher.lists == 1, what="the list")
        await create_probe(kube, kube_namespace, probe_body("anywhere", [tcp_check("a", 1)]))
        await eventually(lambda: (kube_namespace, "anywhere") in watcher.entries, what="event")
    finally:
        await stop([task])
    probe = watcher.entries[(kube_namespace, "anywhere")].probe
    assert probe is not None and probe.source == "kubernetes"


class _FakeResponse:
    """A urllib3-like streaming response, for the stream's line handling alone."""

    def __init__(self, lines: list[bytes], status: int = 200) -> None:
        self.status = status
        self._lines = lines
        self.closed = False

    def stream(self, amt: Any, decode_content: bool) -> Iterator[bytes]:
        # Split across chunk boundaries on purpose: lines need not align with chunks.
        data = b"".join(self._lines)
        yield from (data[i : i + 7] for i in range(0, len(data), 7))

    def read(self) -> bytes:
        return b"".join(self._lines)

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


async def _events(response: _FakeResponse) -> list[str]:
    seen = []
    async with WatchStream(lambda: response, action="watch things") as events:
        async for event in events:
            seen.append(f"{event.type} {event.resource_version}")
    return seen


async def test_stream_yields_events_and_bookmarks() -> None:
    response = _FakeResponse(
        [
            b'{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"5"}}}\n',
            b"\n",
            b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}\n',
        ]
    )
    assert await _events(response) == ["ADDED 5", "BOOKMARK 9"]
    # The reader thread closes the response just after it queues the end of the stream.
    for _ in range(200):
        if response.closed:
            break
        await asyncio.sleep(0.01)
    assert response.closed


@pytest.mark.parametrize(
    ("lines", "status", "error", "text"),
    [
        (
            [
                b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",'
                b'"message":"too old resource version: 1 (50)"}}\n'
            ],
            200,
            Gone,
            "too old resource version",
        ),
        ([b'{"kind":"Status","code":410,"reason":"Gone","message":"gone"}'], 410, Gone, "gone"),
        ([b'{"type":"ADDED","object":{"metad'], 200, Unavailable, "malformed watch event"),
        ([b"<html>" + b"x" * 5000], 503, Unavailable, "HTTP 503"),
    ],
)
async def test_stream_errors(
    lines: list[bytes], status: int, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text) as caught:
        await _events(_FakeResponse(lines, status))
    assert len(str(caught.value)) < 400  # bodies are truncated


async def test_closing_a_stream_ends_its_thread(kube: KubeApi, kube_namespace: str) -> None:
    stream = kube.watch(PROBES, namespace=kube_namespace)
    async with stream:
        await eventually(lambda: stream.running, what="the reader thread")
        await asyncio.sleep(0.2)  # let it block in a read
    await eventually(lambda: not stream.running, within=2, what="the thread to end")


def _checks(agent: Any, key: tuple[str, str]) -> list[str]:
    state = agent.store.get(key)
    return sorted(state.checks) if state is not None else []


def _ran(agent: Any, key: tuple[str, str], check: str) -> bool:
    state = agent.store.get(key)
    return bool(state and state.checks.get(check) and state.checks[check].result is not None)
