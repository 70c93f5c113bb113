"""One aggregator replica in Kubernetes mode as a process of its own, with quick loops.

``python -m tests.aggregator._replica KUBECONFIG NAMESPACE IDENTITY LEASE_SECONDS OPERATORS``
(OPERATORS: its ``--operator-tokens`` file) prints the URL it listens on, then serves until
SIGTERM (or SIGKILL, which is what tests/aggregator/test_replicas.py sends it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.pacing import BackoffSettings
from tests.aggregator._fleet_harness import PULL


def main() -> None:
    """Run one replica as argv says."""
    kubeconfig, namespace, identity, lease, operators = sys.argv[1:6]
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {identity} %(name)s %(levelname)s %(message)s"
    )
    settings = AggregatorSettings(
        kube=KubeModeSettings(
            kubeconfig=Path(kubeconfig),
            namespace=namespace,
            identity=identity,
            lease_duration=int(lease),
            status_interval=0.1,
            backoff=BackoffSettings(initial=0.05, maximum=0.5),
        ),
        host="127.0.0.1",
        port=0,
        operator_tokens_file=Path(operators),
        pull=PULL,
        offline_after=30.0,
        reload_interval=0.1,
    )
    asyncio.run(run_aggregator(settings, on_listening=lambda url: print(url, flush=True)))


if __name__ == "__main__":
    main()
