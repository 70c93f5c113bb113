"""The Grafana dashboards: the dashboard-linter's core rules, Grafana's schema, valid PromQL.

Grafana's schema: no Grafana server can be installed here, so each dashboard goes through the
types grafana-foundation-sdk generates from Grafana 11.6's schema (its dashboard, panel-options
and Prometheus query models): a key the schema does not know where we put it is lost in the
round trip, and the test names it. Types and enums those models do not check are linted below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import generate
from tests.monitoring.promql import (
    ROOT,
    dashboards,
    emitted_metrics,
    grafana_expr,
    label_values,
    metric_names,
    panel_targets,
    promtool_check_exprs,
    records,
)

DS = {"type": "prometheus", "uid": "${datasource}"}
UIDS = {
    "fleet.json": "kubeprober-fleet",
    "cluster.json": "kubeprober-cluster",
    "check.json": "kubeprober-check",
}
"""Stable: links (the board's, people's bookmarks) name dashboards by uid."""
UNITS = {"none", "short", "s", "ms", "ops", "reqps", "dtdurations", "percentunit", "bytes"}
"""Grafana unit ids these dashboards may use (all in Grafana's unit list)."""
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv)\s*\(")
COUNTER = re.compile(r"\b\w+(_total|_bucket|_sum|_count)\b")

register_default_plugins()


def lost_in_round_trip(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Paths of what ``ours`` holds that ``theirs`` (the schema's round trip) lost or changed."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [
            p
            for key, value in ours.items()
            for p in (
                lost_in_round_trip(value, theirs[key], f"{path}.{key}")
                if key in theirs
                else [f"{path}.{key}"]
            )
        ]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        pairs = enumerate(zip(ours, theirs, strict=True))
        return [p for i, (a, b) in pairs for p in lost_in_round_trip(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} became {theirs!r}"]


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    for path, text in generate.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run dashboards/generate.py"
    assert {p.name for p in generate.outputs()} == set(dashboards()) == set(UIDS)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_fits_grafanas_schema(name: str) -> None:
    board = dashboards()[name]
    model = Dashboard.from_json(board)
    theirs = json.loads(json.dumps(model.to_json(), cls=JSONEncoder))
    assert lost_in_round_trip(board, theirs) == []
    for panel in board["panels"]:  # the SDK keeps an unknown type, so check it is a core panel
        assert runtime.panelcfg_config(panel["type"]) is not None, panel["type"]


def test_the_round_trip_catches_what_the_schema_does_not_know() -> None:
    board = dashboards()["fleet.json"]
    board["panels"][0]["options"]["colourMode"] = "background"
    board["panels"][0]["targets"][0]["query"] = "up"
    theirs = json.loads(json.dumps(Dashboard.from_json(board).to_json(), cls=JSONEncoder))
    assert lost_in_round_trip(board, theirs) == [
        ".panels[0].targets[0].query",
        ".panels[0].options.colourMode",
    ]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_follows_the_linter_rules(name: str) -> None:
    board = dashboards()[name]
    assert board["uid"] == UIDS[name]
    assert board["title"].startswith("kubeprober / ") and board["description"]
    assert "kubeprober" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    # template-datasource-rule: a Prometheus datasource variable, labelled as Grafana's own.
    source = variables["datasource"]
    assert (source["type"], source["query"], source["label"]) == (
        "datasource",
        "prometheus",
        "Data source",
    )
    cluster = variables["cluster"]
    assert cluster["multi"] and cluster["includeAll"] and cluster["allValue"] == ".*"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS, var["name"]
            assert var["multi"] and var["includeAll"], var["name"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        where = f"{name}: {panel['title']!r}"
        # panel-title-description-rule
        assert panel["title"] and len(panel["description"]) > 20, where
        # panel-datasource-rule: every panel and query reads $datasource
        assert panel["datasource"] == DS, where
        assert panel["targets"], where
        # panel-units-rule
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, where
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "xywh"), where
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, where
        columns, rows = range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        mine = {(x, y) for x in columns for y in rows}
        assert not mine & cells, f"{where} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
    for panel, target in panel_targets(board):
        where = f"{name}: {panel['title']!r} {target['refId']}"
        assert target["datasource"] == DS, where
        expr = target["expr"]
        # target-rate-interval-rule: every range function over $__rate_interval
        for match in RANGE_FUNCTIONS.finditer(expr):
            assert expr[match.end() :].split("]", 1)[0].endswith("[$__rate_interval"), where
        # counters and histogram buckets are read only through a range function
        for match in COUNTER.finditer(expr):
            before = expr[: match.start()]
            assert RANGE_FUNCTIONS.search(before), f"{where}: {match.group(0)} outside rate()"
        # no padding that makes a query look alive when it has nothing to show
        assert "vector(" not in expr and "absent(" not in expr, where


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exprs: dict[str, str] = {}
    for name, board in dashboards().items():
        for panel, target in panel_targets(board):
            exprs[f"{name} {panel['title']} {target['refId']}"] = grafana_expr(target["expr"])
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                exprs[f"{name} variable {var['name']}"] = grafana_expr(label_values(var)[0])
    done = promtool_check_exprs(exprs, tmp_path)
    assert done.returncode == 0, f"{list(exprs)}\n{done.stdout}{done.stderr}"


def test_dashboards_name_only_metrics_the_product_or_its_rules_emit() -> None:
    known = emitted_metrics() | set(records())
    for name, board in dashboards().items():
        named = {m for _, t in panel_targets(board) for m in metric_names(t["expr"])}
        named |= {
            m
            for v in board["templating"]["list"]
            if v["type"] == "query"
            for m in metric_names(label_values(v)[0])
        }
        assert named and not named - known, f"{name}: {sorted(named - known)}"


def test_fleet_views_read_recording_rules_not_every_check_series() -> None:
    board = dashboards()["fleet.json"]
    for panel, target in panel_targets(board):
        raw = metric_names(target["expr"]) - set(records())
        # The fleet reads per-cluster series, recorded ones, and check series per failing check
        # or per certificate only: never every check series of every cluster.
        assert not {m for m in raw if m.startswith("kubeprober_check_")}, panel["title"]


def test_grafana_provisioning_file_points_at_the_dashboards() -> None:
    doc = yaml.safe_load((ROOT / "dashboards" / "provisioning.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["folder"] == "kubeprober"
    assert provider["options"]["path"].startswith("/")
