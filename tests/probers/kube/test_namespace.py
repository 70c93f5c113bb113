"""The ``namespace`` prober: created and gone; stuck Terminating behind a finalizer (both legs)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.runner import run_check
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import NotFound
from kubeprober.kube.resources import NAMESPACES, SERVICES, VALIDATING_WEBHOOKS, Resource
from kubeprober.probers import registry
from kubeprober.probers.namespace import LABEL, Spec, why_stuck
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Context
from kubeprober.probers.status import Status
from tests.conftest import FAST_API
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import KubeCluster
from tests.probers.kube.conftest import RunKube, make_check

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
HOLD = "kubeprober.test/hold"


async def test_namespaces_go_unless_a_finalizer_holds_one(
    kube: KubeApi,
    kube_cluster: KubeCluster,
    kube_fault_proxy: FaultProxy,
    run_kube: RunKube,
) -> None:
    """One run passes; another, whose namespace gets content with a finalizer nobody removes,
    is ERROR naming it from the namespace controller's conditions. Both at once: a real
    namespace controller starts emptying a namespace 5 s after its deletion."""
    tag = uuid.uuid4().hex[:8]
    # What a run cut off by its deadline left behind: the next run deletes it first.
    owner = Context(namespace="default", probe="p", check="c", timeout=1).owner_id()
    leftover = f"kp-test-leftover-{tag}"
    await kube.create(
        NAMESPACES, {"metadata": {"name": leftover, "labels": {LABEL: owner}}}, namespace=""
    )
    passing = asyncio.create_task(
        run_kube("namespace", {"prefix": "kp-test-nsprobe-"}, deadline=15)
    )
    # Hold the second run's DELETE until the finalizer is in place: no race with it.
    held = kube_fault_proxy.hold(method="DELETE", path="/api/v1/namespaces/kp-test-stuck-")
    api = KubeApi.from_kubeconfig(kube_fault_proxy.kubeconfig, settings=FAST_API)
    probe, check = make_check(
        "namespace",
        {"prefix": "kp-test-stuck-", "labels": {"kubeprober.test/tag": tag}},
        timeout=9.0 if kube_cluster.real else 3.0,
        name="stuck",  # its own leftovers: the passing run must not delete this namespace
    )
    stuck = asyncio.create_task(
        run_check(probe, check, registry.get("namespace"), kube=ProberAccess(api))
    )
    name = ""
    try:
        await asyncio.to_thread(held.arrived.wait, 10)
        (ns,) = (await kube.list(NAMESPACES, label_selector=f"kubeprober.test/tag={tag}"))["items"]
        name = ns["metadata"]["name"]
        body = {"metadata": {"name": "held", "finalizers": [HOLD]}}
        await kube.create(CONFIGMAPS, body, namespace=name)
        held.released.set()
        passed, failed = await asyncio.gather(passing, stuck)
    finally:
        held.released.set()
        await asyncio.gather(passing, stuck, return_exceptions=True)
        await api.close()
        if name:
            with contextlib.suppress(NotFound):
                unheld = {"metadata": {"finalizers": None}}
                await kube.patch(CONFIGMAPS, "held", unheld, namespace=name)

    assert passed.status is Status.PASS, passed.message
    with contextlib.suppress(NotFound):
        assert (await kube.get(NAMESPACES, leftover, namespace=""))["metadata"]["deletionTimestamp"]
    assert passed.message.startswith("namespace kp-test-nsprobe-")
    assert {"cleanup", "create", "delete"} <= set(passed.phases)
    left = await kube.list(NAMESPACES, label_selector=LABEL)
    assert not [n for n in left["items"] if n["metadata"]["name"].startswith("kp-test-nsprobe-")]

    assert failed.status is Status.ERROR
    assert failed.message.startswith(f"namespace {name} still Terminating ")
    assert "NamespaceFinalizersRemaining: Some content in the namespace has finalizers " in (
        failed.message
    )
    assert f"{HOLD} in 1 resource instances" in failed.message


def test_why_stuck_without_conditions() -> None:
    assert why_stuck({"status": {"phase": "Terminating"}}) == (
        "the namespace controller has not said why yet"
    )
    assert why_stuck(None) == "gone at last"


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^with\.prefix: expected up to 50 lower-case letters"):
        parse_options(Spec, {"prefix": "Bad_"}, "with")


async def test_a_webhook_whose_backend_is_down_refuses_namespaces(
    kube: KubeApi,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    run_kube: RunKube,
) -> None:
    """Real leg: kube-apiserver calls the webhook, whose Service has no endpoints."""
    if not kube_cluster.real:
        pytest.skip("the API test server calls no admission webhooks: the real leg runs this")
    tag = uuid.uuid4().hex[:8]
    service = {"metadata": {"name": "down"}, "spec": {"ports": [{"port": 443}]}}
    await kube.create(SERVICES, service, namespace=kube_namespace)
    name = f"kp-test-{tag}-namespaces"
    body = {
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "down.kubeprober.test",
                "clientConfig": {"service": {"namespace": kube_namespace, "name": "down"}},
                # Only this test's namespaces: the session's other tests create theirs freely.
                "objectSelector": {"matchLabels": {"kubeprober.test/tag": tag}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["namespaces"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
            }
        ],
    }
    await kube.create(VALIDATING_WEBHOOKS, body, namespace="")
    try:
        options = {"prefix": "kp-test-refused-", "labels": {"kubeprober.test/tag": tag}}
        result = await run_kube("namespace", options, deadline=8)
    finally:
        await kube.delete(VALIDATING_WEBHOOKS, name, namespace="")
    assert result.status is Status.ERROR
    assert result.message.startswith(
        "namespace creation refused: create namespaces kp-test-refused-*: HTTP 500"
    )
    assert 'failed calling webhook "down.kubeprober.test"' in result.message
