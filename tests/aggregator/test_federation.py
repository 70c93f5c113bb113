"""Federated /metrics: relabel once per pull, one HELP/TYPE per family, match[], promtool-valid."""

from __future__ import annotations

import gzip
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.aggregator import exposition, federation
from kubeprober.aggregator.exposition import ExpositionError, parse, parse_lines
from kubeprober.aggregator.exposition_match import parse_selector
from kubeprober.aggregator.federation import Federation, OwnFamily
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.probe import Probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.binaries import binary
from tests.exporter.fakes import check, make_probe

OWN = (
    OwnFamily("kubeprober_agent_up", "1 if the last pull of the cluster's agent succeeded."),
    OwnFamily(
        "kubeprober_agent_last_seen_timestamp_seconds", "When the agent was last heard from."
    ),
    OwnFamily("kubeprober_agent_pull_duration_seconds", "How long the last pull took."),
    OwnFamily("kubeprober_cluster_maintenance", "1 while the cluster is in maintenance."),
)


def relabelled(body: str, cluster: str | None = "moon") -> list[str]:
    """Return every sample line of ``body`` after parsing and relabelling."""
    families = parse(body.encode(), cluster=cluster, source="test")
    return [line for f in families for line in f.lines.decode().splitlines()]


def samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
    """Parse an exposition with prometheus_client and return (name, labels, value) per sample."""
    return [
        (s.name, s.labels, s.value)
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    ]


def type_lines(text: bytes) -> list[str]:
    """Return the family names of every TYPE line, in order."""
    return [line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE ")]


def promtool_check(text: bytes) -> None:
    """Assert that the real ``promtool check metrics`` accepts ``text`` without lint problems."""
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("x 1", ['x{cluster="moon"} 1']),
        ("x{} 1", ['x{cluster="moon"} 1']),
        ('x{a="b"} 1', ['x{cluster="moon",a="b"} 1']),
        ('x{a="b",} 1', ['x{cluster="moon",a="b",} 1']),
        ('x{a="q\\"b\\\\s\\nn"} 1', ['x{cluster="moon",a="q\\"b\\\\s\\nn"} 1']),
        ("x 1 1700000000000", ['x{cluster="moon"} 1 1700000000000']),
        ('x{a="b"} 2.5 -12', ['x{cluster="moon",a="b"} 2.5 -12']),
        ("x NaN", ['x{cluster="moon"} NaN']),
        (
            "x +Inf\ny -Inf\nz 1.8e+09",
            ['x{cluster="moon"} +Inf', 'y{cluster="moon"} -Inf', 'z{cluster="moon"} 1.8e+09'],
        ),
        ('x{cluster="own"} 1', ['x{cluster="moon",exported_cluster="own"} 1']),
        (
            'x{cluster="a",exported_cluster="b"} 1',
            ['x{cluster="moon",exported_exported_cluster="a",exported_cluster="b"} 1'],
        ),
        ('x{a="x,cluster="} 1', ['x{cluster="moon",a="x,cluster="} 1']),
        ('  x { a = "b" }  1  ', ['x { cluster="moon",a = "b" }  1  ']),
        ("# a comment\n\n#\n# HELP x h\nx 1\n", ['x{cluster="moon"} 1']),
    ],
)
def test_relabel(body: str, expected: list[str]) -> None:
    assert relabelled(body) == expected


@pytest.mark.parametrize("cluster", ["moon", 'we"ird', "back\\slash", "new\nline", "ünï"])
def test_cluster_names_escaped(cluster: str) -> None:
    body = '# TYPE x gauge\nx{a="q\\"\\\\\\n"} 1\nx 2\n'
    families = parse(body.encode(), cluster=cluster, source="test")
    got = samples(b"# TYPE x gauge\n" + families[0].lines)
    assert got == [
        ("x", {"cluster": cluster, "a": 'q"\\\n'}, 1.0),
        ("x", {"cluster": cluster}, 2.0),
    ]


def test_extra_series_keep_their_labels() -> None:
    assert relabelled('x{a="b"} 1\n  y 2', cluster=None) == ['x{a="b"} 1', "y 2"]


