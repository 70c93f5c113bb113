"""Probes assigned by the aggregator: validation, the remote-exec guard, persistence, merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeprober.exporter.assignment import Assignment, AssignmentError, merge
from kubeprober.probers.probe import Probe, parse_probe


def doc(name: str, prober: str = "tcp", **spec: Any) -> dict[str, Any]:
    """A Probe manifest as the aggregator sends it (no namespace) with one check."""
    options = {"command": ["true"]} if prober == "exec" else {"host": "db", "port": 5432}
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": name},
        "spec": {
            "layer": "middleware",
            "interval": "30s",
            "checks": [{"name": f"{name}-check", "prober": prober, "with": options}],
            **spec,
        },
    }


def local(name: str) -> Probe:
    """A Probe from the cluster's own files."""
    return parse_probe(doc(name, "exec"), source="local.yaml")


TEMPLATE = {"containers": [{"name": "c", "image": "busybox"}]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param([], ["JSON object"], id="not-an-object"),
        pytest.param({"probes": []}, ["revision"], id="no-revision"),
        pytest.param({"revision": "3", "probes": []}, ["revision", "'3'"], id="string-revision"),
        pytest.param({"revision": True, "probes": []}, ["revision", "True"], id="bool-revision"),
        pytest.param({"revision": 3}, ["probes"], id="no-probes"),
        pytest.param({"revision": 3, "probes": {"a": 1}}, ["probes", "list"], id="probes-map"),
    ],
)
def test_unusable_bodies_are_rejected_whole(body: object, words: list[str]) -> None:
    a = Assignment()
    a.apply({"revision": 1, "probes": [doc("keep")]})
    with pytest.raises(AssignmentError) as raised:
        a.apply(body)
    assert all(w in str(raised.value) for w in words), str(raised.value)
    assert (a.revision, [p.name for p in a.probes]) == (1, ["keep"])  # the last good one stays


# (probes sent, accept_remote_exec, accepted names, {refused name: words in the reason})
CASES: list[tuple[str, list[Any], bool, list[str], dict[str, list[str]]]] = [
    ("plain", [doc("db"), doc("web")], False, ["db", "web"], {}),
    ("empty", [], False, [], {}),
    (
        "exec-refused",
        [doc("db"), doc("script", "exec")],
        False,
        ["db"],
        {"script": ["script-check", "exec", "--accept-remote-exec"]},
    ),
    ("exec-accepted", [doc("db"), doc("script", "exec")], True, ["db", "script"], {}),
    (
        "exec-among-other-checks",
        [
            {
                **doc("mixed"),
                "spec": {
                    **doc("mixed")["spec"],
                    "checks": [
                        doc("a")["spec"]["checks"][0],
                        doc("b", "exec")["spec"]["checks"][0],
                    ],
                },
            }
        ],
        False,
        [],
        {"mixed": ["b-check", "--accept-remote-exec"]},
    ),
    (
        "container-refused",
        [
            {
                **doc("job", template=TEMPLATE),
                "spec": {**doc("job")["spec"], "template": TEMPLATE, "checks": [{"name": "login"}]},
            }
        ],
        False,
        [],
        {"job": ["spec.template", "container probe", "--accept-remote-exec"]},
    ),
    (
        "container-accepted",
        [
            {
                **doc("job"),
                "spec": {**doc("job")["spec"], "template": TEMPLATE, "checks": [{"name": "login"}]},
            }
        ],
        True,
        ["job"],
        {},
    ),
    (
        "invalid-probe",
        [doc("db"), doc("bad", layer="network")],
        True,
        ["db"],
        {"bad": ["spec.layer", "network"]},
    ),
    ("not-a-manifest", ["junk"], True, [], {"probes[0]": ["manifest", "str"]}),
]


