"""Write kubeprober's Grafana dashboards, dashboards/*.json, from the plain data built here.

Built here so the three share one datasource variable, one cluster variable and one way of
showing a status. The JSON files are committed (and manifests/generate.py wraps them in
ConfigMaps); tests/monitoring/ fails when they differ from what this script writes. Run it
after changing a dashboard: ``.venv/bin/python dashboards/generate.py``, then
``.venv/bin/python manifests/generate.py``.

Fleet views read the recording rules of alerts/kubeprober.rules.yaml (one series per
cluster or per failing check), never every check series of every cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
SCHEMA_VERSION = 39
"""Grafana's dashboard schema version these are written in (Grafana 10.4 to 11.x)."""
DS = {"type": "prometheus", "uid": "${datasource}"}
CLUSTER = 'cluster=~"$cluster"'
CHECK = 'cluster=~"$cluster", namespace=~"$namespace", probe=~"$probe", check=~"$check"'
RATE = "[$__rate_interval]"

# The severity codes of the check:kubeprober_check_severity:max family of recording rules.
STATUS_COLORS = {
    "pending": "text",
    "PASS": "green",
    "INFO": "blue",
    "UNKNOWN": "purple",
    "WARN": "orange",
    "ERROR": "red",
}
SEVERITY_MAPPING = {
    "type": "value",
    "options": {
        str(code): {"text": text, "color": color, "index": code}
        for code, (text, color) in enumerate(STATUS_COLORS.items())
    },
}
STATUS_TEXT_MAPPING = {
    "type": "value",
    "options": {
        text: {"text": text, "color": color, "index": i}
        for i, (text, color) in enumerate(STATUS_COLORS.items())
        if text != "pending"
    },
}
UP_MAPPING = {
    "type": "value",
    "options": {
        "0": {"text": "down", "color": "red", "index": 0},
        "1": {"text": "up", "color": "green", "index": 1},
    },
}
LOADED_MAPPING = {
    "type": "value",
    "options": {
        "0": {"text": "does not load", "color": "red", "index": 0},
        "1": {"text": "loaded", "color": "green", "index": 1},
    },
}
MAINTENANCE_MAPPING = {
    "type": "value",
    "options": {
        "0": {"text": "no", "color": "green", "index": 0},
        "1": {"text": "in maintenance", "color": "blue", "index": 1},
    },
}


def target(expr: str, legend: str = "", *, table: bool = False, ref: str = "A") -> dict[str, Any]:
    """One Prometheus query: a range query for graphs, an instant table for tables."""
    query: dict[str, Any] = {"refId": ref, "datasource": DS, "expr": expr, "editorMode": "code"}
    if table:
        query.update(instant=True, range=False, format="table")
    else:
        query.update(instant=False, range=True, format="time_series", legendFormat=legend)
    return query


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    grid: tuple[int, int, int, int],
    mappings: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    transformations: list[dict[str, Any]] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    no_value: str | None = None,
) -> dict[str, Any]:
    """A panel; ``grid`` is (x, y, width, height) on Grafana's 24-column grid."""
    x, y, w, h = grid
    defaults: dict[str, Any] = {"unit": unit, "mappings": mappings or []}
    if custom:
        defaults["custom"] = custom
    if no_value is not None:
        defaults["noValue"] = no_value
    body: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        body["transformations"] = transformations
    return body


def graph(title: str, description: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """A time series panel with its legend as a table (values people compare)."""
    options = {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, targets, options=options, **kw)


def table(title: str, description: str, expr: str, **kw: Any) -> dict[str, Any]:
    """A table of one instant query's series, one row each, without the Time column."""
    hide = {"Time": True, "__name__": True, "job": True, "instance": True}
    kw.setdefault("transformations", [])
    kw["transformations"] = [
        {"id": "organize", "options": {"excludeByName": hide}},
        *kw["transformations"],
    ]
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, description, [target(expr, table=True)], options=options, **kw)