@pytest.mark.parametrize(
    ("body", "families"),
    [
        pytest.param(
            "# HELP h d\n# TYPE h histogram\n"
            'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 3\n'
            "# HELP h_created d\n# TYPE h_created gauge\nh_created 1.7e+09\n",
            [("h", "histogram", 4), ("h_created", "gauge", 1)],
            id="histogram-with-created",
        ),
        pytest.param(
            "# HELP c_total d\n# TYPE c_total counter\nc_total 1\nc_created 5\n",
            [("c_total", "counter", 1), ("c_created", "untyped", 1)],
            id="counter-bare-created",
        ),
        pytest.param(
            '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\n',
            [("s", "summary", 3)],
            id="summary",
        ),
        pytest.param(
            '# HELP i_info d\n# TYPE i_info gauge\ni_info{version="1"} 1\n',
            [("i_info", "gauge", 1)],
            id="info-as-gauge",
        ),
        pytest.param(
            "u 1\n# TYPE g gauge\ng 1\nu_sum 4\n",
            [("u", "untyped", 1), ("g", "gauge", 1), ("u_sum", "untyped", 1)],
            id="untyped-no-suffix-magic",
        ),
        pytest.param(
            '# TYPE g gauge\ng{a="1"} 1\n# TYPE k gauge\nk 1\ng{a="2"} 2\n',
            [("g", "gauge", 2), ("k", "gauge", 1)],
            id="non-contiguous-samples-join-their-family",
        ),
        pytest.param("# TYPE e gauge\n# HELP e d\n", [], id="family-without-samples-dropped"),
        pytest.param("# TYPE U UNTYPED\nU 1", [("U", "untyped", 1)], id="type-case"),
    ],
)
def test_families(body: str, families: list[tuple[str, str, int]]) -> None:
    parsed = parse(body.encode(), cluster="moon", source="test")
    assert [(f.name, f.type, f.samples) for f in parsed] == families


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ('x{a="b} 1', 1, "invalid sample line"),
        ('x{a="\\t"} 1', 1, "invalid sample line"),
        ("x", 1, "invalid sample line"),
        ("x abc", 1, "invalid sample line"),
        ("x 1 1.5", 1, "invalid sample line"),
        ("x 1 2 3", 1, "invalid sample line"),
        ('x{1a="b"} 1', 1, "invalid sample line"),
        ("x 1\r", 1, "invalid sample line"),
        ('x 1 # {t="1"} 1', 1, "invalid sample line"),
        ("# TYPE x gauge\n# TYPE x counter\n", 2, "second TYPE line"),
        ("x 1\n# TYPE x gauge\n", 2, "TYPE line after samples"),
        ("# TYPE x gauges\n", 1, "unknown metric type"),
        ("# TYPE x\n", 1, "invalid TYPE line"),
        ("# HELP x a\n# HELP x b\n", 2, "second HELP line"),
        ("# HELP x bad \\t escape\n", 1, "invalid HELP line"),
        ("# HELP 1x a\n", 1, "invalid HELP line"),
        ("# TYPE h histogram\nh 1\n", 2, "not valid for its family"),
        ("ok 1\nok2 2\nbad\xff 3\n", 3, "invalid UTF-8"),
    ],
)
def test_invalid_bodies_name_cluster_and_line(body: str, line: int, reason: str) -> None:
    raw = body.encode("latin-1") if "\xff" in body else body.encode()
    with pytest.raises(ExpositionError) as err:
        Federation().ingest("moon", raw)
    assert err.value.lineno == line
    assert reason in str(err.value)
    assert str(err.value).startswith(f"cluster moon: line {line}: ")


def agent_body(probes: list[Probe], *, version: str = "1.0.0", fail: str = "") -> bytes:
    """Render a real agent's /metrics over a store with one run of every check."""
    store = ResultStore()
    store.set_probes(probes)
    for p in probes:
        store.set_schedule(p.key, next_run=1_800_000_060.0, interval=p.interval)
        results = {
            c.name: CheckResult(
                Status.ERROR if c.name == fail else Status.PASS,
                "boom" if c.name == fail else "",
                1_800_000_000.0,
                0.25,
                {"connect": 0.01},
                {"shop.example:443": 1_900_000_000.0} if c.name == "tls" else {},
            )
            for c in p.checks
        }
        store.record(p.key, results, duration=0.5)
    metrics = AgentMetrics(store, version=version, tunnel_connected=lambda: True)
    metrics.scheduler_lag.observe(0.004)
    return generate_latest(metrics.registry)


