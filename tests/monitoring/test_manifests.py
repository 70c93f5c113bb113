"""The PrometheusRule and the dashboards' ConfigMaps never drift from their sources."""

from __future__ import annotations

import json

import yaml

from manifests import generate
from tests.manifests.test_kustomize import render
from tests.monitoring.promql import RULES, dashboards


def test_committed_manifests_are_what_the_generator_writes() -> None:
    for path, text in generate.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run manifests/generate.py"


def test_prometheus_rule_holds_the_tested_rule_file() -> None:
    (rule,) = yaml.safe_load_all(generate.PROMETHEUS_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_configmaps_hold_the_dashboards_for_the_sidecar() -> None:
    maps = list(yaml.safe_load_all(generate.CONFIGMAPS.read_text()))
    held = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        held[key.removeprefix("kubeprober-")] = json.loads(text)
    assert held == dashboards()


def test_kustomizations_apply_them() -> None:
    for part, kinds in (
        ("prometheus", ["PrometheusRule", "ServiceMonitor"]),
        ("grafana", ["ConfigMap"] * 3),
    ):
        built = render(part)
        assert sorted(d["kind"] for d in built) == kinds
        assert {d["metadata"]["namespace"] for d in built} == {"kubeprober-central"}
