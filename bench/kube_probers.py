"""Cost of the ``pod-lifecycle`` and ``namespace`` probers per run, to the API server and to the
agent.

The same harness as ``bench/service_prober.py`` (the API test server and the cluster simulator
in a child process, needs root; one check at a time through the runner with ``ctx.kube``).
``pod-lifecycle`` creates a pause pod, waits until it is scheduled, started and Ready, deletes
it and waits until it is gone; ``namespace`` creates a namespace, deletes it and waits until
the controller has removed it. Printed per prober: API requests per run, agent CPU per run,
wall time per run.

    sudo .venv/bin/python bench/kube_probers.py              # 20 runs of each
    sudo .venv/bin/python bench/kube_probers.py --runs 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service_prober import main  # noqa: E402

CHECKS: dict[str, dict[str, Any]] = {
    "pod-lifecycle": {"image": "registry.k8s.io/pause:3.10"},
    "namespace": {"prefix": "bench-ns-"},
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="checks run per prober")
    main(parser.parse_args(), CHECKS)