FLEET = {
    "moon": agent_body(
        [
            make_probe("web", (check("home"), check("tls")), interval=30),
            make_probe("db", (check("tcp"),), namespace="team-a", layer="middleware", interval=60),
        ],
        fail="tcp",
    ),
    "sun": agent_body(
        [make_probe("dns", (check("resolve"),), layer="kubernetes", interval=15)],
        version="1.1.0",
    ),
    "mars": agent_body(
        [make_probe("web", (check("home"), check("login")), interval=30)], fail="login"
    ),
}


def fleet() -> Federation:
    """A federation over the three agents, with own series and cluster-less extras."""
    fed = Federation(OWN)
    for name, body in FLEET.items():
        assert not fed.ingest(name, body).dropped
        fed.set_own(
            name,
            {
                "kubeprober_agent_up": 1.0,
                "kubeprober_agent_last_seen_timestamp_seconds": 1_800_000_000.5,
                "kubeprober_agent_pull_duration_seconds": 0.012,
                "kubeprober_cluster_maintenance": 0.0,
            },
        )
    registry = CollectorRegistry(auto_describe=False)
    states = Gauge("kubeprober_clusters", "Clusters by state.", ["state"], registry=registry)
    for state, n in (("Online", 3), ("Offline", 0), ("Pending", 0)):
        states.labels(state).set(n)
    fed.set_extra(generate_latest(registry))
    return fed


def test_three_real_agents_merge_and_pass_promtool() -> None:
    fed = fleet()
    text = fed.render()
    promtool_check(text)
    names = type_lines(text)
    assert len(names) == len(set(names)), "one TYPE line per family"
    got = samples(text)
    clusters = {s[1].get("cluster") for s in got if s[0] == "kubeprober_check_success"}
    assert clusters == {"moon", "sun", "mars"}
    assert ("kubeprober_clusters", {"state": "Online"}, 3.0) in got
    assert ("kubeprober_agent_up", {"cluster": "sun"}, 1.0) in got
    per_agent = sum(len(samples(b)) for b in FLEET.values())
    assert len(got) == per_agent + 3 * len(OWN) + 3
    info = {s[1]["cluster"]: s[1]["version"] for s in got if s[0] == "kubeprober_agent_info"}
    assert info == {"moon": "1.0.0", "sun": "1.1.0", "mars": "1.0.0"}


def test_remove_and_forget() -> None:
    fed = fleet()
    fed.remove("moon")
    fed.forget_agent("sun")
    assert fed.clusters() == ["mars"]
    got = samples(fed.render())
    assert not [s for s in got if s[1].get("cluster") == "moon"]
    assert {s[0] for s in got if s[1].get("cluster") == "sun"} == {o.name for o in OWN}
    promtool_check(fed.render())
    fed.remove("mars")
    fed.remove("sun")
    fed.remove("never-there")
    assert type_lines(fed.render()) == ["kubeprober_clusters"]


def test_broken_body_keeps_previous_cache() -> None:
    fed = fleet()
    before = fed.render()
    with pytest.raises(ExpositionError, match="cluster sun: line 3: "):
        fed.ingest("sun", b"# TYPE x gauge\nx 1\nx{ 2\n")
    assert fed.render() == before


def test_pull_replaces_cluster_cache_wholesale() -> None:
    fed = Federation()
    fed.ingest("moon", b"# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n")
    fed.ingest("sun", b"# TYPE a gauge\na 2\n")
    report = fed.ingest("moon", b"# TYPE a gauge\na 3\n# TYPE c gauge\nc 3\n")
    assert (report.families, report.samples, report.dropped) == (2, 2, ())
    assert fed.render() == (
        b'# TYPE a gauge\na{cluster="moon"} 3\na{cluster="sun"} 2\n'
        b'# TYPE c gauge\nc{cluster="moon"} 3\n'
    )


def test_type_conflict_keeps_first_type() -> None:
    fed = Federation()
    fed.ingest("moon", b"# HELP x old\n# TYPE x gauge\nx 1\n")
    sun = b"# HELP x new\n# TYPE x summary\nx_sum 1\nx_count 1\n# TYPE y gauge\ny 1\n"
    report = fed.ingest("sun", sun)
    assert report.dropped == ("x",)
    assert fed.dropped_total == 1
    text = fed.render()
    assert text == (
        b'# HELP x old\n# TYPE x gauge\nx{cluster="moon"} 1\n# TYPE y gauge\ny{cluster="sun"} 1\n'
    )
    # Once the gauge is gone, the summary gets in at the next pull, even of the same bytes.
    fed.remove("moon")
    assert fed.ingest("sun", sun).dropped == ()
    assert type_lines(fed.render()) == ["y", "x"]
    # A cluster that alone has a family may change its type (an agent upgrade).
    assert fed.ingest("sun", b"# TYPE x gauge\nx 1\n").dropped == ()
    assert fed.render() == b'# TYPE x gauge\nx{cluster="sun"} 1\n'


