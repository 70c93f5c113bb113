"""The ``etcd`` prober against a real etcd serving TLS with client-certificate authentication."""

from __future__ import annotations

import base64
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kubeprober.probers import etcd
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Outcome
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers._probe import probe
from tests.probers._servers import Etcd


def options(server: Etcd, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": server.endpoint,
        "caFile": server.ca_file,
        "certFile": server.cert_file,
        "keyFile": server.key_file,
        **extra,
    }


async def gateway(server: Etcd, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to etcd's JSON gateway as an administrator would, apart from the prober."""
    context = ssl.create_default_context(cafile=server.ca_file)
    context.load_cert_chain(server.cert_file, server.key_file)
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.endpoint + path, json=body, ssl=context) as resp,
    ):
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json(content_type=None)
        return doc


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextlib.asynccontextmanager
async def alarm(server: Etcd, name: str) -> AsyncIterator[None]:
    """Raise ``name`` on the member (as etcd does when its quota is full), disarm it after."""
    status = await gateway(server, "/v3/maintenance/status", {})
    member = {"memberID": status["header"]["member_id"], "alarm": name}
    await gateway(server, "/v3/maintenance/alarm", {"action": "ACTIVATE", **member})
    try:
        yield
    finally:
        await gateway(server, "/v3/maintenance/alarm", {"action": "DEACTIVATE", **member})


async def test_healthy_member_takes_a_write(etcd_server: Etcd) -> None:
    outcome, ctx = await probe(etcd, options(etcd_server, key="/kubeprober/written"))
    assert outcome.status is Status.PASS, outcome.message
    assert re.match(
        r"etcd 3\.\d+\.\d+ at https://127.0.0.1:\d+ healthy, leader \d+; ", outcome.message
    )
    assert "put, read and deleted /kubeprober/written/" in outcome.message
    assert {"write", "read", "delete"} <= ctx.phases.keys()
    # What the probe wrote, it deleted: nothing is left under its key.
    left = await gateway(
        etcd_server,
        "/v3/kv/range",
        {"key": b64("/kubeprober/written/"), "range_end": b64("/kubeprober/written0")},
    )
    assert "kvs" not in left


async def test_without_write_it_checks_health_only(etcd_server: Etcd) -> None:
    outcome, ctx = await probe(etcd, options(etcd_server, write=False))
    assert outcome.status is Status.PASS, outcome.message
    assert "put" not in outcome.message and "write" not in ctx.phases


async def test_an_alarm_is_an_error_that_says_what_to_do(etcd_server: Etcd) -> None:
    async with alarm(etcd_server, "NOSPACE"):
        outcome, _ = await probe(etcd, options(etcd_server))
    assert outcome.status is Status.ERROR
    assert "has alarms raised: NOSPACE on member" in outcome.message
    assert "compact and defragment, then disarm" in outcome.message


@pytest.mark.parametrize(
    ("drop", "words"),
    [
        (("certFile", "keyFile"), "no certFile given: does etcd want a client certificate?"),
        (("caFile",), "etcd's certificate rejected"),
    ],
    ids=["no client certificate", "untrusted server certificate"],
)
async def test_tls_refusals_are_errors(
    etcd_server: Etcd, drop: tuple[str, ...], words: str
) -> None:
    opts = {k: v for k, v in options(etcd_server).items() if k not in drop}
    outcome, _ = await probe(etcd, opts)
    assert outcome.status is Status.ERROR
    assert words in outcome.message


async def test_nothing_listening_is_an_error() -> None:
    port = free_port()
    outcome, _ = await probe(etcd, {"endpoint": f"http://127.0.0.1:{port}"})
    assert outcome == Outcome(
        Status.ERROR, f"cannot connect to http://127.0.0.1:{port}/health: Connection refused"
    )


async def test_unreadable_client_certificate_is_unknown(etcd_server: Etcd) -> None:
    outcome, _ = await probe(etcd, options(etcd_server, certFile="/nonexistent/client.pem"))
    assert outcome.status is Status.UNKNOWN
    assert "certFile /nonexistent/client.pem" in outcome.message


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"endpoint": "127.0.0.1:2379"}, "with.endpoint: expected https://host:port"),
        (
            {"endpoint": "https://e:2379", "certFile": "c.pem"},
            "with.keyFile: set certFile and keyFile together",
        ),
        (
            {"endpoint": "http://e:2379", "certFile": "c.pem", "keyFile": "k.pem"},
            "with.certFile: client certificates need an https:// endpoint",
        ),
        (
            {"endpoint": "https://e:2379", "key": "/registry/x"},
            "with.key: stay out of Kubernetes' /registry prefix",
        ),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(etcd.Spec, opts, "with")
    assert str(caught.value).startswith(error)
