"""The Probe model: manifests as ``kubectl apply`` takes them, validated at load time.

Rejected cases live one per file in ``testdata/invalid-*.yaml``, each stating the exact error in
its first line (``# error: ...``; a trailing ``...`` means "starts with").
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kubeprober.probers import registry, tcp
from kubeprober.probers.probe import (
    API_VERSION,
    DEFAULT_TIMEOUT,
    MAX_FILE_BYTES,
    SPEC_KEYS,
    Probe,
    by_key,
    iter_documents,
    load_file,
    load_path,
    load_text,
    parse_probe,
)

TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted(TESTDATA.glob("invalid-*.yaml"))


def manifest(name: str = "p", spec: str = "", *, namespace: str | None = None) -> str:
    """Return one Probe document with a single tcp check, ``spec`` lines added to its spec."""
    ns = f"\n  namespace: {namespace}" if namespace else ""
    extra = textwrap.indent(textwrap.dedent(spec).strip(), "  ") + "\n" if spec.strip() else ""
    return (
        f"apiVersion: {API_VERSION}\nkind: Probe\nmetadata:\n  name: {name}{ns}\nspec:\n"
        f"  layer: middleware\n{extra}"
        "  checks:\n    - name: db\n      prober: tcp\n      with: {host: 127.0.0.1, port: 5432}\n"
    )


def one(text: str) -> Probe:
    """Load ``text`` and return its only Probe, failing on any error."""
    result = load_text(text, source="probes.yaml")
    assert [str(e) for e in result.errors] == []
    (probe,) = result.probes
    return probe


def expected_error(path: Path) -> str:
    """Read the ``# error:`` first line of a testdata file."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} lacks its '# error:' line"
    return first.removeprefix("# error: ")


def test_there_are_rejected_cases() -> None:
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid(path: Path) -> None:
    want = expected_error(path)
    result = load_text(path.read_text(encoding="utf-8"), source="probes.yaml")
    errors = [str(e) for e in result.errors]
    assert len(errors) == 1, errors
    if want.endswith("..."):
        assert errors[0].startswith(want.removesuffix("...")), errors
    else:
        assert errors[0] == want
    if "duplicate Probe" not in want:
        assert result.probes == []


def test_issue_example_error_names_file_probe_path_and_value() -> None:
    text = (TESTDATA / "invalid-with-option.yaml").read_text(encoding="utf-8")
    (error,) = load_text(text, source="probes.yaml").errors
    assert str(error) == (
        'probes.yaml: local-net: spec.checks[2].with.port: expected integer 1-65535, got "http"'
    )
    assert error.source == "probes.yaml"
    assert error.name == "local-net"
    assert error.key == ("default", "local-net")
    assert error.error.path == "spec.checks[2].with.port"


def test_interval_probe() -> None:
    probe = one(manifest(spec="interval: 30s\njitter: 5s"))
    assert probe.key == ("default", "p")
    assert probe.layer == "middleware"
    assert probe.interval == 30.0
    assert probe.schedule is None
    assert probe.time_zone is None
    assert probe.jitter == 5.0
    assert probe.suspend is False
    assert probe.source == "probes.yaml"


@pytest.mark.parametrize(("written", "seconds"), [("1h30m", 5400.0), ("250ms", 0.25), (45, 45.0)])
def test_interval_forms(written: object, seconds: float) -> None:
    assert one(manifest(spec=f"interval: {written}")).interval == seconds


def test_schedule_with_time_zone() -> None:
    probe = one(manifest(spec='schedule: "30 9 * * 1-5"\ntimeZone: Europe/Paris'))
    assert probe.schedule == "30 9 * * 1-5"
    assert probe.time_zone == "Europe/Paris"
    assert probe.interval is None


def test_schedule_without_time_zone() -> None:
    probe = one(manifest(spec='schedule: "@hourly"'))
    assert (probe.schedule, probe.time_zone, probe.interval) == ("@hourly", None, None)


