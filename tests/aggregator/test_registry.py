"""The clusters file: Cluster, Secret and Probe manifests in, tokens and assignments out."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeprober.aggregator.registry import Fleet, load_file, parse_fleet
from kubeprober.aggregator.tokens import hashed_token, new_token

MOON = str(new_token("moon"))
MARS = str(new_token("mars"))
MOON_OLD = str(new_token("moon"))
TOKENS = {"moon": MOON, "mars": MARS}


def cluster(name: str, secret: str | None = None, **labels: str) -> dict[str, Any]:
    """A Cluster manifest whose token lives in Secret ``secret`` (default token-<name>)."""
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = {k.replace("__", "/"): v for k, v in labels.items()}
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Cluster",
        "metadata": meta,
        "spec": {"tokenSecretRef": {"name": secret or f"token-{name}"}},
    }


def secret(
    name: str, *, string: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Secret with ``stringData`` and/or base64 ``data``."""
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    if string is not None:
        doc["stringData"] = string
    if data is not None:
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return doc


def probe(name: str, **spec: Any) -> dict[str, Any]:
    """A valid Probe manifest (one tcp check) with ``spec`` overrides."""
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": {
            "layer": "middleware",
            "interval": "30s",
            "checks": [{"name": "port", "prober": "tcp", "with": {"host": "db", "port": 5432}}],
            **spec,
        },
    }


