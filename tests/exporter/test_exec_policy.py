"""Which namespaces' Probe objects may run commands: the ``--exec-namespaces`` value."""

from __future__ import annotations

import pytest

from kubeprober.exporter.exec_policy import ExecNamespaces, first_exec
from kubeprober.probers.probe import Probe, parse_probe


def probe(namespace: str, *probers: str) -> Probe:
    """Return a parsed Probe with one check per prober."""
    options = {"exec": {"command": ["true"]}, "tcp": {"host": "127.0.0.1", "port": 1}}
    checks = [{"name": f"c{i}", "prober": p, "with": options[p]} for i, p in enumerate(probers)]
    doc = {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"layer": "application", "checks": checks},
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
    ],
)
def test_refusal(allowed: str, namespace: str, probers: tuple[str, ...], refused: bool) -> None:
    p = probe(namespace, *probers)
    error = ExecNamespaces.parse(allowed).refusal(p)
    assert (error is not None) == refused
    if error is not None:
        assert error.path == f"spec.checks[{first_exec(p)}].prober"
        assert f"--exec-namespaces flag (now: {allowed or 'none'})" in str(error)
