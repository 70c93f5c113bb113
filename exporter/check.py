"""``kubeprober check FILE...``: run every probe once, print a table, exit like a monitoring plugin.

Exit codes: 0 PASS/INFO, 1 WARN, 2 ERROR, 3 UNKNOWN (also: a Probe that failed to load, or
no check with a result), taking the most severe status, so it drops into CI pipelines and
Nagios-style checks. With ``--kubeconfig`` the Kubernetes probers run against that cluster;
without it they end UNKNOWN ("needs a Kubernetes API").
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from kubeprober import __version__
from kubeprober.exporter.discovery import Discovery
from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.probe_files import ConfigError
from kubeprober.exporter.runner import run_probe
from kubeprober.exporter.status import AgentFacts, status_document
from kubeprober.exporter.store import ResultStore, TargetSet
from kubeprober.kube.api import KubeApi
from kubeprober.probers import registry
from kubeprober.probers.durations import format_duration
from kubeprober.probers.probe import MAX_FILE_BYTES, combine, load_file, probe_files
from kubeprober.probers.status import Status, exit_code, shown, worst
from kubeprober.table import print_table


async def run_once(
    paths: Sequence[Path],
    *,
    concurrency: int,
    out: TextIO,
    err: TextIO,
    output: str = "table",
    max_file_bytes: int = MAX_FILE_BYTES,
    kube: KubeApi | None = None,
) -> int:
    """Load, run and print; return the exit code. ``kube`` is the cluster for ``ctx.kube``."""
    files = [file for path in paths for file in probe_files(path)]
    loaded = combine(load_file(file, max_bytes=max_file_bytes) for file in files)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=err)
    for error in loaded.errors:
        print(f"error: {error}", file=err)
    if not loaded.probes:
        print(f"error: no valid Probe in {', '.join(map(str, paths))}", file=err)
        return Status.UNKNOWN.exit_code
    store = ResultStore()
    store.set_probes(loaded.probes)

    def found(key: tuple[str, str], check: str, targets: TargetSet) -> None:
        store.set_targets(key, check, targets)

    discovery = Discovery(kube, found)
    discovery.apply(loaded.probes)
    try:
        await discovery.settled()  # targets from the cluster: listed once, not followed
    finally:
        await discovery.stop()
    for state in store:
        for check_name, targets in state.targets.items():
            if targets.message:
                where = f"{state.probe.namespace}/{state.probe.name}"
                print(f"warning: {where} check {check_name}: {targets.message}", file=err)
    checks = sum(len(s.runs()) for s in store)
    print(f"running {checks} checks of {len(loaded.probes)} probes...", file=err, flush=True)
    limit = asyncio.Semaphore(concurrency)
    probers = registry.probers()
    access = ProberAccess(kube) if kube is not None else None

    async def one(probe_key: tuple[str, str]) -> None:
        state = store.get(probe_key)
        assert state is not None
        start = time.monotonic()
        results = await run_probe(state.probe, probers, limit, state.runs(), kube=access)
        store.record(probe_key, results, duration=time.monotonic() - start)

    await asyncio.gather(*(one(p.key) for p in loaded.probes))
    if output == "json":
        errors = tuple(ConfigError.of(e) for e in loaded.errors)
        facts = AgentFacts(cluster="local", version=__version__, config_errors=errors)
        doc = status_document(store, facts)
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        print_results(store, out)
    statuses = [c.result.status for s in store for c in s.checks.values() if c.result]
    if loaded.errors:
        statuses.append(Status.UNKNOWN)
    return exit_code(worst(statuses))


def print_results(store: ResultStore, out: TextIO) -> None:
    """Print one row per check, columns sized to their content, messages last."""
    rows = [("PROBE", "CHECK", "LAYER", "STATUS", "DURATION", "MESSAGE")]
    for state in store:
        p = state.probe
        for name, check in state.checks.items():
            r = check.result
            rows.append(
                (
                    f"{p.namespace}/{p.name}",
                    name,
                    p.layer,
                    shown(None if r is None else r.status.value, pending=1),
                    "-" if r is None else format_duration(round(r.duration, 3)),
                    "" if r is None else " ".join(r.message.split()),
                )
            )
    print_table(rows, out, status_column=3)


def main(
    paths: Sequence[Path],
    *,
    concurrency: int,
    output: str,
    max_file_bytes: int,
    kubeconfig: Path | None = None,
) -> int:
    """Entry point for the CLI; raises KubeError for a kubeconfig that cannot be loaded."""

    async def run() -> int:
        kube = KubeApi.from_kubeconfig(kubeconfig) if kubeconfig is not None else None
        try:
            return await run_once(
                paths,
                concurrency=concurrency,
                out=sys.stdout,
                err=sys.stderr,
                output=output,
                max_file_bytes=max_file_bytes,
                kube=kube,
            )
        finally:
            if kube is not None:
                await kube.close()

    return asyncio.run(run())