def test_file_with_every_kind_loads(tmp_path: Path) -> None:
    docs = [
        cluster("moon", probe__dns="true", probe__db="false", team="a"),
        secret("token-moon", string={"token": MOON}),
        cluster("mars"),
        secret("token-mars", data={"token": MARS}),
        probe("dns"),
        probe("db"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
    ]
    path = tmp_path / "clusters.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    fleet = load_file(path)
    tokens = fleet.tokens
    assert fleet.errors == []
    assert sorted(fleet.clusters) == ["mars", "moon"]
    assert sorted(fleet.probes) == ["db", "dns"]
    assert tokens.verify(MOON) == "moon"
    assert tokens.verify(MARS) == "mars"  # from base64 data
    assert tokens.verify(str(new_token("moon"))) is None
    assert fleet.clusters["moon"].assigned("dns")
    assert not fleet.clusters["moon"].assigned("db")  # only the value "true" assigns


def test_previous_token_stays_valid_during_rotation() -> None:
    fleet = parse_fleet(
        [cluster("moon"), secret("token-moon", string={"token": MOON, "previousToken": MOON_OLD})],
        source="t",
    )
    tokens = fleet.tokens
    assert (tokens.verify(MOON), tokens.verify(MOON_OLD)) == ("moon", "moon")


def test_a_secret_may_hold_only_the_token_hashes() -> None:
    fleet = parse_fleet(
        [
            cluster("moon"),
            secret(
                "token-moon",
                string={
                    "tokenHash": hashed_token(MOON),
                    "previousTokenHash": hashed_token(MOON_OLD),
                },
            ),
            cluster("mars"),
            secret("token-mars", data={"tokenHash": hashed_token(MARS)}),
        ],
        source="t",
    )
    assert fleet.errors == []
    tokens = fleet.tokens
    assert (tokens.verify(MOON), tokens.verify(MOON_OLD), tokens.verify(MARS)) == (
        "moon",
        "moon",
        "mars",
    )
    assert tokens.verify(str(new_token("moon"))) is None


def test_string_data_wins_over_data_like_the_api_server() -> None:
    other = str(new_token("moon"))
    fleet = parse_fleet(
        [cluster("moon"), secret("token-moon", string={"token": MOON}, data={"token": other})],
        source="t",
    )
    tokens = fleet.tokens
    assert tokens.verify(MOON) == "moon"
    assert tokens.verify(other) is None


# (documents, words every error must contain, clusters kept, probes kept)
BAD: list[tuple[str, list[Any], list[str], list[str], list[str]]] = [
    (
        "missing-secret",
        [cluster("moon")],
        ["cluster moon", "token-moon", "token"],
        ["moon"],
        [],
    ),
    (
        "secret-without-token-key",
        [cluster("moon"), secret("token-moon", string={"tokn": MOON})],
        ["cluster moon", "token-moon"],
        ["moon"],
        [],
    ),
    (
        "malformed-token-hash",
        [cluster("moon"), secret("token-moon", string={"tokenHash": "sha256:abc"})],
        ["cluster moon", "token-moon", "sha256:<64 hex digits>"],
        ["moon"],
        [],
    ),
    (
        "malformed-token",
        [cluster("moon"), secret("token-moon", string={"token": "hunter2"})],
        ["cluster moon", "token-moon", "kp1"],
        ["moon"],
        [],
    ),
    (
        "token-of-another-cluster",
        [cluster("moon"), secret("token-moon", string={"token": MARS})],
        ["cluster moon", "token-moon", "mars"],
        ["moon"],
        [],
    ),
    (
        "bad-base64",
        [
            cluster("moon"),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "token-moon"},
                "data": {"token": "%%%"},
            },
        ],
        ["Secret token-moon"],
        ["moon"],
        [],
    ),
    (
        "cluster-without-secret-ref",
        [{**cluster("moon"), "spec": {}}],
        ["Cluster moon", "spec.tokenSecretRef.name"],
        [],
        [],
    ),
    (
        "cluster-maintenance-not-bool",
        [{**cluster("moon"), "spec": {"tokenSecretRef": {"name": "s"}, "maintenance": "yes"}}],
        ["Cluster moon", "spec.maintenance"],
        [],
        [],
    ),
    (
        "cluster-without-name",
        [{**cluster("moon"), "metadata": {}}, secret("token-moon", string={"token": MOON})],
        ["Cluster", "metadata.name"],
        [],
        [],
    ),
    (
        "cluster-name-not-a-dns-label",
        [cluster("Moon_1")],
        ["Cluster Moon_1", "metadata.name"],
        [],
        [],
    ),
    (
        "probe-bad-layer",
        [probe("dns", layer="network")],
        ["Probe dns", "spec.layer", "network"],
        [],
        [],
    ),
    (
        "probe-unknown-prober",
        [probe("dns", checks=[{"name": "c", "prober": "telepathy"}])],
        ["Probe dns", "spec.checks[0]", "telepathy"],
        [],
        [],
    ),
    (
        "probe-bad-interval",
        [probe("dns", interval="soon")],
        ["Probe dns", "spec.interval"],
        [],
        [],
    ),
    (
        "not-a-map",
        ["just a string"],
        ["expected a manifest map"],
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("docs", "words", "clusters", "probes"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_objects_become_errors_naming_object_and_field(
    docs: list[Any], words: list[str], clusters: list[str], probes: list[str]
) -> None:
    good = [cluster("mars"), secret("token-mars", string={"token": MARS}), probe("ok")]
    fleet = parse_fleet([*docs, *good], source="clusters.yaml")
    tokens = fleet.tokens
    assert len(fleet.errors) == 1, fleet.errors
    for word in words:
        assert word in fleet.errors[0], fleet.errors[0]
    # The bad object is left out (or cannot connect); the good ones are unaffected.
    assert sorted(fleet.clusters) == sorted(["mars", *clusters])
    assert sorted(fleet.probes) == sorted(["ok", *probes])
    assert tokens.verify(MARS) == "mars"
    assert "moon" not in tokens


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text("kind: Cluster\n  metadata: [\n")
    with pytest.raises(ValueError, match=r"clusters\.yaml: invalid YAML"):
        load_file(path)


def fleet_of(**labels_by_cluster: dict[str, str]) -> Fleet:
    """A fleet of clusters labelled as given, and three central Probes a, b and x."""
    docs: list[Any] = [probe("a"), probe("b", layer="application"), probe("x")]
    for name, labels in labels_by_cluster.items():
        docs += [cluster(name, **labels), secret(f"token-{name}", string={"token": TOKENS[name]})]
    fleet = parse_fleet(docs, source="t")
    assert fleet.errors == []
    return fleet


def test_assignment_holds_the_labelled_probes_as_manifests() -> None:
    fleet = fleet_of(moon={"probe__b": "true", "probe__a": "true"}, mars={})
    body = fleet.assignment("moon")
    assert set(body) == {"revision", "probes"}
    assert isinstance(body["revision"], int) and not isinstance(body["revision"], bool)
    assert [p["metadata"]["name"] for p in body["probes"]] == ["a", "b"]
    assert body["probes"][1] == {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "b"},
        "spec": probe("b", layer="application")["spec"],
    }
    assert fleet.assignment("mars")["probes"] == []
    assert fleet.assignment("nowhere")["probes"] == []


def test_assignment_keeps_labels_but_not_the_central_namespace() -> None:
    doc = probe("a")
    doc["metadata"].update(namespace="kubeprober", labels={"team": "db"}, uid="123")
    fleet = parse_fleet([doc, cluster("moon", probe__a="true")], source="t")
    (sent,) = fleet.assignment("moon")["probes"]
    assert sent["metadata"] == {"name": "a", "labels": {"team": "db"}}


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        pytest.param({"probe__a": "true"}, {"probe__a": "true"}, True, id="same-labels"),
        pytest.param(
            {"probe__a": "true", "team": "x"},
            {"probe__a": "true", "team": "y"},
            True,
            id="unrelated-label",
        ),
        pytest.param({"probe__a": "true"}, {"probe__a": "false"}, False, id="unassigned"),
        pytest.param({"probe__a": "true"}, {"probe__b": "true"}, False, id="other-probe"),
        pytest.param({}, {"probe__a": "true"}, False, id="added"),
        pytest.param({}, {"probe__nope": "true"}, True, id="undefined-probe"),
    ],
)
def test_revision_follows_content(one: dict[str, str], other: dict[str, str], same: bool) -> None:
    first = fleet_of(moon=one).assignment("moon")
    second = fleet_of(moon=other).assignment("moon")
    assert (first["revision"] == second["revision"]) is same
    assert first == fleet_of(moon=one).assignment("moon")  # stable across loads


def test_revision_changes_when_an_assigned_probe_changes() -> None:
    before = parse_fleet([probe("a"), cluster("moon", probe__a="true")], source="t")
    after = parse_fleet([probe("a", interval="1m"), cluster("moon", probe__a="true")], source="t")
    assert before.assignment("moon")["revision"] != after.assignment("moon")["revision"]