def test_neither_schedule_nor_interval_means_once() -> None:
    probe = one(manifest())
    assert (probe.schedule, probe.interval, probe.jitter) == (None, None, 0.0)


def test_suspend() -> None:
    assert one(manifest(spec="interval: 1m\nsuspend: true")).suspend is True


def test_jitter_with_schedule_is_allowed() -> None:
    assert one(manifest(spec='schedule: "*/5 * * * *"\njitter: 30s')).jitter == 30.0


def test_timeouts_check_inherits_probe_timeout() -> None:
    text = f"""\
apiVersion: {API_VERSION}
kind: Probe
metadata:
  name: timeouts
spec:
  layer: infrastructure
  timeout: 20s
  checks:
    - name: inherits
      prober: tcp
      with: {{host: 127.0.0.1, port: 1}}
    - name: own
      prober: tcp
      timeout: 3s
      with: {{host: 127.0.0.1, port: 2}}
"""
    probe = one(text)
    assert probe.timeout == 20.0
    assert {c.name: c.timeout for c in probe.checks} == {"inherits": 20.0, "own": 3.0}


def test_default_timeout() -> None:
    probe = one(manifest())
    assert probe.timeout == DEFAULT_TIMEOUT
    assert probe.checks[0].timeout == DEFAULT_TIMEOUT


def test_check_holds_parsed_spec_and_written_options() -> None:
    (check,) = one(manifest()).checks
    assert check.name == "db"
    assert check.prober == "tcp"
    assert isinstance(check.spec, tcp.Spec)
    assert (check.spec.host, check.spec.port, check.spec.tls) == ("127.0.0.1", 5432, False)
    assert check.options == {"host": "127.0.0.1", "port": 5432}


def test_metadata_namespace_and_labels() -> None:
    text = manifest(namespace="team-a").replace(
        "  namespace: team-a\n", "  namespace: team-a\n  labels: {tier: db, replicas: 3}\n"
    )
    probe = one(text)
    assert probe.key == ("team-a", "p")
    assert probe.labels == {"tier": "db", "replicas": "3"}


def test_same_text_gives_equal_probes_and_a_change_does_not() -> None:
    # The scheduler restarts only probes that compare unequal, so equality must be by value.
    text = manifest(spec="interval: 30s")
    assert one(text) == one(text)
    assert one(text) != one(text.replace("port: 5432", "port: 5433"))
    assert one(text) != one(text.replace("30s", "31s"))


def test_multi_document_skips_other_kinds_and_empty_documents() -> None:
    text = "\n---\n".join(
        [
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}",
            manifest("first"),
            "",
            "# only a comment",
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}",
            manifest("second", namespace="other"),
        ]
    )
    result = load_text(text, source="all.yaml")
    assert result.errors == []
    assert [p.key for p in result.probes] == [("default", "first"), ("other", "second")]
    # Skipped, but not silently: each is named, so a typo in "kind: Probe" is found.
    assert result.warnings == [
        'all.yaml: document 1: skipped "v1" "ConfigMap" "cfg": not a kubeprober.io Probe',
        'all.yaml: document 3: skipped "v1" "Service" "svc": not a kubeprober.io Probe',
    ]


def test_probe_of_another_api_group_is_skipped() -> None:
    # prometheus-operator also has a kind "Probe"; kubectl-style files may hold both.
    other = (
        "apiVersion: monitoring.coreos.com/v1\nkind: Probe\nmetadata: {name: blackbox}\n"
        "spec: {prober: {url: 'blackbox:9115'}, targets: {staticConfig: {static: [a]}}}"
    )
    result = load_text(f"{other}\n---\n{manifest()}", source="probes.yaml")
    assert [str(e) for e in result.errors] == []
    assert [p.name for p in result.probes] == ["p"]
    assert result.warnings == [
        'probes.yaml: document 1: skipped "monitoring.coreos.com/v1" "Probe" "blackbox": '
        "not a kubeprober.io Probe"
    ]