@pytest.mark.parametrize(
    ("probes", "accept", "accepted", "refused"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_apply_accepts_and_refuses_by_name(
    probes: list[Any], accept: bool, accepted: list[str], refused: dict[str, list[str]]
) -> None:
    a = Assignment(accept_remote_exec=accept)
    report = a.apply({"revision": 42, "probes": probes})
    assert report["revision"] == a.revision == 42
    assert report["accepted"] == accepted
    assert [r["name"] for r in report["refused"]] == sorted(refused)
    for item in report["refused"]:
        for word in refused[item["name"]]:
            assert word in item["reason"], item
    assert sorted(p.name for p in a.probes) == accepted
    assert all(p.namespace == "default" for p in a.probes)


def test_assignment_is_persisted_and_reloaded(tmp_path: Path) -> None:
    body = {"revision": 7, "probes": [doc("db"), doc("script", "exec")]}
    Assignment(state_dir=tmp_path).apply(body)
    saved = json.loads((tmp_path / "assignment.json").read_text())
    assert saved == body  # the body as sent, refusals included, so a flag change re-decides

    again = Assignment(accept_remote_exec=True, state_dir=tmp_path)
    again.load()
    assert again.revision == 7
    assert sorted(p.name for p in again.probes) == ["db", "script"]


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"revision": "x", "probes": []}', "[]"],
    ids=["json", "revision", "list"],
)
def test_a_broken_saved_assignment_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / "assignment.json").write_text(content)
    a = Assignment(state_dir=tmp_path)
    a.load()
    assert (a.revision, a.probes) == (None, [])


def test_without_state_dir_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    a = Assignment()
    a.apply({"revision": 1, "probes": [doc("db")]})
    a.load()
    assert a.path is None
    assert list(tmp_path.iterdir()) == []


def test_assigned_probes_run_in_the_agents_namespace(tmp_path: Path) -> None:
    elsewhere = doc("db")
    elsewhere["metadata"]["namespace"] = "elsewhere"
    body = {"revision": 1, "probes": [doc("web"), elsewhere]}
    a = Assignment(namespace="kubeprober", state_dir=tmp_path)
    a.apply(body)
    assert sorted(p.key for p in a.probes) == [("kubeprober", "db"), ("kubeprober", "web")]
    assert json.loads((tmp_path / "assignment.json").read_text()) == body  # kept as sent
    # A Probe of the same name in the agent's namespace is the local one, and wins.
    own = parse_probe(
        {**doc("db"), "metadata": {"name": "db", "namespace": "kubeprober"}}, source="x"
    )
    merged = merge([own], a)
    assert sorted(p.key for p in merged) == [("kubeprober", "db"), ("kubeprober", "web")]
    assert "local Probe kubeprober/db" in a.refused["db"]


def test_local_probes_win_a_name_clash() -> None:
    a = Assignment()
    a.apply({"revision": 1, "probes": [doc("db"), doc("web")]})
    merged = {p.name: p for p in merge([local("db"), local("disk")], a)}
    assert sorted(merged) == ["db", "disk", "web"]
    assert merged["db"].source == "local.yaml"
    assert merged["web"].source == "assignment"
    (clash,) = a.report()["refused"]
    assert clash["name"] == "db" and "local Probe default/db" in clash["reason"]


def test_a_clash_is_forgotten_once_the_local_probe_goes() -> None:
    a = Assignment()
    a.apply({"revision": 1, "probes": [doc("db")]})
    merge([local("db")], a)
    assert [r["name"] for r in a.report()["refused"]] == ["db"]
    merged = merge([], a)  # the cluster's owners deleted their db Probe
    assert [p.source for p in merged] == ["assignment"]
    assert a.report()["refused"] == []
    assert a.report()["accepted"] == ["db"]


def test_a_new_assignment_replaces_the_old_one() -> None:
    a = Assignment()
    a.apply({"revision": 1, "probes": [doc("db"), doc("script", "exec")]})
    a.apply({"revision": 2, "probes": [doc("web")]})
    assert a.report() == {"revision": 2, "accepted": ["web"], "refused": []}
