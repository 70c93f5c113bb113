"""The CRDs and the Python model say the same thing, so one Probe file works in both modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubeprober.exporter.kube.statuses import PENDING, status_body
from kubeprober.exporter.status import check_view
from kubeprober.exporter.store import CheckState, ProbeState, ResultStore
from kubeprober.probers.durations import PATTERN
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import (
    CHECK_KEYS,
    CHECK_NAME_PATTERN,
    LAYERS,
    SPEC_KEYS,
    Check,
    Probe,
    is_probe,
    iter_documents,
    parse_probe,
)
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "manifests" / "crds"


def crd(plural: str) -> dict[str, Any]:
    """Load the CRD for ``plural``.kubeprober.io."""
    doc: dict[str, Any] = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
    assert doc["metadata"]["name"] == f"{plural}.kubeprober.io"
    return doc


def schema(plural: str) -> dict[str, Any]:
    """The v1 OpenAPI schema of a CRD."""
    (version,) = crd(plural)["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


@pytest.mark.parametrize("plural", ["probes", "probestatuses", "clusters"])
def test_common_shape(plural: str) -> None:
    spec = crd(plural)["spec"]
    assert spec["group"] == "kubeprober.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["kubeprober"]
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_probestatus_names_and_columns() -> None:
    spec = crd("probestatuses")["spec"]
    assert spec["names"]["shortNames"] == ["pst"]
    columns = [c["name"].upper() for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["STATUS", "PASSED", "MESSAGE", "LAST RUN", "AGE"]


def test_probe_spec_fields_match_the_model() -> None:
    spec = schema("probes")["properties"]["spec"]
    assert set(spec["properties"]) == SPEC_KEYS
    assert spec["properties"]["layer"]["enum"] == list(LAYERS)
    check = spec["properties"]["checks"]["items"]
    assert set(check["properties"]) == CHECK_KEYS
    assert check["properties"]["name"]["pattern"] == CHECK_NAME_PATTERN
    # Free maps must be preserved, or a real API server silently drops them.
    assert check["properties"]["with"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
    for key in ("interval", "jitter", "timeout"):
        assert spec["properties"][key]["pattern"] == PATTERN
    assert check["properties"]["timeout"]["pattern"] == PATTERN


@pytest.mark.parametrize(
    ("plural", "path", "extra"),
    [
        # A probe none of whose checks has a result is Pending (/status: null).
        ("probestatuses", ("status", "status"), [PENDING]),
        ("probestatuses", ("status", "checks", "items", "status"), []),
        ("clusters", ("status", "summary", "status"), []),
    ],
)
def test_status_enums_are_the_five_statuses(
    plural: str, path: tuple[str, ...], extra: list[str]
) -> None:
    node = schema(plural)
    for key in path:
        node = node["items"] if key == "items" else node["properties"][key]
    assert node["enum"] == [s.value for s in Status] + extra


def test_probestatus_check_fields_match_the_status_document() -> None:
    probe = Probe(
        namespace="ns", name="p", layer="application", checks=(Check("c", "tcp", None, {}, 1.0),)
    )
    view = check_view("c", CheckState(), ProbeState(probe, {}))
    item = schema("probestatuses")["properties"]["status"]["properties"]["checks"]["items"]
    assert set(item["properties"]) == set(view)


def test_probestatus_of_a_probe_that_never_ran_is_pending() -> None:
    checks = (Check("a", "tcp", None, {}, 1.0), Check("b", "tcp", None, {}, 1.0))
    probe = Probe(namespace="ns", name="p", layer="application", checks=checks)
    store = ResultStore()
    store.set_probes([probe])
    state = store.get(probe.key)
    assert state is not None
    schema_of_status = schema("probestatuses")["properties"]["status"]

    def stored(body: dict[str, Any]) -> dict[str, Any]:
        """What the object holds: a merge patch deletes null fields."""
        return {k: v for k, v in body.items() if v is not None}

    body = status_body(state)
    assert (body["status"], body["passed"]) == (PENDING, "0/2")
    pending = {"pending": True, "message": "no result yet", "consecutiveFailures": 0}
    assert body["checks"] == [{"name": "a", **pending}, {"name": "b", **pending}]
    jsonschema.validate(stored(body), schema_of_status)

    store.record(probe.key, {"a": CheckResult(Status.WARN, "slow", 1e9, 0.1)}, duration=0.1)
    body = status_body(state)
    assert body["status"] == "WARN"
    assert [(c["name"], c.get("status"), c["pending"]) for c in body["checks"]] == [
        ("a", "WARN", False),
        ("b", None, True),
    ]
    jsonschema.validate(stored(body), schema_of_status)


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every Probe manifest under examples/, with its file name."""
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs.extend((path.name, d) for d in iter_documents(path.read_text()) if is_probe(d))
    return docs


@pytest.mark.parametrize(
    ("name", "doc"), example_documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_examples_pass_the_crd_schema_and_the_model(name: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, schema("probes"))
    parse_probe(doc, source=name)


@pytest.mark.parametrize(
    "spec",
    [
        {"layer": "network", "checks": [{"name": "a", "prober": "tcp"}]},
        {"layer": "application", "checks": []},
        {"layer": "application", "interval": "soon", "checks": [{"name": "a", "prober": "tcp"}]},
        {"layer": "application", "checks": [{"name": "-a", "prober": "tcp"}]},
        {"layer": "application", "color": "red", "checks": [{"name": "a", "prober": "tcp"}]},
    ],
    ids=["layer", "no-checks", "interval", "check-name", "unknown-field"],
)
def test_both_reject_the_same_bad_specs(spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "p"},
        "spec": spec,
    }
    with pytest.raises(SpecError):
        parse_probe(doc)
    strict = schema("probes")
    # A real API server prunes unknown fields rather than rejecting them; the model rejects.
    if "color" in spec:
        strict["properties"]["spec"]["additionalProperties"] = False
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, strict)
