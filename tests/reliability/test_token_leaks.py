"""Known tokens through a whole run: none reaches a log line, /status, /metrics or an error."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import aiohttp
import pytest

from tests.aggregator._fleet_harness import (
    FleetFile,
    agent,
    aggregator,
    eventually,
    exec_probe,
    has_results,
    write_operator_tokens,
    write_probes,
)

READ_TOKEN = "read-7f3a9c1e5b2d8a4f"


async def test_no_token_leaks_from_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = FleetFile(tmp_path / "clusters.yaml")
    fleet.add("moon").add("mars")
    fleet.write()
    (tmp_path / "read.token").write_text(READ_TOKEN + "\n")
    operators = write_operator_tokens(tmp_path / "operators", "alice")
    # mars's agent holds moon's token: it must be refused, and say nothing of the secret.
    stolen = tmp_path / "mars-stolen.token"
    stolen.write_text(fleet.tokens["moon"].replace("kp1.moon.", "kp1.mars.") + "\n")
    secrets = [*fleet.tokens.values(), READ_TOKEN, *operators.values()]
    secrets += [t.rsplit(".", 1)[-1] for t in fleet.tokens.values()]  # the secret part alone
    seen: list[str] = []
    hub = await aggregator(
        fleet.path,
        read_token_file=tmp_path / "read.token",
        operator_tokens_file=tmp_path / "operators",
    ).start()
    moon = mars = None
    try:
        probes = write_probes(tmp_path / "probes.yaml", [exec_probe("ok", "true")])
        moon = await agent("moon", fleet=fleet, aggregator_url=hub.url, probes=probes).start()
        mars = agent("mars", fleet=fleet, aggregator_url=hub.url, probes=probes)
        mars.settings = dataclasses.replace(mars.settings, token_file=stolen)
        await mars.start()
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        async with aiohttp.ClientSession() as http:

            async def status() -> str:
                async with http.get(f"{hub.url}/status", headers=read) as answer:
                    text = await answer.text()
                seen.append(text)
                return text

            await eventually(
                status,
                lambda text: any(
                    c["name"] == "moon" and has_results(c, "ok")
                    for c in json.loads(text)["clusters"]
                ),
                within=10,
                what="moon's results",
            )

            async def logged() -> str:
                return _records(caplog)

            await eventually(
                logged,
                lambda text: "401" in text or "rejected" in text,
                within=10,
                what="mars refused",
            )
            for url, headers in [
                (f"{hub.url}/metrics", read),
                (f"{hub.url}/status", {"Authorization": f"Bearer {fleet.tokens['moon']}"}),
                (f"{hub.url}/status", {"Authorization": f"Bearer {READ_TOKEN}x"}),
                (f"{hub.url}/api/v1/clusters/moon/probes/default/ok/run", read),
                (f"{moon.url}/status", {}),
                (f"{moon.url}/metrics", {}),
            ]:
                method = http.post if url.endswith("/run") else http.get
                async with method(url, headers=headers) as answer:
                    seen.append(f"{answer.status} {dict(answer.headers)} {await answer.text()}")
    finally:
        for service in (mars, moon, hub):
            if service is not None:
                await service.stop()
    seen.append(_records(caplog))
    assert "rejected our token" in seen[-1]  # the refusal was logged, so the check can fail
    leaked = [s for s in secrets for text in seen if s in text]
    assert not leaked, leaked


def _records(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