def test_unchanged_body_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fed = Federation()
    first = fed.ingest("moon", FLEET["moon"])
    before = fed.render()
    monkeypatch.setattr(federation, "parse", None)  # a second parse would now fail
    assert fed.ingest("moon", FLEET["moon"]) == first
    assert fed.render() == before
    monkeypatch.undo()
    fed.forget_agent("moon")
    assert fed.ingest("moon", FLEET["moon"]) == first
    assert fed.render() == before


def test_sample_name_clash_between_families_is_dropped() -> None:
    fed = Federation()
    fed.ingest("moon", b"# TYPE x summary\nx_sum 1\nx_count 1\n")
    assert fed.ingest("sun", b"# TYPE x_count gauge\nx_count 5\n").dropped == ("x_count",)
    assert fed.render() == b'# TYPE x summary\nx_sum{cluster="moon"} 1\nx_count{cluster="moon"} 1\n'


def test_aggregator_families_win() -> None:
    fed = Federation(OWN)
    fed.ingest(
        "moon", b"# TYPE kubeprober_agent_up gauge\nkubeprober_agent_up 1\n# TYPE s gauge\ns 1\n"
    )
    assert fed.ingest("moon", b"# TYPE kubeprober_agent_up gauge\nkubeprober_agent_up 1\n").dropped
    fed.set_own("moon", {"kubeprober_agent_up": 0.0})
    fed.ingest("sun", b"# TYPE s gauge\ns 2\n")
    fed.set_extra(b"# HELP s mine\n# TYPE s gauge\ns 7\n")
    assert fed.render() == (
        b"# HELP kubeprober_agent_up 1 if the last pull of the cluster's agent succeeded.\n"
        b'# TYPE kubeprober_agent_up gauge\nkubeprober_agent_up{cluster="moon"} 0.0\n'
        b"# HELP s mine\n# TYPE s gauge\ns 7\n"
    )
    fed.set_extra(b"")
    fed.ingest("sun", b"# TYPE s gauge\ns 2\n")
    assert b's{cluster="sun"} 2' in fed.render()
    with pytest.raises(ValueError, match="OwnFamily"):
        fed.set_extra(b"kubeprober_agent_up 1\n")
    with pytest.raises(ValueError, match="not declared"):
        fed.set_own("moon", {"nope": 1.0})


def test_set_own_many() -> None:
    fed = Federation(OWN[:2])
    up, seen = OWN[0].name, OWN[1].name
    fed.set_own_many({"moon": {up: 1.0, seen: 5.0}, "sun": {up: 0.0}})
    fed.set_own_many({"moon": {up: 1.0}})
    assert sorted((s[0], s[1]["cluster"], s[2]) for s in samples(fed.render())) == [
        (up, "moon", 1.0),
        (up, "sun", 0.0),
    ]
    with pytest.raises(ValueError, match="not declared as OwnFamily: nope"):
        fed.set_own_many({"moon": {up: 1.0}, "sun": {"nope": 1.0}})
    assert len(samples(fed.render())) == 2  # nothing applied


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e-9, 3.0])
def test_own_values_render_like_go(value: float) -> None:
    fed = Federation(OWN[:1])
    fed.set_own("moon", {"kubeprober_agent_up": value})
    got = samples(fed.render())[0][2]
    assert got == value or (got != got and value != value)


MATCH_BODY = (
    b"# HELP kubeprober_check_success s\n# TYPE kubeprober_check_success gauge\n"
    b'kubeprober_check_success{probe="web",check="home"} 1\n'
    b'kubeprober_check_success{probe="db",check="tcp"} 0\n'
    b"# HELP kubeprober_check_runs_total r\n# TYPE kubeprober_check_runs_total counter\n"
    b'kubeprober_check_runs_total{probe="web",check="home"} 4\n'
    b"# HELP lag h\n# TYPE lag histogram\n"
    b'lag_bucket{le="1"} 1\nlag_bucket{le="+Inf"} 1\nlag_sum 0.5\nlag_count 1\n'
    b'# HELP weird w\n# TYPE weird gauge\nweird{v="a\\"b\\\\c\\nd"} 1\n'
)


