"""Alert and recording rules: promtool check and unit tests, coverage, annotations, runbooks."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.binaries import binary
from tests.monitoring.promql import (
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    alerts,
    emitted_metrics,
    metric_names,
    records,
    rules,
)

SEVERITIES = {"critical", "warning"}
FLEET_ALERTS = {"KubeproberAggregatorAbsent"}
"""Alerts about the whole fleet, whose description cannot name a cluster."""


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def unit_tests() -> list[dict[str, Any]]:
    """Every test case of the ``promtool test rules`` files."""
    return [case for path in RULE_TESTS for case in yaml.safe_load(path.read_text())["tests"]]


def test_rule_file_passes_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    done = promtool("test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == set(alerts()), "alerts never shown firing"
    assert quiet == set(alerts()), "alerts never shown quiet"


def test_every_recording_rule_is_unit_tested() -> None:
    tested = {
        name
        for case in unit_tests()
        for check in case.get("promql_expr_test", [])
        for name in metric_names(check["expr"])
    }
    assert set(records()) <= tested


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_says_what_where_and_what_to_do(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    if name not in FLEET_ALERTS:
        assert "{{ $labels.cluster }}" in notes["description"]
    # Alerts on check series name the probe and the check they are about.
    named = metric_names(rule["expr"])
    if any(m.startswith("kubeprober_check_") or "certificate" in m for m in named):
        for label in ("namespace", "probe", "check"):
            assert f"{{{{ $labels.{label} }}}}" in notes["description"], label
    # Muted with the cluster: maintenance for all, agent down for those about its checks.
    if name not in FLEET_ALERTS:
        assert "unless on (cluster) (kubeprober_cluster_maintenance == 1)" in rule["expr"]
    assert notes["runbook_url"] == f"docs/runbooks.md#{name.lower()}"


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    sections = re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), re.M)
    assert sorted(sections) == sorted(alerts())


def test_rules_name_only_metrics_the_product_emits() -> None:
    known = emitted_metrics() | set(records())
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


def test_contracts_name_every_alert_and_recording_rule() -> None:
    contracts = (RUNBOOKS.parent / "contracts.md").read_text()
    for name in [*alerts(), *records()]:
        assert f"`{name}`" in contracts, name
