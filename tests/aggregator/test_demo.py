"""``kubeprober demo`` end to end: a real process, three agent processes, TLS, then a clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.aggregator._fleet_harness import cluster_of, eventually

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
DURATION = 25.0
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


@pytest.mark.slow
async def test_demo_runs_a_fleet_and_stops_by_itself(tmp_path: Path) -> None:
    state = tmp_path / "demo"
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

            doc = await eventually(status, fleet_ready, within=20, what="the demo fleet", every=0.5)
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

        # The CLI reads the demo too, trusting the demo CA through the usual OpenSSL variable.
        cli = await asyncio.create_subprocess_exec(
            KUBEPROBER, "status", "--aggregator", base,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SSL_CERT_FILE": str(ca)},
        )  # fmt: skip
        out, err = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 2, (out, err)
        assert {line.split()[0] for line in out.decode().splitlines()[1:4]} == CLUSTERS
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
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, 9)
