"""Where the board sends someone from a check: its Grafana panel and its runbook.

This is the one place those links are made. The aggregator is told two base URLs
(``--grafana-url``, ``--runbook-url``); the names behind them are the product's own: the
dashboards of ``dashboards/`` (by their stable ``uid`` and variables) and the alerts of
``alerts/``, each with a section of ``docs/runbooks.md``. From them this module makes URL
templates and hands them to the page, which fills ``{cluster}``, ``{namespace}``, ``{probe}``
and ``{check}`` with a check's names, each percent-encoded. Without a base URL there is no
such link, rather than one that leads nowhere.

A runbook is the one of the alert a status would raise: ERROR pages as
``KubeproberCheckFailing``, UNKNOWN as ``KubeproberCheckUnknown``, an offline cluster as
``KubeproberAgentDown`` and a probe file that did not load as ``KubeproberProbeFileInvalid``.
WARN raises no check alert (a certificate's WARN has alerts of its own, which the board cannot
tell apart from any other WARN), so a WARN check links to its panel only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHECK_DASHBOARD = "kubeprober-check"
"""``uid`` of dashboards/check.json, *kubeprober / Probe and check*."""
CHECK_PANEL = 1
"""Its "Status history" panel, opened alone with ``viewPanel``."""
CHECK_VARIABLES = ("cluster", "namespace", "probe", "check")
"""The dashboard's variables, named as the check's labels, each set from the check."""
CLUSTER_DASHBOARD = "kubeprober-cluster"
"""``uid`` of dashboards/cluster.json, *kubeprober / Cluster*, with its ``cluster`` variable."""
RUNBOOK_ALERTS = {
    "ERROR": "KubeproberCheckFailing",
    "UNKNOWN": "KubeproberCheckUnknown",
    "offline": "KubeproberAgentDown",
    "configError": "KubeproberProbeFileInvalid",
}
"""The alert whose runbook a board row links to: by a check's status, or by what is wrong."""


@dataclass(frozen=True)
class BoardLinks:
    """Base URLs of the Grafana that holds the dashboards and of ``docs/runbooks.md``."""

    grafana_url: str | None = None
    """Like ``https://grafana.example.com`` (or with the path Grafana is served under)."""
    runbook_url: str | None = None
    """Where docs/runbooks.md is read, like
    ``https://github.com/example/kubeprober/blob/main/docs/runbooks.md``."""

    def page_config(self) -> dict[str, Any]:
        """The templates the page fills in; a kind of link left out is not shown."""
        config: dict[str, Any] = {}
        if self.grafana_url:
            base = self.grafana_url.rstrip("/")
            check_vars = "&".join(f"var-{v}={{{v}}}" for v in CHECK_VARIABLES)
            config["checkPanel"] = (
                f"{base}/d/{CHECK_DASHBOARD}?{check_vars}&viewPanel={CHECK_PANEL}"
            )
            config["clusterDashboard"] = f"{base}/d/{CLUSTER_DASHBOARD}?var-cluster={{cluster}}"
        if self.runbook_url:
            config["runbooks"] = {
                what: f"{self.runbook_url}#{runbook_anchor(alert)}"
                for what, alert in RUNBOOK_ALERTS.items()
            }
        return config


def runbook_anchor(alert: str) -> str:
    """The fragment of an alert's section: its heading as GitHub and most renderers id it."""
    return alert.lower()