def timeline(title: str, description: str, expr: str, legend: str, **kw: Any) -> dict[str, Any]:
    """A state timeline of severity codes: one row per series, coloured by status."""
    options = {
        "showValue": "never",
        "mergeValues": True,
        "rowHeight": 0.8,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel(
        "state-timeline",
        title,
        description,
        [target(expr, legend)],
        options=options,
        mappings=[SEVERITY_MAPPING],
        custom={"fillOpacity": 80, "lineWidth": 0},
        **kw,
    )


def stat(title: str, description: str, expr: str, legend: str, **kw: Any) -> dict[str, Any]:
    """A stat of the latest values, one tile per series."""
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "value_and_name",
        "orientation": "auto",
        "justifyMode": "auto",
    }
    return panel("stat", title, description, [target(expr, legend)], options=options, **kw)


def check_link(title: str) -> dict[str, Any]:
    """A data link from a table row to the probe and check dashboard of that row."""
    return {
        "title": title,
        "url": "/d/kubeprober-check/kubeprober-probe-and-check?${datasource:queryparam}"
        "&var-cluster=${__data.fields.cluster}&var-namespace=${__data.fields.namespace}"
        "&var-probe=${__data.fields.probe}&var-check=${__data.fields.check}",
    }


def cluster_link() -> dict[str, Any]:
    """A data link from a table row to the cluster dashboard of that row's cluster."""
    return {
        "title": "Cluster ${__data.fields.cluster}",
        "url": "/d/kubeprober-cluster/kubeprober-cluster?${datasource:queryparam}"
        "&var-cluster=${__data.fields.cluster}",
    }


def links_on(field: str, links: list[dict[str, Any]]) -> dict[str, Any]:
    """A field override that puts data links on one column."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "links", "value": links}],
    }


def status_cell(field: str) -> dict[str, Any]:
    """A field override that colours a status column by status."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [
            {"id": "mappings", "value": [STATUS_TEXT_MAPPING]},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        ],
    }


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value query variable with All (all values: ``.*``)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "regex": "",
    }


DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "options": [],
    "refresh": 1,
    "hide": 0,
    "regex": "",
}
CLUSTER_VARIABLE = variable("cluster", "Cluster", "label_values(kubeprober_agent_up, cluster)")


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    """A whole dashboard; panel ids follow the panels' order."""
    for n, p in enumerate(panels, 1):
        p["id"] = n
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["kubeprober"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [
            {
                "title": "kubeprober",
                "type": "dashboards",
                "tags": ["kubeprober"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "panels": panels,
    }


def fleet() -> dict[str, Any]:
    """Every cluster at a glance: status by cluster and layer, what fails, agents."""
    panels = [
        stat(
            "Clusters by status",
            "Clusters by the worst status of their checks (pending: no check has a result yet). "
            "Whole fleet; Offline clusters have no current checks and are counted in Clusters "
            "by state.",
            "status:kubeprober_clusters:count",
            "{{status}}",
            unit="none",
            grid=(0, 0, 12, 4),
            overrides=[
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
                }
                for name, c in STATUS_COLORS.items()
            ],
        ),
        stat(
            "Clusters by state",
            "Clusters by the state of their agent, as the aggregator sees it: Online, Offline "
            "(no good pull for 45 s), Pending (never connected).",
            "kubeprober_clusters",
            "{{state}}",
            unit="none",
            grid=(12, 0, 6, 4),
        ),
        stat(
            "Agents up",
            "Agents the aggregator pulled successfully the last time, among the selected clusters.",
            f"sum(kubeprober_agent_up{{{CLUSTER}}})",
            "up",
            unit="none",
            grid=(18, 0, 6, 4),
        ),
        table(
            "Failing checks",
            "Every check that is ERROR, WARN or UNKNOWN right now, with its cluster. ERROR: "
            "the target is broken; UNKNOWN: the probe could not tell. Click a row for its "
            "history.",
            f"check:kubeprober_check_status:failing{{{CLUSTER}}}",
            unit="none",
            grid=(0, 4, 16, 9),
            overrides=[
                status_cell("status"),
                {
                    "matcher": {"id": "byName", "options": "Value"},
                    "properties": [{"id": "custom.hidden", "value": True}],
                },
                links_on("check", [check_link("Check ${__data.fields.check}")]),
                links_on("cluster", [cluster_link()]),
            ],
        ),
        table(
            "Agents down",
            "Clusters whose agent the aggregator could not pull the last time: their checks "
            "are unknown and their check alerts suppressed.",
            f"kubeprober_agent_up{{{CLUSTER}}} == 0",
            unit="none",
            grid=(16, 4, 8, 9),
            mappings=[UP_MAPPING],
            overrides=[links_on("cluster", [cluster_link()])],
            no_value="every agent is up",
        ),
        timeline(
            "Status by cluster",
            "The worst status of each cluster's checks over time.",
            f"cluster:kubeprober_check_severity:max{{{CLUSTER}}}",
            "{{cluster}}",
            unit="none",
            grid=(0, 13, 24, 8),
        ),
        timeline(
            "Status by cluster and layer",
            "The worst status of each cluster's checks per layer over time: which layer "
            "breaks where (application, middleware, kubernetes, infrastructure).",
            f"cluster_layer:kubeprober_check_severity:max{{{CLUSTER}}}",
            "{{cluster}} {{layer}}",
            unit="none",
            grid=(0, 21, 24, 10),
        ),
        graph(
            "Checks by status",
            "How many checks of the selected clusters are in each status.",
            [
                target(
                    "sum by (status) "
                    f"(cluster_layer_status:kubeprober_check_status:sum{{{CLUSTER}}})",
                    "{{status}}",
                )
            ],
            unit="none",
            grid=(0, 31, 12, 8),
            overrides=[
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
                }
                for name, c in STATUS_COLORS.items()
            ],
        ),
        table(
            "Certificates expiring first",
            "The ten certificates checks saw that expire first, with the time left.",
            f"bottomk(10, kubeprober_certificate_expiry_timestamp_seconds{{{CLUSTER}}} - time())",
            unit="dtdurations",
            grid=(12, 31, 12, 8),
            overrides=[links_on("check", [check_link("Check ${__data.fields.check}")])],
        ),
    ]
    return dashboard(
        "kubeprober-fleet",
        "kubeprober / Fleet",
        "Every cluster at a glance: status by cluster and layer, what fails now, agents.",
        panels,
        [CLUSTER_VARIABLE],
    )


def cluster() -> dict[str, Any]:
    """One or a few clusters: their checks, their agent and the aggregator's view of it."""
    panels = [
        timeline(
            "Status by layer",
            "The worst status of the cluster's checks per layer over time.",
            f"cluster_layer:kubeprober_check_severity:max{{{CLUSTER}}}",
            "{{cluster}} {{layer}}",
            unit="none",
            grid=(0, 0, 16, 8),
        ),
        table(
            "Agents",
            "Each selected cluster's agent: up (the aggregator pulled it the last time) and "
            "its version (unknown while it is away).",
            f"kubeprober_agent_up{{{CLUSTER}}} * on (cluster) group_left (version) "
            f"kubeprober_agent_info{{{CLUSTER}}} or on (cluster) kubeprober_agent_up{{{CLUSTER}}}",
            unit="none",
            grid=(16, 0, 8, 8),
            mappings=[UP_MAPPING],
        ),
        table(
            "Checks now",
            "Every check of the selected clusters with its current status (a check without a "
            "result yet is not listed). Click a check for its history.",
            f"kubeprober_check_status{{{CLUSTER}}} == 1",
            unit="none",
            grid=(0, 8, 24, 10),
            overrides=[
                status_cell("status"),
                {
                    "matcher": {"id": "byName", "options": "Value"},
                    "properties": [{"id": "custom.hidden", "value": True}],
                },
                links_on("check", [check_link("Check ${__data.fields.check}")]),
            ],
        ),
        graph(
            "Checks by status",
            "How many of the cluster's checks are in each status.",
            [
                target(
                    "sum by (cluster, status) "
                    f"(cluster_layer_status:kubeprober_check_status:sum{{{CLUSTER}}})",
                    "{{cluster}} {{status}}",
                )
            ],
            unit="none",
            grid=(0, 18, 12, 8),
        ),
        graph(
            "Check runs",
            "Check runs per second, by resulting status.",
            [
                target(
                    "sum by (cluster, status) "
                    f"(rate(kubeprober_check_runs_total{{{CLUSTER}}}{RATE}))",
                    "{{cluster}} {{status}}",
                )
            ],
            unit="ops",
            grid=(12, 18, 12, 8),
        ),
        graph(
            "Slowest checks",
            "The ten checks whose last run took longest.",
            [
                target(
                    f"topk(10, kubeprober_check_duration_seconds{{{CLUSTER}}})",
                    "{{cluster}} {{namespace}}/{{probe}} {{check}}",
                )
            ],
            unit="s",
            grid=(0, 26, 12, 8),
        ),
        graph(
            "Scheduler lag (p99)",
            "How late the agent starts probe runs compared with their plan, 99th percentile: "
            "seconds mean the agent is overloaded (too many checks for --max-concurrency, or "
            "too little CPU).",
            [
                target(
                    "histogram_quantile(0.99, sum by (cluster, le) "
                    f"(rate(kubeprober_scheduler_lag_seconds_bucket{{{CLUSTER}}}{RATE})))",
                    "{{cluster}}",
                )
            ],
            unit="s",
            grid=(12, 26, 12, 8),
        ),
        graph(
            "Skipped runs",
            "Probe runs skipped per second because the previous run was still going: the "
            "probe's checks take longer than its interval.",
            [
                target(
                    "sum by (cluster, namespace, probe) "
                    f"(rate(kubeprober_probe_skipped_runs_total{{{CLUSTER}}}{RATE}))",
                    "{{cluster}} {{namespace}}/{{probe}}",
                )
            ],
            unit="ops",
            grid=(0, 34, 12, 8),
        ),
        graph(
            "Time since the last good pull",
            "Seconds since the aggregator last pulled the cluster's agent successfully; the "
            "cluster goes Offline after 45 s.",
            [
                target(
                    f"time() - kubeprober_agent_last_seen_timestamp_seconds{{{CLUSTER}}}",
                    "{{cluster}}",
                )
            ],
            unit="s",
            grid=(12, 34, 12, 8),
        ),
        graph(
            "Pull duration",
            "How long the aggregator's last pull of the agent (its /status and /metrics, "
            "through the tunnel) took.",
            [target(f"kubeprober_agent_pull_duration_seconds{{{CLUSTER}}}", "{{cluster}}")],
            unit="s",
            grid=(0, 42, 12, 8),
        ),
        graph(
            "Series left out",
            "Series of the cluster's agent the aggregator leaves out of /metrics per second "
            "(over --max-series-per-cluster, or a family that clashes): checks not watched.",
            [
                target(
                    "sum by (cluster) "
                    f"(rate(kubeprober_federation_dropped_series_total{{{CLUSTER}}}{RATE}))",
                    "{{cluster}}",
                )
            ],
            unit="ops",
            grid=(12, 42, 12, 8),
        ),
        table(
            "Probe files",
            "Each probe file of the agents (file mode) and whether its last load applied every "
            "Probe in it; one that does not load keeps its previous Probes running.",
            f"kubeprober_config_last_reload_successful{{{CLUSTER}}}",
            unit="none",
            grid=(0, 50, 12, 6),
            mappings=[LOADED_MAPPING],
        ),
        table(
            "Maintenance",
            "Whether the cluster is in maintenance (Cluster spec.maintenance): its alerts are "
            "muted meanwhile.",
            f"kubeprober_cluster_maintenance{{{CLUSTER}}}",
            unit="none",
            grid=(12, 50, 12, 6),
            mappings=[MAINTENANCE_MAPPING],
        ),
    ]
    return dashboard(
        "kubeprober-cluster",
        "kubeprober / Cluster",
        "One cluster (or a few): its checks by layer and status, its agent and its pulls.",
        panels,
        [CLUSTER_VARIABLE],
    )


def check() -> dict[str, Any]:
    """One probe's checks: status history, durations, runs, failures, certificates."""
    variables = [
        CLUSTER_VARIABLE,
        variable(
            "namespace",
            "Namespace",
            'label_values(kubeprober_check_status{cluster=~"$cluster"}, namespace)',
        ),
        variable(
            "probe",
            "Probe",
            'label_values(kubeprober_check_status{cluster=~"$cluster", '
            'namespace=~"$namespace"}, probe)',
        ),
        variable(
            "check",
            "Check",
            'label_values(kubeprober_check_status{cluster=~"$cluster", '
            'namespace=~"$namespace", probe=~"$probe"}, check)',
        ),
    ]
    who = "{{cluster}} {{namespace}}/{{probe}} {{check}}"
    panels = [
        timeline(
            "Status history",
            "Each check's status over time (pending: no result yet).",
            f"check:kubeprober_check_severity:max{{{CHECK}}}",
            who,
            unit="none",
            grid=(0, 0, 24, 8),
        ),
        graph(
            "Duration",
            "How long each check's last run took.",
            [target(f"kubeprober_check_duration_seconds{{{CHECK}}}", who)],
            unit="s",
            grid=(0, 8, 12, 8),
        ),
        graph(
            "Duration by phase",
            "Time each check's last run spent per phase (connect, tls, request...).",
            [target(f"kubeprober_check_phase_duration_seconds{{{CHECK}}}", who + " {{phase}}")],
            unit="s",
            grid=(12, 8, 12, 8),
            custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30},
        ),
        graph(
            "Runs by status",
            "Runs per second, by resulting status.",
            [
                target(
                    "sum by (cluster, namespace, probe, check, status) "
                    f"(rate(kubeprober_check_runs_total{{{CHECK}}}{RATE}))",
                    who + " {{status}}",
                )
            ],
            unit="ops",
            grid=(0, 16, 12, 8),
        ),
        graph(
            "Consecutive failures",
            "Runs in a row that ended ERROR or UNKNOWN (0 once a run passes).",
            [target(f"kubeprober_check_consecutive_failures{{{CHECK}}}", who)],
            unit="none",
            grid=(12, 16, 12, 8),
        ),
        graph(
            "Time since the last run",
            "Seconds since each check last ran, against three times its probe's interval "
            "(past that, KubeproberProbeStale).",
            [
                target(f"time() - kubeprober_check_last_run_timestamp_seconds{{{CHECK}}}", who),
                target(
                    "3 * kubeprober_probe_interval_seconds"
                    '{cluster=~"$cluster", namespace=~"$namespace", probe=~"$probe"}',
                    "3 intervals of {{cluster}} {{namespace}}/{{probe}}",
                    ref="B",
                ),
            ],
            unit="s",
            grid=(0, 24, 12, 8),
        ),
        graph(
            "Time since the last success",
            "Seconds since each check last passed; no line for a check that never did.",
            [target(f"time() - kubeprober_check_last_success_timestamp_seconds{{{CHECK}}}", who)],
            unit="s",
            grid=(12, 24, 12, 8),
        ),
        graph(
            "Certificate expiry",
            "Time left before each certificate the checks saw expires (tls and https checks).",
            [
                target(
                    f"kubeprober_certificate_expiry_timestamp_seconds{{{CHECK}}} - time()",
                    who + " {{target}}",
                )
            ],
            unit="dtdurations",
            grid=(0, 32, 24, 8),
        ),
    ]
    return dashboard(
        "kubeprober-check",
        "kubeprober / Probe and check",
        "A probe's checks on the selected clusters: status history, durations, runs.",
        panels,
        variables,
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard, for every dashboard this script writes."""
    return {"fleet.json": fleet(), "cluster.json": cluster(), "check.json": check()}


def render_json(board: dict[str, Any]) -> str:
    """A dashboard as committed: indented, keys in our order, a final newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    return {DASHBOARDS / name: render_json(board) for name, board in dashboards().items()}


def main() -> int:
    """Write the dashboards."""
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