def test_every_error_of_a_probe_is_reported() -> None:
    known = ", ".join(sorted(registry.probers()))
    text = f"""
apiVersion: {API_VERSION}
kind: Probe
metadata: {{name: p}}
spec:
  colour: blue
  layer: network
  interval: soon
  checks:
    - {{name: a, prober: nope}}
    - {{name: b, prober: tcp, with: {{host: "", port: http, hots: x}}, timeout: -1s}}
    - {{name: a, prober: tcp, with: {{host: 127.0.0.1, port: 1}}}}
"""
    (error,) = load_text(text, source="probes.yaml").errors
    assert [f"{e.path}: {e.message}" for e in error.error.errors] == [
        f"spec.colour: unknown field (known: {', '.join(sorted(SPEC_KEYS))})",
        "spec.layer: expected one of application, middleware, kubernetes, infrastructure, "
        'got "network"',
        'spec.interval: expected a duration like 30s or 1m30s, got "soon"',
        f'spec.checks[0].prober: unknown prober "nope" (known: {known})',
        "spec.checks[1].with.hots: unknown option "
        "(known: host, port, send, expect, tls, caFile, serverName)",
        'spec.checks[1].with.port: expected integer 1-65535, got "http"',
        'spec.checks[1].timeout: expected a duration like 30s or 1m30s, got "-1s"',
        'spec.checks[2].name: duplicate check name "a"',
    ]
    # One line names them all, first to last.
    assert str(error).startswith("probes.yaml: p: spec.colour: unknown field")
    assert str(error).endswith('; spec.checks[2].name: duplicate check name "a"')


def test_kind_list_is_unpacked() -> None:
    items = [json.loads(json.dumps(next(iter_documents(manifest(n))))) for n in ("a", "b")]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    result = load_text(text, source="list.json")
    assert result.errors == []
    assert [p.name for p in result.probes] == ["a", "b"]


def test_iter_documents() -> None:
    text = "a: 1\n---\n---\nkind: List\nitems: [{b: 2}, {c: 3}]\n---\n[1]\n"
    assert list(iter_documents(text)) == [{"a": 1}, {"b": 2}, {"c": 3}, [1]]


def test_invalid_probe_does_not_affect_the_valid_ones() -> None:
    bad = manifest("bad", spec="interval: soon")
    text = "\n---\n".join([manifest("before"), bad, manifest("after", spec="interval: 1m")])
    result = load_text(text, source="probes.yaml")
    assert [p.name for p in result.probes] == ["before", "after"]
    assert [str(e) for e in result.errors] == [
        'probes.yaml: bad: spec.interval: expected a duration like 30s or 1m30s, got "soon"'
    ]
    assert result.errors[0].key == ("default", "bad")


def test_parse_probe_raises_with_path() -> None:
    doc = next(iter_documents(manifest(spec="interval: 0s")))
    with pytest.raises(ValueError, match=r"^spec\.interval: expected a duration"):
        parse_probe(doc)


def test_directory_of_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(manifest("a"), encoding="utf-8")
    (tmp_path / "b.yml").write_text(manifest("b") + "---\n" + manifest("c"), encoding="utf-8")
    nested = tmp_path / "team"
    nested.mkdir()
    doc = next(iter_documents(manifest("d", namespace="team")))
    (nested / "d.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "README.md").write_text(manifest("ignored"), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not yaml: [", encoding="utf-8")
    result = load_path(tmp_path)
    assert result.errors == []
    assert sorted(p.key for p in result.probes) == [
        ("default", "a"),
        ("default", "b"),
        ("default", "c"),
        ("team", "d"),
    ]
    assert {p.name: Path(p.source).name for p in result.probes} == {
        "a": "a.yaml",
        "b": "b.yml",
        "c": "b.yml",
        "d": "d.json",
    }


def test_single_file_path(tmp_path: Path) -> None:
    file = tmp_path / "probes.yaml"
    file.write_text(manifest("solo"), encoding="utf-8")
    result = load_path(file)
    assert [p.name for p in result.probes] == ["solo"]
    assert result.probes[0].source == str(file)


