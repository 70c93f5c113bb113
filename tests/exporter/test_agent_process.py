"""The real ``kubeprober agent`` process: serves results, reloads files, survives restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ports import free_port

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))


def probe_yaml(name: str, layer: str, port: int, interval: str = "300ms") -> str:
    """One Probe with one tcp check against 127.0.0.1:port."""
    return f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: {name}}}
spec:
  layer: {layer}
  interval: {interval}
  timeout: 2s
  checks:
  - name: connect
    prober: tcp
    with: {{host: 127.0.0.1, port: {port}}}
"""


class Agent:
    """A running agent process and the URL it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """GET /status."""
        async with session.get(self.url + "/status") as resp:
            assert resp.status == 200
            doc: dict[str, Any] = await resp.json()
            return doc

    async def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 10)


async def start_agent(probes: Path, state_dir: Path, *flags: str) -> Agent:
    """Start the agent on a free port and wait for the URL it prints."""
    proc = await asyncio.create_subprocess_exec(
        KUBEPROBER,
        "agent",
        "--probes",
        str(probes),
        "--state-dir",
        str(state_dir),
        "--listen",
        "127.0.0.1:0",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
    assert "serving http://127.0.0.1:" in line, line
    url = line.split("serving ")[1].split("/metrics")[0]
    return Agent(proc, url)


@pytest.fixture
async def target() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts and closes connections."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def wait_for(predicate: Any, within: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.1)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The probes of the one cluster, by name."""
    return {p["name"]: p for p in doc["clusters"][0]["probes"]}


async def test_agent_serves_reloads_and_keeps_state(tmp_path: Path, target: int) -> None:
    probes = tmp_path / "probes.yaml"
    closed = free_port()
    probes.write_text(
        probe_yaml("web", "application", target) + "---\n" + probe_yaml("db", "middleware", closed)
    )
    state_dir = tmp_path / "state"
    agent = await start_agent(probes, state_dir)
    try:
        async with aiohttp.ClientSession() as session:

            async def failing_three_times() -> dict[str, Any] | None:
                doc = await agent.status(session)
                p = by_name(doc)
                db = p.get("db", {}).get("checks", [{}])[0]
                ok = p.get("web", {}).get("status") == "PASS"
                return doc if ok and db.get("consecutiveFailures", 0) >= 3 else None

            doc = await wait_for(failing_three_times)
            cluster = doc["clusters"][0]
            assert cluster["summary"]["status"] == "ERROR"
            assert cluster["layers"]["middleware"]["byStatus"]["ERROR"] == 1
            assert cluster["layers"]["application"]["status"] == "PASS"
            db = by_name(doc)["db"]
            assert f"127.0.0.1:{closed}" in db["checks"][0]["message"]

            async with session.get(agent.url + "/metrics") as resp:
                text = await resp.text()
            web_labels = 'check="connect",layer="application",namespace="default",probe="web"'
            assert f"kubeprober_check_success{{{web_labels}}} 1.0" in text

            # Edit the file: db goes away, cache arrives; no restart.
            probes.write_text(
                probe_yaml("web", "application", target)
                + "---\n"
                + probe_yaml("cache", "middleware", target)
            )

            async def reloaded() -> bool:
                p = by_name(await agent.status(session))
                return "db" not in p and p.get("cache", {}).get("status") == "PASS"

            await wait_for(reloaded)
            # Bring db back for the restart check below, and remember its failures.
            probes.write_text(
                probe_yaml("web", "application", target)
                + "---\n"
                + probe_yaml("db", "middleware", closed, interval="1h")
            )
            await wait_for(lambda: _has_db_result(agent, session))
            before = by_name(await agent.status(session))["db"]["checks"][0]
        assert await agent.stop() == 0
    finally:
        await agent.stop()
    assert (state_dir / "results.json").exists()

    agent = await start_agent(probes, state_dir)
    try:
        async with aiohttp.ClientSession() as session:

            async def counted_on() -> dict[str, Any] | None:
                db = by_name(await agent.status(session)).get("db")
                check: dict[str, Any] | None = db["checks"][0] if db else None
                want = before["consecutiveFailures"] + 1
                return check if check and check["consecutiveFailures"] == want else None

            # The restarted agent continues the count (1h interval: one new run) rather
            # than starting again from 1, and the transition time survives.
            after = await wait_for(counted_on)
        assert after["lastTransitionTime"] == before["lastTransitionTime"]
    finally:
        assert await agent.stop() == 0


async def _has_db_result(agent: Agent, session: aiohttp.ClientSession) -> bool:
    db = by_name(await agent.status(session)).get("db")
    return bool(db and db["checks"][0]["lastRun"])


