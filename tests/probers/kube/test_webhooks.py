"""The ``webhooks`` prober: a backend that answers TLS, and one that is down (both legs).

The webhooks' rules match a resource nobody has (``kubeprober.test/nothings``), so a real API
server never calls them and other tests are not affected; configurations carry a label per
test, and the prober is told to look only at those.
"""

from __future__ import annotations

import base64
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import trustme

from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import (
    ENDPOINT_SLICES,
    MUTATING_WEBHOOKS,
    PODS,
    SERVICES,
    VALIDATING_WEBHOOKS,
    Resource,
)
from kubeprober.probers.status import Status
from tests.exporter.kube.conftest import eventually
from tests.harness.simulator import LOCAL_IMAGE, Simulator
from tests.probers.kube.conftest import RunKube

TAG = "kubeprober.test/webhooks"
SERVER = """
import os, socket, ssl
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(os.environ["CERT"])
server = socket.create_server((os.environ["POD_IP"], 8443))
while True:
    conn, _ = server.accept()
    try:
        context.wrap_socket(conn, server_side=True).close()
    except (OSError, ssl.SSLError):
        conn.close()
"""


def webhook(name: str, ns: str, service: str, ca: trustme.CA, policy: str) -> dict[str, Any]:
    return {
        "name": f"{name}.kubeprober.test",
        "clientConfig": {
            "service": {"namespace": ns, "name": service, "port": 443},
            "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode(),
        },
        "rules": [
            {
                "apiGroups": ["kubeprober.test"],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["nothings"],
            }
        ],
        "failurePolicy": policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }


def configuration(kind: str, name: str, tag: str, hooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {TAG: tag}},
        "webhooks": hooks,
    }


@pytest_asyncio.fixture
async def configurations(kube: KubeApi) -> AsyncIterator[list[tuple[Resource, str]]]:
    """Webhook configurations to delete after the test."""
    made: list[tuple[Resource, str]] = []
    yield made
    for resource, name in made:
        await kube.delete(resource, name, namespace="")


async def serve_tls(kube: KubeApi, ns: str, ca: trustme.CA, tmp_path: Path) -> None:
    """Run a TLS server behind the Service ``good`` and wait until it is a ready endpoint."""
    cert = tmp_path / "good.pem"
    ca.issue_cert(f"good.{ns}.svc").private_key_and_cert_chain_pem.write_to_path(str(cert))
    pod = {
        "metadata": {"name": "good", "labels": {"app": "good"}},
        "spec": {
            "containers": [
                {
                    "name": "tls",
                    "image": LOCAL_IMAGE,
                    "command": [sys.executable, "-c", SERVER],
                    "env": [
                        {"name": "CERT", "value": str(cert)},
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                    ],
                    "ports": [{"name": "https", "containerPort": 8443}],
                    "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                }
            ]
        },
    }
    await kube.create(PODS, pod, namespace=ns)
    for name, selector in (("good", {"app": "good"}), ("down", {"app": "down"})):
        service = {
            "metadata": {"name": name},
            "spec": {
                "selector": selector,
                "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
            },
        }
        await kube.create(SERVICES, service, namespace=ns)

    async def ready() -> bool:
        slices = await kube.list(
            ENDPOINT_SLICES, namespace=ns, label_selector="kubernetes.io/service-name=good"
        )
        return any(
            (e.get("conditions") or {}).get("ready")
            for s in slices["items"]
            for e in s.get("endpoints") or []
        )

    await eventually(ready, within=20, what="the TLS server as a ready endpoint")


async def test_backends_that_answer_pass_and_down_ones_are_named(
    kube: KubeApi,
    kube_namespace: str,
    kube_simulator: Simulator,
    configurations: list[tuple[Resource, str]],
    run_kube: RunKube,
    tmp_path: Path,
) -> None:
    ns, tag, ca = kube_namespace, uuid.uuid4().hex[:10], trustme.CA()
    await serve_tls(kube, ns, ca, tmp_path)
    good = f"kp-test-{tag}-good"
    body = configuration(
        "ValidatingWebhookConfiguration", good, tag, [webhook("good", ns, "good", ca, "Fail")]
    )
    await kube.create(VALIDATING_WEBHOOKS, body, namespace="")
    configurations.append((VALIDATING_WEBHOOKS, good))
    only_ours = {"labelSelector": f"{TAG}={tag}"}

    passed = await run_kube("webhooks", only_ours)
    assert (passed.status, passed.message) == (
        Status.PASS,
        "1 webhooks: every backend ready and completing TLS",
    )

    # A certificate from another CA: the API server could not call it either.
    other = f"kp-test-{tag}-other"
    body = configuration(
        "MutatingWebhookConfiguration",
        other,
        tag,
        [webhook("untrusted", ns, "good", trustme.CA(), "Ignore")],
    )
    await kube.create(MUTATING_WEBHOOKS, body, namespace="")
    configurations.append((MUTATING_WEBHOOKS, other))
    warned = await run_kube("webhooks", only_ours)
    assert warned.status is Status.WARN
    assert warned.message.startswith(
        f"mutating webhook {other}/untrusted.kubeprober.test (failurePolicy Ignore): "
        "TLS handshake failed with "
    )
    assert "certificate not trusted for this name" in warned.message

    down = f"kp-test-{tag}-down"
    body = configuration(
        "ValidatingWebhookConfiguration", down, tag, [webhook("down", ns, "down", ca, "Fail")]
    )
    await kube.create(VALIDATING_WEBHOOKS, body, namespace="")
    configurations.append((VALIDATING_WEBHOOKS, down))
    failed = await run_kube("webhooks", only_ours)
    assert failed.status is Status.ERROR
    assert failed.message.startswith(
        f"validating webhook {down}/down.kubeprober.test (failurePolicy Fail): its service "
        f"{ns}/down has no ready endpoints; it blocks what it matches; mutating webhook "
    )
