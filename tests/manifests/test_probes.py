"""The default probe set in manifests/probes/ loads as the agent loads it: no errors."""

from __future__ import annotations

from kubeprober.probers.probe import load_path
from tests.conftest import MANIFESTS


def test_default_probes_load() -> None:
    loaded = load_path(MANIFESTS / "probes")
    assert not loaded.errors, loaded.errors
    names = {probe.name for probe in loaded.probes}
    assert {"dns", "service", "targets"} <= names
    assert {"addons", "namespace", "nodes", "pod-lifecycle", "webhooks"} <= names
