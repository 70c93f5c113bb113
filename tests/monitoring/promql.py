"""What the monitoring tests share: the rules, the dashboards' queries, and what the product emits.

The metric names the product emits are read from the product itself (the agent's registry, the
aggregator's own families), so a renamed metric fails the rule and dashboard tests at once.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from kubeprober.aggregator.state import OWN, Aggregator, AggregatorSettings
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.store import ResultStore
from tests.binaries import binary

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "alerts" / "kubeprober.rules.yaml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yaml"))
DASHBOARD_FILES = sorted((ROOT / "dashboards").glob("*.json"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def rules() -> list[dict[str, Any]]:
    """Every rule of the rule file, recording and alerting, in order."""
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule."""
    return {r["alert"]: r for r in rules() if "alert" in r}


def records() -> dict[str, dict[str, Any]]:
    """Recorded series name -> its rule."""
    return {r["record"]: r for r in rules() if "record" in r}


def dashboards() -> dict[str, dict[str, Any]]:
    """Committed dashboard file name -> its JSON."""
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def panel_targets(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (panel, target) of a dashboard."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def grafana_expr(expr: str, *, rate_interval: str = "1m", values: Mapping[str, str] = {}) -> str:
    """The PromQL Grafana sends: variables replaced (All is ``.*``), ``$__rate_interval`` given."""
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*"), expr)


def label_values(var: Mapping[str, Any]) -> tuple[str, str]:
    """The series selector and the label of a ``label_values(selector, label)`` variable."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
    assert match, var["query"]
    return match.group(1), match.group(2)


def metric_names(expr: str) -> set[str]:
    """The kubeprober metrics and recorded series an expression names (string literals aside)."""
    return {n for n in _NAME.findall(_STRING.sub('""', expr)) if "kubeprober" in n}


def emitted_metrics() -> set[str]:
    """Sample names the product puts in the aggregator's /metrics (every agent family too)."""
    agent = AgentMetrics(ResultStore(), version="t")
    families = [(f.name, f.type) for f in agent.registry.collect()]
    families += [(f.name, f.type) for f in OWN]
    aggregator = Aggregator(AggregatorSettings())
    aggregator.refresh_own_metrics()
    text = aggregator.federation.render().decode()
    families += re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    names = set()
    for name, kind in families:
        if kind == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def promtool_check_exprs(exprs: Mapping[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules`` on the expressions, each as a recording rule.

    Debian's promtool 2.42 has no ``promql`` command; a rule file is the offline way to parse
    PromQL with Prometheus' own parser.
    """
    rules = [{"record": f"check:expr_{n}:parsed", "expr": e} for n, e in enumerate(exprs.values())]
    path = tmp / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    return subprocess.run(
        [binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