def match_fleet() -> Federation:
    """Two clusters of MATCH_BODY, own agent_up, and extras with and without cluster labels."""
    fed = Federation(OWN[:1])
    for name in ("moon", "sun"):
        fed.ingest(name, MATCH_BODY)
        fed.set_own(name, {"kubeprober_agent_up": 1.0})
    fed.set_extra(
        b"# HELP kubeprober_clusters c\n"
        b'# TYPE kubeprober_clusters gauge\nkubeprober_clusters{state="Online"} 2\n'
        b'kubeprober_clusters{state="Offline"} 0\n'
        b"# HELP pulls_total p\n"
        b'# TYPE pulls_total counter\npulls_total{cluster="moon"} 3\npulls_total{cluster="sun"} 4\n'
    )
    return fed


M, S = "moon", "sun"


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (
            ['{__name__="kubeprober_check_success"}'],
            {("kubeprober_check_success", M, 2)} | {("kubeprober_check_success", S, 2)},
        ),
        (
            ['{__name__=~"kubeprober_check_.*"}'],
            {
                ("kubeprober_check_success", M, 2),
                ("kubeprober_check_success", S, 2),
                ("kubeprober_check_runs_total", M, 1),
                ("kubeprober_check_runs_total", S, 1),
            },
        ),
        (['kubeprober_check_success{cluster="moon"}'], {("kubeprober_check_success", M, 2)}),
        (["kubeprober_check_success{cluster!='moon'}"], {("kubeprober_check_success", S, 2)}),
        (
            ['kubeprober_check_success{cluster=~"m.*|x",probe="db"}'],
            {("kubeprober_check_success", M, 1)},
        ),
        (
            ['{probe="web"}'],
            {
                ("kubeprober_check_success", M, 1),
                ("kubeprober_check_success", S, 1),
                ("kubeprober_check_runs_total", M, 1),
                ("kubeprober_check_runs_total", S, 1),
            },
        ),
        (
            ['{probe!~"w.*",__name__="kubeprober_check_success"}'],
            {("kubeprober_check_success", M, 1), ("kubeprober_check_success", S, 1)},
        ),
        (["{__name__=`lag_bucket`, cluster='sun'}"], {("lag_bucket", S, 2)}),
        (
            ['{__name__=~"lag_(sum|count)", cluster="sun"}'],
            {("lag_sum", S, 1), ("lag_count", S, 1)},
        ),
        (['lag_bucket{le="+Inf"}'], {("lag_bucket", M, 1), ("lag_bucket", S, 1)}),
        (
            ['{__name__=~"lag.*",cluster="moon"}'],
            {("lag_bucket", M, 2), ("lag_sum", M, 1), ("lag_count", M, 1)},
        ),
        (['weird{v="a\\"b\\\\c\\nd"}'], {("weird", M, 1), ("weird", S, 1)}),
        (['kubeprober_clusters{state="Online"}'], {("kubeprober_clusters", None, 1)}),
        (
            ['{cluster="sun", __name__=~"pulls_total|kubeprober_agent_up"}'],
            {("pulls_total", S, 1), ("kubeprober_agent_up", S, 1)},
        ),
        (
            ['kubeprober_check_runs_total{cluster="sun"}', 'lag_sum{cluster="moon"}'],
            {("kubeprober_check_runs_total", S, 1), ("lag_sum", M, 1)},
        ),
        (['{__name__="nothing"}'], set()),
        (
            ['{cluster="moon", probe=""}'],
            {
                ("kubeprober_agent_up", M, 1),
                ("lag_bucket", M, 2),
                ("lag_sum", M, 1),
                ("lag_count", M, 1),
                ("weird", M, 1),
                ("pulls_total", M, 1),
            },
        ),
    ],
)
def test_match(match: list[str], expected: set[tuple[str, str | None, int]]) -> None:
    text = match_fleet().render(match)
    counts: dict[tuple[str, str | None], int] = {}
    for name, labels, _ in samples(text):
        key = (name, labels.get("cluster"))
        counts[key] = counts.get(key, 0) + 1
    assert {(n, c, k) for (n, c), k in counts.items()} == expected
    names = type_lines(text)
    assert len(names) == len(set(names))
    if text:
        promtool_check(text)


