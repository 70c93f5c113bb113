"""Agent metrics (docs/contracts.md): families and labels, fresh per scrape, valid for promtool."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.binaries import binary
from tests.exporter.fakes import check, make_probe

CHECK = {"namespace", "probe", "check", "layer"}
PROBE = {"namespace", "probe", "layer"}
# family name (as the text parser reports it) -> (type, label names of its samples)
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "kubeprober_check_success": ("gauge", CHECK),
    "kubeprober_check_status": ("gauge", CHECK | {"status"}),
    "kubeprober_check_duration_seconds": ("gauge", CHECK),
    "kubeprober_check_phase_duration_seconds": ("gauge", CHECK | {"phase"}),
    "kubeprober_check_last_run_timestamp_seconds": ("gauge", CHECK),
    "kubeprober_check_last_success_timestamp_seconds": ("gauge", CHECK),
    "kubeprober_check_consecutive_failures": ("gauge", CHECK),
    "kubeprober_check_runs": ("counter", CHECK | {"status"}),
    "kubeprober_certificate_expiry_timestamp_seconds": ("gauge", CHECK | {"target"}),
    "kubeprober_probe_interval_seconds": ("gauge", PROBE),
    "kubeprober_probe_skipped_runs": ("counter", PROBE),
    "kubeprober_agent_info": ("gauge", {"version"}),
    "kubeprober_agent_tunnel_connected": ("gauge", set()),
    "kubeprober_probestatus_lag_seconds": ("gauge", set()),
    "kubeprober_scheduler_lag_seconds": ("histogram", set()),
}
WEB = make_probe("web", (check("home"), check("login"), check("never")), interval=30)
DB = make_probe("db", (check("tcp"),), namespace="team-a", layer="middleware")


def filled(tunnel: bool | None = True, lag: float | None = 0.0) -> tuple[ResultStore, AgentMetrics]:
    """A store with results of every kind and the metrics over it."""
    store = ResultStore()
    store.set_probes([WEB, DB])
    store.set_schedule(WEB.key, next_run=1_800_000_030.0, interval=30.0)
    store.count_skipped(WEB.key)
    store.record(
        WEB.key,
        {
            "home": CheckResult(
                Status.PASS,
                "",
                1_800_000_000.0,
                0.25,
                {"connect": 0.01, "tls": 0.05},
                {"shop.example:443": 1_900_000_000.0},
            ),
            "login": CheckResult(Status.PASS, "", 1_800_000_000.0, 0.5),
        },
        duration=0.5,
    )
    store.record(
        WEB.key,
        {
            "home": CheckResult(Status.WARN, "slow", 1_800_000_030.0, 2.0),
            "login": CheckResult(Status.ERROR, "HTTP 500", 1_800_000_030.0, 0.75),
        },
        duration=2.0,
    )
    store.record(
        DB.key,
        {
            "tcp": CheckResult(
                Status.UNKNOWN, "hung", 1_800_000_000.0, 5.0, {"connect": 5.0}, {"db:5432": 2e9}
            )
        },
        duration=5,
    )
    metrics = AgentMetrics(
        store, version="1.2.3", tunnel_connected=lambda: tunnel, status_lag=lambda: lag
    )
    metrics.scheduler_lag.observe(0.004)
    metrics.scheduler_lag.observe(0.3)
    return store, metrics


def scrape(metrics: AgentMetrics) -> dict[str, list[Sample]]:
    """Render text 0.0.4 and return the samples of each kubeprober family."""
    text = generate_latest(metrics.registry).decode()
    return {
        f.name: f.samples
        for f in text_string_to_metric_families(text)
        if f.name.startswith("kubeprober_")
    }


def value(samples: list[Sample], name: str | None = None, **labels: str) -> float:
    """Return the one sample matching ``labels`` (and sample ``name``)."""
    found = [
        s
        for s in samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (labels, found)
    return found[0].value


def test_every_family_with_its_type_and_labels() -> None:
    _, metrics = filled()
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in FAMILIES.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, name
        assert family.documentation, name
        assert family.samples, f"{name} has no samples"
        for sample in family.samples:
            if kind == "histogram":
                assert set(sample.labels) <= {"le"}
            else:
                assert set(sample.labels) == labels, (name, sample)
    assert "# TYPE kubeprober_check_runs_total counter" in text
    assert "kubeprober_probe_skipped_runs_total{" in text


def test_check_status_has_five_series_and_one_is_set() -> None:
    _, metrics = filled()
    samples = scrape(metrics)["kubeprober_check_status"]
    expected = {
        ("web", "home"): Status.WARN,
        ("web", "login"): Status.ERROR,
        ("db", "tcp"): Status.UNKNOWN,
    }
    for (probe, name), current in expected.items():
        series = {
            s.labels["status"]: s.value
            for s in samples
            if (s.labels["probe"], s.labels["check"]) == (probe, name)
        }
        assert series == {s.value: 1.0 if s is current else 0.0 for s in Status}


@pytest.mark.parametrize(
    ("probe", "name", "success", "failures"),
    [("web", "home", 1.0, 0.0), ("web", "login", 0.0, 1.0), ("db", "tcp", 0.0, 1.0)],
)
def test_per_check_values(probe: str, name: str, success: float, failures: float) -> None:
    _, metrics = filled()
    samples = scrape(metrics)
    labels = {"probe": probe, "check": name}
    assert value(samples["kubeprober_check_success"], **labels) == success
    assert value(samples["kubeprober_check_consecutive_failures"], **labels) == failures


def test_values_and_labels() -> None:
    _, metrics = filled()
    m = scrape(metrics)
    home = {"namespace": "default", "probe": "web", "check": "home", "layer": "application"}
    assert value(m["kubeprober_check_duration_seconds"], **home) == 2.0
    assert value(m["kubeprober_check_last_run_timestamp_seconds"], **home) == 1_800_000_030.0
    assert value(m["kubeprober_check_last_success_timestamp_seconds"], **home) == 1_800_000_030.0
    assert (
        value(m["kubeprober_check_last_success_timestamp_seconds"], check="login")
        == 1_800_000_000.0
    )
    runs = m["kubeprober_check_runs"]
    assert value(runs, "kubeprober_check_runs_total", check="home", status="PASS") == 1
    assert value(runs, "kubeprober_check_runs_total", check="home", status="WARN") == 1
    assert value(runs, "kubeprober_check_runs_total", check="home", status="ERROR") == 0
    tcp = {"namespace": "team-a", "probe": "db", "check": "tcp", "layer": "middleware"}
    assert value(runs, **tcp, status="UNKNOWN") == 1
    assert value(m["kubeprober_probe_interval_seconds"], probe="web") == 30.0
    assert value(m["kubeprober_probe_skipped_runs"], probe="web") == 1
    assert value(m["kubeprober_probe_skipped_runs"], probe="db") == 0
    assert value(m["kubeprober_agent_info"], version="1.2.3") == 1
    assert value(m["kubeprober_agent_tunnel_connected"]) == 1
    lag = m["kubeprober_scheduler_lag_seconds"]
    assert value(lag, "kubeprober_scheduler_lag_seconds_count") == 2
    assert value(lag, "kubeprober_scheduler_lag_seconds_bucket", le="0.005") == 1


def test_phases_and_certificates_are_from_the_latest_run() -> None:
    store, metrics = filled()
    # The latest run of "home" had no phases or certificates: none are shown.
    before = scrape(metrics)
    assert not [
        s for s in before["kubeprober_check_phase_duration_seconds"] if s.labels["check"] == "home"
    ]
    assert not [
        s
        for s in before["kubeprober_certificate_expiry_timestamp_seconds"]
        if s.labels["check"] == "home"
    ]
    store.record(
        WEB.key,
        {
            "home": CheckResult(
                Status.PASS,
                "",
                1_800_000_060.0,
                0.2,
                {"connect": 0.01, "tls": 0.05},
                {"a:443": 2e9},
            )
        },
        duration=0.2,
    )
    m = scrape(metrics)
    phases = [
        s for s in m["kubeprober_check_phase_duration_seconds"] if s.labels["check"] == "home"
    ]
    assert {s.labels["phase"]: s.value for s in phases} == {"connect": 0.01, "tls": 0.05}
    assert value(m["kubeprober_check_phase_duration_seconds"], check="tcp", phase="connect") == 5.0
    certs = m["kubeprober_certificate_expiry_timestamp_seconds"]
    assert value(certs, check="home", target="a:443") == 2e9


def test_check_without_result_and_never_successful() -> None:
    _, metrics = filled()
    m = scrape(metrics)
    # Counters exist from the start, so rate() and increase() see the first run.
    assert value(m["kubeprober_check_runs"], check="never", status="PASS") == 0
    assert not [s for s in m["kubeprober_check_success"] if s.labels["check"] == "never"]
    # Pending: all five status series there, none at 1 (not UNKNOWN, which pages people).
    pending = {
        s.labels["status"]: s.value
        for s in m["kubeprober_check_status"]
        if s.labels["check"] == "never"
    }
    assert pending == {s.value: 0.0 for s in Status}
    # A check that never succeeded has no last-success timestamp (not 0, i.e. 1970).
    assert not [
        s for s in m["kubeprober_check_last_success_timestamp_seconds"] if s.labels["probe"] == "db"
    ]


def test_once_probe_has_no_interval() -> None:
    _, metrics = filled()
    interval = scrape(metrics)["kubeprober_probe_interval_seconds"]
    assert [s.labels["probe"] for s in interval] == ["web"]


@pytest.mark.parametrize(("tunnel", "expected"), [(None, None), (False, 0.0), (True, 1.0)])
def test_tunnel_connected(tunnel: bool | None, expected: float | None) -> None:
    _, metrics = filled(tunnel)
    samples = scrape(metrics).get("kubeprober_agent_tunnel_connected", [])
    assert [s.value for s in samples] == ([] if expected is None else [expected])


@pytest.mark.parametrize("lag", [None, 0.0, 12.5])
def test_probestatus_lag(lag: float | None) -> None:
    _, metrics = filled(lag=lag)
    samples = scrape(metrics).get("kubeprober_probestatus_lag_seconds", [])
    assert [s.value for s in samples] == ([] if lag is None else [lag])


def test_removed_probe_series_disappear() -> None:
    store, metrics = filled()
    assert 'probe="db"' in generate_latest(metrics.registry).decode()
    store.set_probes([WEB])
    text = generate_latest(metrics.registry).decode()
    assert 'probe="db"' not in text
    assert 'probe="web"' in text
    store.set_probes([])
    text = generate_latest(metrics.registry).decode()
    assert 'probe="' not in text
    assert "kubeprober_agent_info{" in text


def test_removed_check_series_disappear() -> None:
    store, metrics = filled()
    store.set_probes([make_probe("web", (check("home"),), interval=30), DB])
    text = generate_latest(metrics.registry).decode()
    assert 'check="login"' not in text
    assert 'check="home"' in text


def test_registry_is_the_agents_own() -> None:
    _, first = filled()
    _, second = filled()  # a second agent in the same process: no duplicate registration
    assert first.registry is not second.registry
    assert b"kubeprober_" not in generate_latest(REGISTRY)


def test_openmetrics_when_asked() -> None:
    _, metrics = filled()
    encoder, content_type = choose_encoder("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = encoder(metrics.registry).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert families["kubeprober_check_runs"].type == "counter"
    assert families["kubeprober_probe_skipped_runs"].type == "counter"
    assert families["kubeprober_check_status"].type == "gauge"
    assert families["kubeprober_scheduler_lag_seconds"].type == "histogram"


def test_text_by_default() -> None:
    encoder, content_type = choose_encoder("")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    _, metrics = filled()
    assert "# EOF" not in encoder(metrics.registry).decode()


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check metrics`` on an exposition."""
    return subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("tunnel", [True, None])
def test_promtool_accepts_the_exposition(tunnel: bool | None) -> None:
    _, metrics = filled(tunnel)
    done = promtool_check(generate_latest(metrics.registry).decode())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # no lint findings either


def test_promtool_accepts_an_empty_agent() -> None:
    metrics = AgentMetrics(ResultStore(), version="0.0.0")
    done = promtool_check(generate_latest(metrics.registry).decode())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""
