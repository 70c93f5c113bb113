"""``kubeprober demo`` end to end: a real process, three agent processes, TLS, then a clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.aggregator._fleet_harness import cluster_of, eventually

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
DURATION = 40.0
CLUSTERS = {"moon", "mars", "venus"}


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def checks(doc: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Every (cluster, probe, check, status, message) of a unified /status that has run."""
    return [
        (c["name"], p["name"], ch["name"], ch["status"], ch["message"])
        for c in doc["clusters"]
        for p in c["probes"]
        for ch in p["checks"]
        if ch["lastRun"] is not None
    ]


def waiting(doc: dict[str, Any]) -> int:
    """How many checks have not run yet."""
    return sum(
        ch["lastRun"] is None for c in doc["clusters"] for p in c["probes"] for ch in p["checks"]
    )


def fleet_ready(doc: dict[str, Any]) -> bool:
    """All three clusters Online with an ERROR, an UNKNOWN and a WARN (TLS) check reported."""
    if {c["name"] for c in doc["clusters"]} != CLUSTERS:
        return False
    if any(c["state"] != "Online" or not c["probes"] for c in doc["clusters"]) or waiting(doc):
        return False
    statuses = {s for _, _, _, s, _ in checks(doc)}
    return {"ERROR", "UNKNOWN", "WARN"} <= statuses


def quiet_env() -> dict[str, str]:
    """The environment without anything that would point the CLI at an aggregator or a CA."""
    unset = {"KUBEPROBER_AGGREGATOR", "KUBEPROBER_AGGREGATOR_CA", "SSL_CERT_FILE"}
    return {k: v for k, v in os.environ.items() if k not in unset}


@pytest.mark.slow
async def test_demo_runs_a_fleet_and_stops_by_itself(tmp_path: Path) -> None:
    state = tmp_path / ".state" / "demo"  # where `make demo` puts it, under the working dir
    out_file, err_file = tmp_path / "demo.out", tmp_path / "demo.err"
    # Files, not pipes: 25 s of logs must never block the demo on a full pipe.
    with out_file.open("wb") as out_fh, err_file.open("wb") as err_fh:
        proc = await asyncio.create_subprocess_exec(
            KUBEPROBER, "demo", "--duration", str(DURATION), "--listen", "127.0.0.1:0",
            "--state-dir", str(state),
            stdin=asyncio.subprocess.DEVNULL, stdout=out_fh, stderr=err_fh,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    pids: list[int] = []
    try:
        info_file = state / "demo.json"

        async def written() -> bool:
            return info_file.exists() and info_file.read_text().endswith("}\n")

        await eventually(written, bool, within=30, what="demo.json", every=0.2)
        info = json.loads(info_file.read_text())
        base = info["board"].rstrip("/")
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", base), info
        assert (info["status"], info["metrics"]) == (f"{base}/status", f"{base}/metrics")
        assert {a["cluster"] for a in info["agents"]} == CLUSTERS
        pids = [a["pid"] for a in info["agents"]]
        assert all(alive(pid) for pid in pids)
        ca = Path(info["ca"])

        trusting = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca)))
        async with aiohttp.ClientSession(connector=trusting) as http:

            async def status() -> dict[str, Any]:
                async with http.get(info["status"]) as resp:
                    assert resp.status == 200
                    doc: dict[str, Any] = await resp.json()
                    return doc

            doc = await eventually(status, fleet_ready, within=30, what="the demo fleet", every=0.5)
            found = checks(doc)
            assert [c[:3] for c in found if c[3] == "ERROR"] == [
                ("mars", "orders-db", "postgres-port")
            ]
            assert [c[:3] for c in found if c[3] == "UNKNOWN"] == [
                ("venus", "payments", "checkout")
            ]
            warned = [c for c in found if c[3] == "WARN"]
            assert sorted(c[:2] for c in warned) == sorted((n, "aggregator-cert") for n in CLUSTERS)
            assert "expires in" in warned[0][4]
            assert cluster_of(doc, "mars")["summary"]["status"] == "ERROR"
            assert doc["summary"]["status"] == "ERROR"

            async with http.get(info["board"]) as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                assert "<html" in (await resp.text()).lower()
            async with http.get(info["metrics"]) as resp:
                assert resp.status == 200
                text = await resp.text()
            up = re.findall(r'^kubeprober_agent_up\{cluster="(\w+)"\} 1(?:\.0)?$', text, re.M)
            assert set(up) == CLUSTERS

        # The bare CLI, run where the demo was started, finds the demo and trusts its CA.
        cli = await asyncio.create_subprocess_exec(
            KUBEPROBER, "status",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=quiet_env(), cwd=tmp_path,
        )  # fmt: skip
        out, err = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 2, (out, err)
        assert {line.split()[0] for line in out.decode().splitlines()[1:4]} == CLUSTERS
        # The misconfigured check says so, once, and no traceback reaches any log.
        venus_log = (state / "venus" / "agent.log").read_text()
        assert "checkout: new -> UNKNOWN: caFile /nonexistent/payments-ca.pem: no such file" in (
            venus_log
        )
        assert "Traceback" not in venus_log + err_file.read_text()
        # The demo's operator token runs probes.
        run = await asyncio.create_subprocess_exec(
            KUBEPROBER, "run", "local-host", "--cluster", "moon", "--aggregator", base,
            "--aggregator-ca", str(ca), "--operator-token-file", info["operatorToken"],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(run.communicate(), 30)
        assert out.decode().startswith("moon: default/local-host"), (out, err)

        code = await asyncio.wait_for(proc.wait(), DURATION + 30)
        assert code == 0, err_file.read_text()
        printed = out_file.read_text()
        assert info["board"] in printed and info["metrics"] in printed
        assert not [pid for pid in pids if alive(pid)]
        assert not info_file.exists()  # a stopped demo is not found by `kubeprober status`
        stderr = err_file.read_text()
        assert " WARNING " not in stderr and " ERROR " not in stderr, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, 9)