@pytest.mark.parametrize(
    "selector",
    [
        "",
        "{}",
        '{a=~".*"}',
        '{a!="x"}',
        "rate(x[5m])",
        "x[5m]",
        "x offset 5m",
        "x @ 100",
        "x or y",
        "sum by (a) (x)",
        '{a="b"',
        '{a~"b"}',
        '{a="b\\q"}',
        '{a="b}',
        '{a=~"("}',
        'x{__name__="y"}',
        '{"x"}',
        "{a=b}",
        '{1a="b"}',
    ],
)
def test_unsupported_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="invalid match\\[\\] selector"):
        match_fleet().render(["x", selector])


@pytest.mark.parametrize(
    ("selector", "label", "value"),
    [
        ('x{a="tab\\tq\\"u\\x41\\u00e9"}', "a", 'tab\tq"uAé'),
        ("x{a='it\\'s'}", "a", "it's"),
        ("x{a=`raw\\d+`}", "a", "raw\\d+"),
        ('  x  {  a  =  "v" ,  }  ', "a", "v"),
    ],
)
def test_selector_strings(selector: str, label: str, value: str) -> None:
    sel = parse_selector(selector)
    assert [(m.label, m.value) for m in sel.labels] == [(label, value)]
    assert sel.match_name("x") and not sel.match_name("y")


@pytest.mark.parametrize(
    "body",
    [
        *FLEET.values(),
        MATCH_BODY,
        b'# HELP x h\n# TYPE x gauge\nx{a="{}",b="c"} 1\nx{} 2\nx 3 1700000000000\n',
        b'# HELP x h\n# TYPE x gauge\nx{a="b",} 1\nx{cluster="c"} 2\n',
        b"# HELP x h\n# TYPE x gauge\nx 1",
    ],
)
@pytest.mark.parametrize("cluster", ["moon", 'a"b\\c{d}', None])
def test_fast_path_agrees_with_line_parser(body: bytes, cluster: str | None) -> None:
    # The fast path also notes each family's text (``chunk``), the line parser does not.
    fast = [f._replace(chunk=b"") for f in parse(body, cluster=cluster, source="t")]
    assert fast == parse_lines(body, cluster=cluster, source="t")


def test_agent_bodies_take_the_fast_path() -> None:
    for body in FLEET.values():
        assert exposition._parse_canonical(body, cluster="moon", known={}) is not None
    assert exposition._parse_canonical(b"x 1\n", cluster="moon", known={}) is None  # untyped


TWO = b"# HELP a h\n# TYPE a gauge\na 1\n# HELP b h\n# TYPE b gauge\nb 2\n"


def test_unchanged_families_are_reused_changed_ones_parsed() -> None:
    first = parse(TWO, cluster="moon", source="t")
    known = {f.chunk: f for f in first}
    assert len(known) == 2
    again = parse(TWO.replace(b"b 2", b"b 3"), cluster="moon", source="t", known=known)
    assert again[0] is first[0]  # the same object: neither validated nor relabelled again
    assert again[1] is not first[1]
    assert again[1].lines == b'b{cluster="moon"} 3\n'
    # Where a family stands in the body does not matter (the last one has the newline).
    swapped = TWO[TWO.index(b"# HELP b") :] + TWO[: TWO.index(b"# HELP b")]
    assert [f.name for f in parse(swapped, cluster="moon", source="t", known=known)] == ["b", "a"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        # a known family twice in one body: the line parser names the second HELP
        (TWO + b"# HELP a h\n# TYPE a gauge\na 1\n", "line 7: second HELP line"),
        # a known family followed by an empty line, then a broken new one
        (TWO + b"\n# HELP c h\n# TYPE c gauge\nc{ 1\n", "line 10: invalid sample line"),
    ],
)
def test_known_families_never_hide_an_invalid_body(body: bytes, error: str) -> None:
    known = {f.chunk: f for f in parse(TWO, cluster="moon", source="t")}
    with pytest.raises(ExpositionError, match=error):
        parse(body, cluster="moon", source="t", known=known)