async def test_agent_refuses_missing_probe_file(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        KUBEPROBER,
        "agent",
        "--probes",
        str(tmp_path / "nope.yaml"),
        "--listen",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 3
    assert b"nope.yaml: no such file or directory" in err


async def metrics(agent: Agent, session: aiohttp.ClientSession) -> str:
    """GET /metrics."""
    async with session.get(agent.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def reload_metric(file: Path, value: int) -> str:
    """The per-file reload series with its value, as the text exposition writes it."""
    return f'kubeprober_config_last_reload_successful{{file="{file}"}} {value}.0'


async def wait_config(agent: Agent, session: aiohttp.ClientSession, want: Any) -> dict[str, Any]:
    """Poll /status until its cluster's ``configErrors`` satisfies ``want``; return the doc."""

    async def matches() -> dict[str, Any] | None:
        doc = await agent.status(session)
        return doc if want(doc["clusters"][0]["configErrors"]) else None

    doc: dict[str, Any] = await wait_for(matches)
    return doc


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("metadata: {name: x\n", "invalid YAML at line "),
        (b"# caf\xe9\n", "not UTF-8: byte 0xe9 on line "),
    ],
    ids=["yaml-syntax", "not-utf8"],
)
async def test_a_broken_probe_file_changes_nothing_and_says_so(
    tmp_path: Path, target: int, breakage: str | bytes, message: str
) -> None:
    probes = tmp_path / "probes.yaml"
    closed = free_port()
    good = (
        probe_yaml("web", "application", target) + "---\n" + probe_yaml("db", "middleware", closed)
    )
    probes.write_text(good)
    agent = await start_agent(probes, tmp_path / "state")
    try:
        async with aiohttp.ClientSession() as session:

            async def db_failed_twice() -> dict[str, Any] | None:
                p = by_name(await agent.status(session))
                check = p.get("db", {}).get("checks", [{}])[0]
                return check if check.get("consecutiveFailures", 0) >= 2 else None

            before = await wait_for(db_failed_twice)
            assert reload_metric(probes, 1) in await metrics(agent, session)

            tail = breakage if isinstance(breakage, bytes) else breakage.encode()
            probes.write_bytes(good.encode() + b"---\n" + tail)
            doc = await wait_config(agent, session, bool)
            (error,) = doc["clusters"][0]["configErrors"]
            assert error["file"] == str(probes)
            assert error["message"].startswith(message), error
            # Every Probe of the file still runs, marked; the summary is not a PASS.
            p = by_name(doc)
            assert sorted(p) == ["db", "web"]
            assert p["web"]["configError"] == error
            assert p["db"]["configError"] == error
            assert doc["clusters"][0]["summary"]["status"] == "ERROR"
            text = await metrics(agent, session)
            assert reload_metric(probes, 0) in text
            assert 'kubeprober_check_success{check="connect",layer="application"' in text

            # Mended (with an edit to show it reloads): the marks go, the history stays.
            probes.write_text(good.replace("interval: 300ms", "interval: 400ms"))
            doc = await wait_config(agent, session, lambda errors: errors == [])
            p = by_name(doc)
            assert p["db"]["configError"] is None
            after = p["db"]["checks"][0]
            assert after["lastTransitionTime"] == before["lastTransitionTime"]
            assert after["consecutiveFailures"] >= before["consecutiveFailures"]
            assert reload_metric(probes, 1) in await metrics(agent, session)
    finally:
        assert await agent.stop() == 0


async def test_directory_mode_keeps_each_file_apart(tmp_path: Path, target: int) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    a, b, big = probes / "a.yaml", probes / "b.yaml", probes / "big.yaml"
    a.write_text(probe_yaml("web", "application", target))
    b.write_text(probe_yaml("db", "middleware", target))
    agent = await start_agent(probes, tmp_path / "state", "--max-probe-file-size", "2KiB")
    try:
        async with aiohttp.ClientSession() as session:

            async def both_ran() -> dict[str, Any] | None:
                doc = await agent.status(session)
                p = by_name(doc)
                ran = all(p.get(n, {}).get("status") == "PASS" for n in ("web", "db"))
                return doc if ran else None

            await wait_for(both_ran)
            # A non-UTF-8 b.yaml, an oversized new file and an invalid edit of web in a.yaml,
            # next to a new valid Probe there: only the valid Probe changes anything.
            b.write_bytes(b.read_bytes() + b"# \xff\n")
            big.write_text(
                "---\n".join(probe_yaml(f"n{i}", "kubernetes", target) for i in range(20))
            )
            a.write_text(
                probe_yaml("web", "network", target)
                + "---\n"
                + probe_yaml("cache", "middleware", target)
            )

            def all_three(errors: list[dict[str, str]]) -> bool:
                return {e["file"] for e in errors} == {str(a), str(b), str(big)}

            doc = await wait_config(agent, session, all_three)
            errors = {e["file"]: e["message"] for e in doc["clusters"][0]["configErrors"]}
            assert errors[str(b)] == "not UTF-8: byte 0xff on line 12"
            assert errors[str(big)] == "larger than the limit of 2048 bytes (--max-probe-file-size)"
            assert errors[str(a)].startswith("web: spec.layer: expected one of application")
            p = by_name(doc)
            assert sorted(p) == ["cache", "db", "web"]
            assert p["web"]["layer"] == "application"  # its previous version
            assert p["web"]["configError"] == {"file": str(a), "message": errors[str(a)]}
            assert p["db"]["configError"] == {"file": str(b), "message": errors[str(b)]}
            assert p["cache"]["configError"] is None
            text = await metrics(agent, session)
            for file in (a, b, big):
                assert reload_metric(file, 0) in text
    finally:
        assert await agent.stop() == 0


async def test_agent_starts_with_an_unparsable_file_and_shows_it(tmp_path: Path) -> None:
    probes = tmp_path / "probes.yaml"
    probes.write_bytes(b"kind: Probe\n\xff\n")
    agent = await start_agent(probes, tmp_path / "state")
    try:
        async with aiohttp.ClientSession() as session:
            doc = await agent.status(session)
            cluster = doc["clusters"][0]
            assert cluster["configErrors"] == [
                {"file": str(probes), "message": "not UTF-8: byte 0xff on line 2"}
            ]
            assert cluster["probes"] == []
            assert reload_metric(probes, 0) in await metrics(agent, session)
            async with session.get(agent.url + "/readyz") as resp:
                assert resp.status == 200
    finally:
        assert await agent.stop() == 0