def agent_pids(info_file: Path) -> dict[str, int]:
    """Each cluster's agent pid as demo.json has it now."""
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return {}
    return {a["cluster"]: a["pid"] for a in info["agents"]}


@pytest.mark.slow
async def test_a_second_demo_changes_nothing_and_a_dead_agent_comes_back(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    err_file = tmp_path / "demo.err"
    with err_file.open("wb") as err_fh:
        # Its own process group, as in a terminal: Ctrl-C reaches the demo and its agents.
        proc = await asyncio.create_subprocess_exec(
            KUBEPROBER, "demo", "--listen", "127.0.0.1:0", "--state-dir", str(state),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err_fh,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
    pids: dict[str, int] = {}
    try:
        info_file = state / "demo.json"
        pids = await eventually(
            lambda: asyncio.to_thread(agent_pids, info_file),
            lambda found: set(found) == CLUSTERS,
            within=30,
            what="demo.json",
            every=0.2,
        )
        info = json.loads(info_file.read_text())
        kept = {p: p.read_bytes() for p in state.rglob("*") if p.is_file() and p.suffix != ".log"}

        # A second start sees the first at once, says where it is and touches nothing.
        second = await asyncio.create_subprocess_exec(
            KUBEPROBER, "demo", "--listen", "127.0.0.1:0", "--state-dir", str(state),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 3, (out, err)
        said = err.decode()
        assert said.startswith(f"kubeprober demo: a demo is already running from {state} "), said
        assert f"(pid {proc.pid})" in said and info["board"] in said and out == b""
        assert {p: p.read_bytes() for p in kept} == kept
        assert agent_pids(info_file) == pids and all(alive(pid) for pid in pids.values())

        # An agent that dies is logged, started again, and its cluster comes back Online.
        dead = pids["mars"]
        os.kill(dead, signal.SIGKILL)
        restarted = await eventually(
            lambda: asyncio.to_thread(agent_pids, info_file),
            lambda found: found.get("mars", dead) != dead,
            within=30,
            what="mars's agent started again",
            every=0.2,
        )
        assert {n: p for n, p in restarted.items() if n != "mars"} == {
            n: p for n, p in pids.items() if n != "mars"
        }
        pids = restarted
        log = err_file.read_text()
        assert f"ERROR kubeprober.demo: agent mars (pid {dead}) exited with code -9" in (log)

        trusting = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=info["ca"]))
        async with aiohttp.ClientSession(connector=trusting) as http:

            async def status() -> dict[str, Any]:
                async with http.get(info["status"]) as resp:
                    doc: dict[str, Any] = await resp.json()
                    return doc

            await eventually(
                status,
                lambda d: cluster_of(d, "mars")["state"] == "Online",
                within=30,
                what="mars back online",
                every=0.5,
            )

        # Ctrl-C reaches every process of the group: the demo stops them all, restarting none.
        os.killpg(proc.pid, signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 45) == 0, err_file.read_text()
        assert not [pid for pid in pids.values() if alive(pid)]
        assert err_file.read_text().count(" exited with code ") == 1
        assert not info_file.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_a_demo_on_a_busy_port_fails_at_once(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            KUBEPROBER, "demo", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        # Not the 30 s it used to wait for an aggregator that had already failed.
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        server.close()
        await server.wait_closed()
    assert proc.returncode == 3, (out, err)
    assert err.decode().endswith(f"('127.0.0.1', {port}): address already in use\n"), err
