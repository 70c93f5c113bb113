"""One cluster cannot act as another, and TLS is verified unless turned off out loud.

What each entry point accepts is tested where it lives (docs/security.md lists them); these
are the cross-cutting cases: what a connected agent can reach at the aggregator through its
own tunnel, whom its messages are taken to be from, and what every TLS client trusts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from kubeprober.exporter.tunnel_client import InsecureTunnel, TunnelClient, tunnel_url
from kubeprober.kube.api import KubeApi
from kubeprober.tunnel.errors import TargetRefused
from kubeprober.tunnel.opening import OpenCode
from tests.tunnel.harness import CLIENT, Aggregator, make_agent, make_tls, toy_app, wait_until


async def test_an_agent_reaches_nothing_at_the_aggregator_but_its_own_events(
    tmp_path: Path,
) -> None:
    hub = Aggregator(make_tls(tmp_path))
    await hub.start()
    hub.add_cluster("mars", tmp_path)
    moon = make_agent(hub.port, hub.add_cluster("moon", tmp_path), hub.tls)
    await moon.start()
    try:
        session = await moon.wait_connected()
        # The targets an agent serves, and the API proxy's: none is served to agents.
        for target in ("agent", "kube-api", "events-mars", "mars"):
            with pytest.raises(TargetRefused) as refused:
                await session.open(target)
            assert refused.value.code == OpenCode.UNKNOWN_TARGET, target
        # Whatever an event claims, it is moon's: the cluster comes from the token.
        assert await moon.notify({"cluster": "mars", "type": "changed"})
        await wait_until(lambda: hub.events, within=5, what="the event")
        assert [cluster for cluster, _ in hub.events] == ["moon"]
    finally:
        await moon.close()
        await hub.stop()


async def test_an_agent_trusts_no_certificate_it_was_not_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    hub = Aggregator(make_tls(tmp_path))
    await hub.start()
    agent = TunnelClient(
        f"wss://127.0.0.1:{hub.port}",
        toy_app(),
        token_file=hub.add_cluster("moon", tmp_path),
        ca_file=None,  # the system's CAs, which never signed the test CA
        settings=CLIENT,
    )
    await agent.start()
    try:

        def refused() -> bool:
            return any("certificate verify failed" in r.getMessage() for r in caplog.records)

        await wait_until(refused, within=5, what="the refused certificate")
        assert not agent.connected
        assert hub.server is not None and hub.server.clusters == []
    finally:
        await agent.close()
        await hub.stop()


def test_plaintext_to_a_remote_aggregator_needs_insecure_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(InsecureTunnel, match="--insecure"):
        tunnel_url("ws://10.1.2.3")
    caplog.set_level(logging.WARNING)
    tunnel_url("wss://10.1.2.3")
    tunnel_url("ws://127.0.0.1:8088")  # loopback: nothing crosses a network
    assert not caplog.records
    tunnel_url("ws://10.1.2.3", insecure=True)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "INSECURE" in record.getMessage()


async def test_a_kubeconfig_turning_tls_verification_off_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def kubeconfig(name: str, **cluster: object) -> Path:
        path = tmp_path / name
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "c", "cluster": {"server": "https://127.0.0.1:1", **cluster}}
                    ],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        return path

    caplog.set_level(logging.WARNING)
    verified = KubeApi.from_kubeconfig(kubeconfig("verified"))
    await verified.close()
    assert not caplog.records
    insecure = KubeApi.from_kubeconfig(kubeconfig("insecure", **{"insecure-skip-tls-verify": True}))
    await insecure.close()
    (record,) = caplog.records
    assert "INSECURE" in record.getMessage() and "insecure" in record.getMessage()
