"""The ``ingress`` prober against an SNI-routing HTTPS server on loopback, like a controller.

The server picks its certificate by SNI and its backend by Host, as ingress controllers do:
known hosts get their own certificate and page, others the default certificate and a 404.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from kubernetes import client

from kubeprober.exporter.kube.access import CheckApi
from kubeprober.probers import ingress
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import NEEDS_KUBE, Outcome
from kubeprober.probers.status import Status
from tests.probers._probe import probe
from tests.probers._tls_certs import write_ca

HOSTS = ("shop.test", "api.test")


@dataclass(frozen=True)
class Controller:
    """The stand-in's HTTPS and plain HTTP addresses, and the CA file that trusts it."""

    address: str
    plain: str
    ca_file: str


async def route(request: web.Request) -> web.Response:
    host = request.host.split(":")[0]
    if host not in HOSTS or request.path.startswith("/missing"):
        return web.Response(status=404, text="default backend - 404")
    return web.Response(text=f"backend for {host} at {request.path}")


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[trustme.CA, str]]:
    ca = trustme.CA()
    yield ca, write_ca(ca, tmp_path_factory.mktemp("ingress"))


@pytest_asyncio.fixture
async def controller(ca_dir: tuple[trustme.CA, str]) -> AsyncIterator[Controller]:
    ca, ca_file = ca_dir
    hosts = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*HOSTS).configure_cert(hosts)
    default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("ingress.local").configure_cert(default)

    def by_sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.context = hosts if name in HOSTS else default

    default.sni_callback = by_sni  # type: ignore[assignment]
    app = web.Application()
    app.router.add_get("/{tail:.*}", route)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=default).start()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tls_port, plain_port = (address[1] for address in runner.addresses)
    try:
        yield Controller(f"127.0.0.1:{tls_port}", f"127.0.0.1:{plain_port}", ca_file)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (
            {"host": "shop.test", "bodyRegex": "backend for shop.test"},
            Status.PASS,
            "https://shop.test/ via {address}: 200 OK",
        ),
        (
            {"host": "api.test", "path": "/missing"},
            Status.ERROR,
            "https://api.test/missing via {address}: expected status 200-399, got 404: "
            '"default backend - 404"',
        ),
        (
            {"host": "other.test"},
            Status.ERROR,
            "https://other.test/ via {address}: TLS certificate rejected: Hostname mismatch, "
            "certificate is not valid for 'other.test'.",
        ),
        (
            {"host": "other.test", "insecureSkipVerify": True, "expectedCodes": [200]},
            Status.ERROR,
            "https://other.test/ via {address}: expected status 200, got 404: "
            '"default backend - 404"',
        ),
    ],
    ids=["routed", "wrong path", "no certificate for the host", "no backend for the host"],
)
async def test_host_through_an_address(
    controller: Controller, extra: dict[str, Any], status: Status, message: str
) -> None:
    outcome, _ = await probe(
        ingress, {"address": controller.address, "caFile": controller.ca_file, **extra}
    )
    assert outcome == Outcome(status, message.format(address=controller.address))


async def test_plain_http_host(controller: Controller) -> None:
    opts = {"host": "api.test", "address": controller.plain, "scheme": "http", "path": "/v1"}
    outcome, _ = await probe(ingress, {**opts, "bodyRegex": "^backend for api.test at /v1$"})
    assert outcome == Outcome(Status.PASS, f"http://api.test/v1 via {controller.plain}: 200 OK")


def make_ingress(api: client.ApiClient, namespace: str, *, tls: bool) -> None:
    backend = {"service": {"name": "shop", "port": {"number": 80}}}
    spec: dict[str, Any] = {
        "rules": [
            {"host": "api.test", "http": {"paths": [
                {"path": "/v1", "pathType": "Prefix", "backend": backend}]}},
            {"host": "shop.test", "http": {"paths": [
                {"path": "/shop", "pathType": "Prefix", "backend": backend}]}},
        ],
    }  # fmt: skip
    if tls:
        spec["tls"] = [{"hosts": ["shop.test"], "secretName": "shop-tls"}]
    client.NetworkingV1Api(api).create_namespaced_ingress(
        namespace, {"metadata": {"name": "shop"}, "spec": spec}
    )


async def test_target_from_an_ingress_and_its_status(
    controller: Controller, prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    make_ingress(kube_api, kube_namespace, tls=True)
    port = int(controller.address.rsplit(":", 1)[1])
    client.NetworkingV1Api(kube_api).patch_namespaced_ingress_status(
        "shop",
        kube_namespace,
        {"status": {"loadBalancer": {"ingress": [
            {"ip": "127.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}]}}},
    )  # fmt: skip
    opts = {"ingress": f"{kube_namespace}/shop", "host": "shop.test", "caFile": controller.ca_file}
    outcome, _ = await probe(ingress, opts, kube=prober_kube)
    assert outcome == Outcome(
        Status.PASS,
        f"https://shop.test/shop via 127.0.0.1:{port} (Ingress {kube_namespace}/shop): 200 OK",
    )
    # Without host: the first rule with one; not under tls, so plain http, which the
    # controller stand-in does not speak on its TLS port.
    outcome, _ = await probe(ingress, {"ingress": f"{kube_namespace}/shop"}, kube=prober_kube)
    assert outcome.status is Status.ERROR
    assert outcome.message.startswith(f"http://api.test/v1 via 127.0.0.1:{port} (Ingress ")


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"ingress": "{ns}/absent"}, "Ingress {ns}/absent not found"),
        (
            {"ingress": "{ns}/shop", "host": "www.test"},
            "no rule for host www.test (Ingress {ns}/shop): nothing to request",
        ),
    ],
    ids=["no such Ingress", "no rule for the host"],
)
async def test_ingress_faults_are_errors(
    prober_kube: CheckApi,
    kube_api: client.ApiClient,
    kube_namespace: str,
    opts: dict[str, str],
    message: str,
) -> None:
    make_ingress(kube_api, kube_namespace, tls=False)
    options = {k: v.format(ns=kube_namespace) for k, v in opts.items()}
    outcome, _ = await probe(ingress, options, kube=prober_kube)
    assert outcome == Outcome(Status.ERROR, message.format(ns=kube_namespace))


async def test_ingress_without_a_cluster_is_unknown() -> None:
    assert (await probe(ingress, {"ingress": "default/shop"}))[0] == Outcome(
        Status.UNKNOWN, NEEDS_KUBE
    )


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({}, "with.host: set host, ingress, or both"),
        ({"host": "bad host"}, 'with.host: expected a DNS name, got "bad host"'),
        ({"ingress": "a/b/c"}, 'with.ingress: expected namespace/name or name, got "a/b/c"'),
        ({"host": "h.test", "address": "::1"}, "with.address: expected IP, host, host:port"),
        ({"host": "h.test", "address": "[::1]:99999"}, "with.address: expected IP, host"),
        ({"host": "h.test", "path": "x"}, 'with.path: expected a path starting with /, got "x"'),
        ({"host": "h.test", "expectedCodes": [999]}, "with.expectedCodes[0]: expected an HTTP"),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(ingress.Spec, opts, "with")
    assert str(caught.value).startswith(error)


def test_good_addresses_load() -> None:
    for address in ("10.0.0.1", "lb.example.com", "lb.example.com:8443", "[::1]:443", "[::1]"):
        parse_options(ingress.Spec, {"host": "h.test", "address": address}, "with")
