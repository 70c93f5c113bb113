"""The aggregator restarted under its agents: every result shown before is shown again after.

The aggregator keeps no results of its own: they live in the agents (and their ``--state-dir``),
which reconnect with the back-off they ship with and are pulled again. So nothing the fleet
showed before the restart may be missing or older after it, an agent restarted during the
outage brings its results back from its state directory, and a result recorded while the
aggregator was away shows up once it is back. (bench/soak.py times the same with 500 agents
and a killed aggregator process.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import aiohttp

from kubeprober.aggregator.process import run_aggregator
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    eventually,
    get_json,
    has_results,
    tcp_probe,
    write_probes,
)

CLUSTERS = ("moon", "mars", "venus")


def results(entry: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """Each check's (status, lastRun) in one cluster's /status entry."""
    return {
        (p["name"], c["name"]): (c["status"], c["lastRun"])
        for p in entry["probes"]
        for c in p["checks"]
        if c["lastRun"] is not None
    }


async def test_no_result_is_lost_across_an_aggregator_restart(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    up, down = server.sockets[0].getsockname()[1], refused.getsockname()[1]
    fleet = FleetFile(tmp_path / "clusters.yaml")
    for name in CLUSTERS:
        fleet.add(name)
    central = await aggregator(fleet.write()).start()
    port = int(central.url.rsplit(":", 1)[1])
    agents = {}
    for name in CLUSTERS:  # no interval: each probe runs once, at start
        probes = write_probes(
            tmp_path / f"{name}.yaml", [tcp_probe("up", up), tcp_probe("down", down)]
        )
        agents[name] = agent(
            name, fleet=fleet, aggregator_url=central.url, probes=probes,
            state_dir=tmp_path / f"state-{name}",
        )  # fmt: skip
        await agents[name].start()
    try:
        async with aiohttp.ClientSession() as http:

            async def fleet_status() -> dict[str, Any]:
                return await get_json(http, central.url + "/status")

            before = await eventually(
                fleet_status,
                lambda d: all(has_results(cluster_of(d, n), "up", "down") for n in CLUSTERS),
                within=20,
                what="every agent's results",
            )
            shown = {n: results(cluster_of(before, n)) for n in CLUSTERS}
            assert all(len(r) == 2 for r in shown.values()), shown
            assert shown["moon"][("up", "check")][0] == "PASS"
            assert shown["moon"][("down", "check")][0] == "ERROR"

            await central.stop()
            # While it is away: mars restarts (its results come back from its state dir)
            # and venus records a new result.
            await agents["mars"].stop()
            await agents["mars"].start()
            write_probes(
                tmp_path / "venus.yaml",
                [tcp_probe("up", up), tcp_probe("down", down), tcp_probe("late", up)],
            )
            venus = agents["venus"].url + "/status"
            await eventually(
                lambda: get_json(http, venus),
                lambda d: has_results(d["clusters"][0] | {"state": "Online"}, "late"),
                within=10,
                what="venus' result recorded while the aggregator is away",
            )

            central = Service(
                "aggregator", run_aggregator, dataclasses.replace(central.settings, port=port)
            )
            await central.start()
            after = await eventually(
                fleet_status,
                lambda d: (
                    all(has_results(cluster_of(d, n), "up", "down") for n in CLUSTERS)
                    and has_results(cluster_of(d, "venus"), "late")
                ),
                within=30,
                what="every agent back with its results",
            )
            for name in CLUSTERS:
                now = results(cluster_of(after, name))
                for check, (status, last_run) in shown[name].items():
                    assert check in now, f"{name} {check}: lost across the restart"
                    assert now[check][1] >= last_run, f"{name} {check}: {now[check]} < {last_run}"
                    assert now[check][0] == status, f"{name} {check}: {now[check]}"
            # Nothing ran again on moon (run-once probes): what is shown is what was recorded.
            assert results(cluster_of(after, "moon")) == shown["moon"]
            history = await get_json(http, central.url + "/status?cluster=mars&history=1")
            for probe in cluster_of(history, "mars")["probes"]:
                (check,) = probe["checks"]
                started = {h["startedAt"] for h in check["history"]}
                assert shown["mars"][(probe["name"], "check")][1] in started, check["history"]
    finally:
        for service in agents.values():
            await service.stop()
        await central.stop()
        server.close()
        await server.wait_closed()
        refused.close()
