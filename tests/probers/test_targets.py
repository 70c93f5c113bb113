"""Targets of a check: what each kind of object gives, and ``${target.FIELD}`` filled in.

Rejected ``targets:`` blocks are testdata cases (``testdata/invalid-targets-*.yaml``).
"""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.probers.probe import Check, bind, load_text
from kubeprober.probers.targets import FIELDS, FromObjects, Target, discovered, substitute

SERVICE = {
    "metadata": {"name": "shop", "namespace": "web"},
    "spec": {
        "clusterIP": "10.0.0.7",
        "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80}],
    },
}
INGRESS = {
    "metadata": {"name": "front", "namespace": "web"},
    "spec": {
        "tls": [{"hosts": ["shop.example.com"]}],
        "rules": [{"host": "shop.example.com"}, {"host": "blog.example.com"}, {"http": {}}],
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
}
SLICE = {
    "metadata": {
        "name": "shop-abcde",
        "namespace": "web",
        "labels": {"kubernetes.io/service-name": "shop"},
    },
    "ports": [{"name": "http", "port": 8080}],
    "endpoints": [
        {"addresses": ["10.1.0.1"], "nodeName": "n1", "targetRef": {"name": "shop-1"}},
        {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},
        {"addresses": ["10.1.0.3"], "conditions": {"ready": True}},
    ],
}
POD = {
    "metadata": {"name": "shop-1", "namespace": "web"},
    "spec": {
        "nodeName": "n1",
        "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}],
    },
    "status": {"phase": "Running", "podIP": "10.1.0.1"},
}
NODE = {
    "metadata": {"name": "n1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "10.9.0.1"}]},
}


def fields_of(targets: list[Target]) -> dict[str, dict[str, Any]]:
    return {t.name: dict(t.fields) for t in targets}


@pytest.mark.parametrize(
    ("kind", "obj", "port", "want"),
    [
        (
            "Service",
            SERVICE,
            "http",
            {
                "web/shop": {
                    "name": "shop",
                    "namespace": "web",
                    "host": "shop.web.svc",
                    "ip": "10.0.0.7",
                    "port": 80,
                    "portName": "http",
                }
            },
        ),
        (
            "Ingress",
            INGRESS,
            None,
            {
                "web/front/shop.example.com": {
                    "name": "front",
                    "namespace": "web",
                    "host": "shop.example.com",
                    "tls": True,
                    "scheme": "https",
                    "port": 443,
                    "ip": "192.0.2.10",
                },
                "web/front/blog.example.com": {
                    "name": "front",
                    "namespace": "web",
                    "host": "blog.example.com",
                    "tls": False,
                    "scheme": "http",
                    "port": 80,
                    "ip": "192.0.2.10",
                },
            },
        ),
        (
            "EndpointSlice",
            SLICE,
            None,
            {
                "web/shop/10.1.0.1": {
                    "name": "shop-1",
                    "namespace": "web",
                    "service": "shop",
                    "ip": "10.1.0.1",
                    "node": "n1",
                    "port": 8080,
                    "portName": "http",
                },
                "web/shop/10.1.0.3": {
                    "name": "10.1.0.3",
                    "namespace": "web",
                    "service": "shop",
                    "ip": "10.1.0.3",
                    "port": 8080,
                    "portName": "http",
                },
            },
        ),
        (
            "Pod",
            POD,
            8080,
            {
                "web/shop-1": {
                    "name": "shop-1",
                    "namespace": "web",
                    "ip": "10.1.0.1",
                    "node": "n1",
                    "port": 8080,
                    "portName": "http",
                }
            },
        ),
        ("Node", NODE, None, {"n1": {"name": "n1", "ip": "10.9.0.1", "host": "n1"}}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_kind_gives_its_fields(
    kind: str, obj: dict[str, Any], port: str | int | None, want: dict[str, Any]
) -> None:
    spec = FromObjects(kind=kind, namespace=None, port=port)
    got = fields_of(discovered(spec, frozenset(), obj))
    assert got == want
    for fields in got.values():
        assert set(fields) <= set(FIELDS[kind])


def test_an_object_lacking_a_used_field_is_no_target_yet() -> None:
    starting = {**POD, "status": {"phase": "Pending"}}
    spec = FromObjects(kind="Pod", namespace="web")
    assert discovered(spec, frozenset({"ip"}), starting) == []
    assert [t.name for t in discovered(spec, frozenset({"name"}), starting)] == ["web/shop-1"]
    done = {**POD, "status": {"phase": "Succeeded", "podIP": "10.1.0.1"}}
    assert discovered(spec, frozenset(), done) == []


def test_a_named_port_the_object_lacks_leaves_it_out() -> None:
    spec = FromObjects(kind="Service", namespace="web", port="grpc")
    assert discovered(spec, frozenset(), SERVICE) == []
    # Without a wanted port the first one is taken.
    first = discovered(FromObjects(kind="Service", namespace="web"), frozenset(), SERVICE)
    assert first[0].get("port") == 9090


def test_a_whole_reference_keeps_its_type_and_text_gets_it_inserted() -> None:
    fields = {"host": "a.example", "port": 8443, "tls": True}
    got = substitute(
        {
            "url": "https://${target.host}:${target.port}/",
            "port": "${target.port}",
            "l": ["${target.tls}"],
        },
        fields,
    )
    assert got == {"url": "https://a.example:8443/", "port": 8443, "l": [True]}


def test_bind_names_the_run_and_fills_the_options_in() -> None:
    text = """
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {name: p, namespace: shop}
spec:
  layer: application
  checks:
  - name: api
    prober: tcp
    targets: {fromObjects: {kind: Service, port: http}, max: 20}
    with: {host: "${target.ip}", port: "${target.port}"}
"""
    result = load_text(text, source="p.yaml")
    assert result.errors == []
    (check,) = result.probes[0].checks
    assert check.targets is not None and check.targets.max == 20
    assert check.targets.discovery == FromObjects("Service", "shop", port="http")
    (target,) = discovered(check.targets.discovery, check.targets.used, SERVICE)
    run = bind(check, target)
    assert isinstance(run, Check) and run.name == "api/web/shop" and not run.problem
    assert (run.spec.host, run.spec.port) == ("10.0.0.7", 80)
    broken = bind(check, Target("t", (("ip", "10.0.0.8"), ("port", 70000))))
    assert (
        broken.spec is None and "with.port: expected integer 1-65535, got 70000" in broken.problem
    )


@pytest.mark.parametrize(
    ("port", "hosts"), [(443, ["shop"]), ("http", ["blog"]), (None, ["shop", "blog"])]
)
def test_an_ingress_port_picks_its_tls_or_plain_hosts(
    port: str | int | None, hosts: list[str]
) -> None:
    spec = FromObjects(kind="Ingress", namespace="web", port=port)
    found = [str(t.get("host")).split(".")[0] for t in discovered(spec, frozenset(), INGRESS)]
    assert found == hosts
