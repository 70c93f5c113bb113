"""Property tests: any Probe manifest yields a valid Probe or errors naming field and value.

A hostile or careless manifest must never crash the loader: ``--probes`` files and Probes read
from the API server both go through ``load_text`` / ``parse_probe``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeprober.probers import registry
from kubeprober.probers.probe import LoadResult, load_text

# Values of every YAML type, nested a little: what a careless edit puts where anything goes.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["30s", "0s", "-1s", "1m30s", "*/5 * * * *", "Europe", "Europe/Paris", "1e400"]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

_VALID: dict[str, Any] = {
    "apiVersion": "kubeprober.io/v1",
    "kind": "Probe",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "layer": "application",
        "interval": "30s",
        "checks": [{"name": "tcp", "prober": "tcp", "with": {"host": "127.0.0.1", "port": 80}}],
    },
}
# Where a value may be replaced: each path names a key inside the valid manifest.
_PATHS: list[tuple[str | int, ...]] = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("spec",),
    *[
        ("spec", key)
        for key in (
            "layer",
            "schedule",
            "timeZone",
            "interval",
            "jitter",
            "timeout",
            "suspend",
            "checks",
            "template",
            "bogus",
        )
    ],
    *[("spec", "checks", 0, key) for key in ("name", "prober", "with", "timeout", "targets")],
]
_probers = st.sampled_from(sorted(registry.probers()))


def _manifest(prober: str) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(_VALID)
    doc["spec"]["checks"][0]["prober"] = prober
    return doc


def _assert_clean(result: LoadResult) -> None:
    for error in result.errors:
        for leaf in error.error.errors:
            text = str(leaf)
            assert "\n" not in text, text
            assert "Traceback" not in text, text
            assert leaf.message, error
            # a field path, or the whole document ("document 2: expected a manifest map")
            assert leaf.path or error.name or error.whole_file, error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _values), min_size=1, max_size=3), _probers)
def test_any_field_value_is_a_probe_or_a_named_error(
    changes: list[tuple[tuple[str | int, ...], object]], prober: str
) -> None:
    doc = _manifest(prober)
    for path, value in changes:
        node: Any = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier change replaced the parent
            continue
    text = yaml.safe_dump(doc)
    result = load_text(text, source="probe.yaml")
    # a Probe, an error, or (another apiVersion) a warning naming the skipped document
    assert len(result.probes) + len(result.errors) + len(result.warnings) == 1, result
    assert all("\n" not in warning for warning in result.warnings), result.warnings
    _assert_clean(result)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_probes_or_errors(text: str) -> None:
    result = load_text(text, source="probe.yaml")
    _assert_clean(result)


def test_a_key_holding_a_newline_is_named_on_one_line() -> None:
    doc = _manifest("tcp")
    doc["spec"]["checks"][0]["with"]["ho\nst"] = 1
    (error,) = load_text(yaml.safe_dump(doc), source="probe.yaml").errors
    assert str(error) == (
        "probe.yaml: web: spec.checks[0].with.ho\\nst: unknown option (known: "
        + str(error).split("(known: ")[1]
    )