def test_duplicate_across_files_keeps_the_first(tmp_path: Path) -> None:
    (tmp_path / "1.yaml").write_text(manifest("dup", spec="interval: 1m"), encoding="utf-8")
    (tmp_path / "2.yaml").write_text(manifest("dup") + "---\n" + manifest("x"), encoding="utf-8")
    result = load_path(tmp_path)
    assert sorted(p.name for p in result.probes) == ["dup", "x"]
    assert by_key(result.probes)[("default", "dup")].interval == 60.0
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / '2.yaml'}: dup: metadata.name: duplicate Probe default/dup"
    ]


def test_same_name_in_other_namespace_is_no_duplicate() -> None:
    text = manifest("p") + "---\n" + manifest("p", namespace="other")
    result = load_text(text, source="probes.yaml")
    assert result.errors == []
    assert sorted(p.key for p in result.probes) == [("default", "p"), ("other", "p")]


def test_invalid_file_in_directory_does_not_affect_others(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(manifest("good"), encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("spec: [", encoding="utf-8")
    result = load_path(tmp_path)
    assert [p.name for p in result.probes] == ["good"]
    (error,) = result.errors
    assert str(error).startswith(f"{tmp_path / 'broken.yaml'}: invalid YAML at line ")


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    result = load_path(tmp_path / "nope.yaml")
    assert result.probes == []
    (error,) = result.errors
    assert str(error) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


def test_configmap_volume_layout_loads_each_probe_once(tmp_path: Path) -> None:
    # A mounted ConfigMap: real files in a hidden timestamped directory, reached through the
    # ``..data`` symlink, with top-level symlinks per key. Hidden entries must not be loaded.
    real = tmp_path / "..2026_11_26_13_00_00.123"
    real.mkdir()
    (real / "probes.yaml").write_text(manifest("from-configmap"), encoding="utf-8")
    (tmp_path / "..data").symlink_to(real.name)
    (tmp_path / "probes.yaml").symlink_to("..data/probes.yaml")
    result = load_path(tmp_path)
    assert [str(e) for e in result.errors] == []
    assert [p.name for p in result.probes] == ["from-configmap"]
    assert result.probes[0].source == str(tmp_path / "probes.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"apiVersion: kubeprober.io/v1\n# caf\xe9\n", "not UTF-8: byte 0xe9 on line 13"),
        (
            b"kind: Probe\nmetadata: {name: x\n",
            "invalid YAML at line 14, column 1: did not find expected ',' or '}' "
            "(while parsing a flow mapping from line 13)",
        ),
        (b"[" * 2000, "invalid YAML at line 12, column 1001: exceeded maximum nesting depth"),
        (b"# x\n" * 1300, "larger than the limit of 5000 bytes (--max-probe-file-size)"),
    ],
    ids=["not-utf8", "yaml-syntax", "nested", "too-large"],
)
def test_a_file_that_does_not_load_is_one_error_for_the_whole_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    file = tmp_path / "probes.yaml"
    file.write_bytes(manifest("fine").encode() + b"---\n" + content)
    result = load_file(file, max_bytes=5000)
    assert result.probes == []
    (error,) = result.errors
    assert error.whole_file
    assert str(error) == f"{file}: {message}"


def test_an_unreadable_file_is_one_error(tmp_path: Path) -> None:
    (error,) = load_file(tmp_path).errors  # a directory where a file was expected
    assert str(error) == f"{tmp_path}: cannot read: Is a directory"
    assert error.whole_file


def test_a_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    file = tmp_path / "probes.yaml"
    file.write_text(manifest("fine"), encoding="utf-8")
    size = file.stat().st_size
    assert [p.name for p in load_file(file, max_bytes=size).probes] == ["fine"]
    assert load_file(file, max_bytes=size - 1).errors[0].whole_file
    assert MAX_FILE_BYTES == 1024 * 1024
