"""The ``certificates`` prober on both Kubernetes legs: TLS Secrets and the API server's own."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme
from kubernetes import client

from kubeprober.exporter.kube.access import CheckApi
from kubeprober.probers import certificates
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import NEEDS_KUBE, KubeApiError, Outcome
from kubeprober.probers.status import Status
from tests.probers._probe import probe
from tests.probers._tls_certs import DAY, issue

CA = trustme.CA()


def tls_secret(
    api: client.ApiClient, namespace: str, name: str, valid_for: datetime.timedelta
) -> float:
    """Create a kubernetes.io/tls Secret holding a certificate; return its notAfter."""
    cert, not_after = issue(CA, f"{name}.test", valid_for=valid_for, age=200 * DAY)
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    put_secret(api, namespace, name, chain, cert.private_key_pem.bytes())
    return not_after


def put_secret(api: client.ApiClient, namespace: str, name: str, crt: bytes, key: bytes) -> None:
    data = {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "type": "kubernetes.io/tls", "data": data}
    )


async def test_secrets_and_api_server_valid(
    prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    far = tls_secret(kube_api, ns, "far", 300 * DAY)
    near = tls_secret(kube_api, ns, "near", 30 * DAY + DAY / 2)
    outcome, ctx = await probe(certificates, {"namespaces": [ns]}, kube=prober_kube)
    assert outcome.status is Status.PASS, outcome.message
    assert outcome.message.startswith("3 certificates valid beyond 14 days; the soonest: ")
    server = urlsplit(prober_kube.server)
    api_target = f"{server.hostname}:{server.port}"
    assert ctx.certificates.keys() == {f"secret/{ns}/far", f"secret/{ns}/near", api_target}
    assert ctx.certificates[f"secret/{ns}/far"] == far
    assert ctx.certificates[f"secret/{ns}/near"] == near
    assert ctx.certificates[api_target] > time.time()


async def test_expired_expiring_and_empty_secrets(
    prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    tls_secret(kube_api, ns, "ok", 100 * DAY)
    tls_secret(kube_api, ns, "soon", 3 * DAY + DAY / 2)
    outcome, _ = await probe(
        certificates, {"namespaces": [ns], "apiServer": False}, kube=prober_kube
    )
    assert outcome.status is Status.WARN
    assert f"expiring within 14 days: Secret {ns}/soon on " in outcome.message
    assert outcome.message.endswith(" (3 days): renew them")

    tls_secret(kube_api, ns, "gone", -2 * DAY - DAY / 2)
    put_secret(kube_api, ns, "empty", b"not a certificate", b"")
    outcome, _ = await probe(
        certificates, {"namespaces": [ns], "apiServer": False}, kube=prober_kube
    )
    assert outcome.status is Status.ERROR
    assert outcome.message.startswith(f"expired: Secret {ns}/gone on ")
    assert f"(expired 2 days ago); TLS Secrets with no certificate in tls.crt: {ns}/empty; " in (
        outcome.message
    )
    assert f"expiring within 14 days: Secret {ns}/soon" in outcome.message


async def test_all_namespaces_by_default(
    prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Other tests' Secrets may be there too: only this one's presence is asserted."""
    tls_secret(kube_api, kube_namespace, "anywhere", 100 * DAY)
    _, ctx = await probe(certificates, {"apiServer": False}, kube=prober_kube)
    assert f"secret/{kube_namespace}/anywhere" in ctx.certificates


async def test_without_a_cluster_is_unknown() -> None:
    outcome, _ = await probe(certificates, {}, kube=None)
    assert outcome == Outcome(Status.UNKNOWN, NEEDS_KUBE)


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"namespaces": ["a/b"]}, 'with.namespaces[0]: expected a namespace name, got "a/b"'),
        ({"warnDays": -1}, "with.warnDays: expected integer >= 0"),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(certificates.Spec, opts, "with")
    assert str(caught.value).startswith(error)


class ForbiddenIn:
    """The cluster's API as an agent would see it without a grant in ``namespaces``.

    The API test server authorizes everything, so the refusal a real authorizer gives (403
    Forbidden) is made here, on the prober's side of ctx.kube, for the namespaces named.
    """

    def __init__(self, kube: CheckApi, *namespaces: str) -> None:
        self.kube = kube
        self.namespaces = namespaces

    @property
    def server(self) -> str:
        return self.prober_kube.server

    async def list(self, resource: Any, *, namespace: str | None = None, **kw: Any) -> Any:
        if namespace in self.namespaces:
            raise KubeApiError(
                f"list {resource.plural} in {namespace}: HTTP 403 Forbidden",
                code=403,
                reason="Forbidden",
            )
        return await self.kube.list(resource, namespace=namespace, **kw)


async def test_namespaces_it_may_not_read_are_named(
    prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    tls_secret(kube_api, kube_namespace, "readable", 100 * DAY)
    limited: Any = ForbiddenIn(prober_kube, "secret-place", "other-place")
    opts = {"namespaces": [kube_namespace, "secret-place"], "apiServer": False}
    outcome, ctx = await probe(certificates, opts, kube=limited)
    assert outcome.status is Status.PASS
    assert outcome.message.endswith("; not read (forbidden): namespaces secret-place")
    assert list(ctx.certificates) == [f"secret/{kube_namespace}/readable"]
    outcome, _ = await probe(
        certificates, {"namespaces": ["secret-place", "other-place"]}, kube=limited
    )
    assert outcome == Outcome(
        Status.UNKNOWN,
        "may not list Secrets in any of secret-place, other-place: grant list on secrets",
    )
