"""A hostile agent's answers fail its own pull, cleanly, and never another cluster's."""

from __future__ import annotations

import json
import logging

import pytest

from kubeprober.aggregator.federation import Federation
from kubeprober.aggregator.puller import Puller, PullSettings
from kubeprober.aggregator.views import ClusterView
from kubeprober.tunnel.http.client import AgentClient, Reply

STATUS = json.dumps({"clusters": [{"name": "x", "probes": []}]}).encode()


class Agents(AgentClient):
    """Cluster ``evil`` answers ``/status`` with JSON nested past the decoder's depth."""

    def __init__(self) -> None:
        super().__init__(lambda cluster: None)

    async def get(self, cluster: str, path: str) -> Reply:
        if path != "/status":
            return Reply(200, "OK", {}, b"")
        return Reply(200, "OK", {}, b"[" * 50_000 if cluster == "evil" else STATUS)


async def test_a_deeply_nested_status_fails_only_that_pull(
    caplog: pytest.LogCaptureFixture,
) -> None:
    views = {name: ClusterView(name, connected=True) for name in ("evil", "good")}
    puller = Puller(views, Agents(), Federation(), settings=PullSettings())
    with caplog.at_level(logging.WARNING, logger="kubeprober.aggregator.puller"):
        assert await puller.pull(views["evil"]) is False
        assert await puller.pull(views["good"]) is True
    assert views["evil"].pull_error == "ValueError: JSON nested too deeply", views["evil"]
    assert views["good"].pull_ok and views["good"].report is not None
    assert [r.getMessage() for r in caplog.records] == [
        "pull of cluster evil failed: ValueError: JSON nested too deeply"
    ]
