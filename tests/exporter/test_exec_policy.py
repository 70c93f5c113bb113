"""Which namespaces' Probe objects may run commands: the ``--exec-namespaces`` value."""

from __future__ import annotations

import pytest

from kubeprober.exporter.exec_policy import ExecNamespaces, code_at
from kubeprober.probers.probe import Probe, parse_probe


def probe(namespace: str, *probers: str) -> Probe:
    """Return a parsed Probe with one check per prober; ``container`` makes a container probe."""
    options = {"exec": {"command": ["true"]}, "tcp": {"host": "127.0.0.1", "port": 1}}
    spec: dict[str, object] = {"layer": "application"}
    if probers == ("container",):
        spec["template"] = {"containers": [{"name": "c", "image": "busybox"}]}
        spec["checks"] = [{"name": "c0"}]
    else:
        spec["checks"] = [
            {"name": f"c{i}", "prober": p, "with": options[p]} for i, p in enumerate(probers)
        ]
    doc = {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }
    return parse_probe(doc)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", set()),
        ("team-a", {"team-a"}),
        (" team-a, ,team-b ", {"team-a", "team-b"}),
        ("*", {"*"}),
    ],
)
def test_parse(text: str, names: set[str]) -> None:
    assert ExecNamespaces.parse(text).names == names


def test_parse_refuses_star_among_names() -> None:
    with pytest.raises(ValueError, match="not both"):
        ExecNamespaces.parse("team-a,*")


@pytest.mark.parametrize(
    ("allowed", "namespace", "probers", "refused"),
    [
        ("", "team-a", ("tcp",), False),  # no command: nothing to allow
        ("", "team-a", ("tcp", "exec"), True),
        ("team-b", "team-a", ("exec",), True),
        ("team-a,team-b", "team-a", ("exec",), False),
        ("*", "anywhere", ("exec",), False),
        ("", "team-a", ("container",), True),
        ("team-a", "team-a", ("container",), False),
    ],
)
def test_refusal(allowed: str, namespace: str, probers: tuple[str, ...], refused: bool) -> None:
    p = probe(namespace, *probers)
    error = ExecNamespaces.parse(allowed).refusal(p)
    assert (error is not None) == refused
    if error is not None:
        found = code_at(p)
        assert found is not None and error.path == found[0]
        assert error.path == (
            "spec.template"
            if "container" in probers
            else "spec.checks[1].prober"
            if probers[0] == "tcp"
            else "spec.checks[0].prober"
        )
        assert f"--exec-namespaces flag (now: {allowed or 'none'})" in str(error)
