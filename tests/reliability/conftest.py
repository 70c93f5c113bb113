"""Fixtures the fault tests share with the agent's Kubernetes tests."""

from tests.exporter.kube.conftest import open_port, start_agent

__all__ = ["open_port", "start_agent"]