def test_federation_reuses_families_between_pulls(monkeypatch: pytest.MonkeyPatch) -> None:
    fed = Federation()
    fed.ingest("moon", TWO)
    relabelled: list[bytes] = []
    real = exposition._CANON_BODY

    class Spy:
        def fullmatch(self, text: bytes) -> object:
            relabelled.append(text)
            return real.fullmatch(text)

    monkeypatch.setattr(exposition, "_CANON_BODY", Spy())
    fed.ingest("moon", TWO.replace(b"a 1", b"a 5"))
    assert relabelled == [b"# HELP a h\n# TYPE a gauge\na 5\n"]  # b was not looked at again
    assert fed.render() == (
        b'# HELP a h\n# TYPE a gauge\na{cluster="moon"} 5\n'
        b'# HELP b h\n# TYPE b gauge\nb{cluster="moon"} 2\n'
    )
    fed.forget_agent("moon")  # forgetting also forgets the families known for reuse
    relabelled.clear()
    fed.ingest("moon", TWO)
    assert len(relabelled) == 2


# --- the series cap per cluster ----------------------------------------------------------------

CAPPED_BODY = (
    "# TYPE a gauge\na 1\n"  # 1 series
    "# TYPE b gauge\n" + "".join(f'b{{i="{i}"}} 1\n' for i in range(3)) +  # 3
    "# TYPE c gauge\nc 1\n"  # 1
)  # fmt: skip


def test_a_cluster_over_the_series_cap_keeps_whole_families_that_fit_and_counts_the_rest() -> None:
    fed = Federation(OWN, max_series=3)
    report = fed.ingest("moon", CAPPED_BODY.encode())
    # a (1) fits, b (3) would make 4, c (1) still fits: whole families, in the agent's order.
    assert (report.capped, report.dropped_series, report.samples) == (("b",), 3, 2)
    assert type_lines(fed.render()) == ["a", "c"]
    assert fed.dropped_series == {"moon": 3}
    # A counter: every pull that leaves series out adds them, even for the very same body.
    fed.ingest("moon", CAPPED_BODY.encode())
    assert fed.dropped_series == {"moon": 6}
    # Other clusters are not affected, and within the cap nothing is counted.
    assert fed.ingest("mars", b"# TYPE a gauge\na 2\n").dropped_series == 0
    assert "mars" not in fed.dropped_series
    fed.remove("moon")
    assert fed.dropped_series == {}


def test_without_a_cap_every_series_is_kept() -> None:
    fed = Federation(OWN)
    report = fed.ingest("moon", CAPPED_BODY.encode())
    assert (report.capped, report.dropped_series, report.samples) == ((), 0, 5)


def test_series_of_a_family_dropped_for_a_clash_count_as_dropped() -> None:
    fed = Federation(OWN, max_series=100)
    fed.ingest("moon", b"# TYPE x gauge\nx 1\n")
    report = fed.ingest("mars", b'# TYPE x counter\nx{a="1"} 1\nx{a="2"} 1\n')
    assert report.dropped == ("x",) and report.dropped_series == 2
    assert fed.dropped_series == {"mars": 2}


# --- gzip -------------------------------------------------------------------------------------


def test_gzip_holds_what_the_plain_exposition_holds() -> None:
    fed = fleet()
    plain = fed.render()
    unzipped = gzip.decompress(fed.render_gzip())  # several members: one stream (RFC 1952)
    promtool_check(unzipped)
    assert type_lines(unzipped) == type_lines(plain)
    assert sorted(unzipped.splitlines()) == sorted(plain.splitlines())
    assert gzip.decompress(fed.render_gzip(['{cluster="sun"}'])) == fed.render(['{cluster="sun"}'])


def test_gzip_redoes_only_the_groups_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    fed = Federation()
    for i in range(200):
        fed.ingest(f"c{i}", b"# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n")
    fed.compress()
    done: list[bytes] = []

    def counting(data: bytes) -> bytes:
        done.append(data)
        return gzip.compress(data)

    monkeypatch.setattr(federation, "_gzip", counting)
    fed.ingest("c7", b"# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n")  # the same: nothing to redo
    fed.compress()
    assert done == []
    fed.ingest("c7", b"# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n")
    unzipped = gzip.decompress(fed.render_gzip())
    assert len(done) == 1 and b'b{cluster="c7"} 2\n' in done[0]  # family b, c7's group alone
    assert sorted(unzipped.splitlines()) == sorted(fed.render().splitlines())
    fed.remove("c7")
    unzipped = gzip.decompress(fed.render_gzip())
    assert b'cluster="c7"' not in unzipped and unzipped.count(b"\n") == 2 + 2 * 199
    for i in range(200):
        fed.remove(f"c{i}")
    assert fed.render_gzip() == b"" == fed.render()
