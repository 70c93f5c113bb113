"""The client commands: ``status`` and ``run`` ask an aggregator over HTTP and print tables;
``report`` sends a script probe's result to the agent that runs it.

They only speak HTTP to a service (:mod:`kubeprober.client` finds the aggregator and turns
every failure into one line; ``report`` is :mod:`probers.container_sdk`), so they live beside
the ``kubeprober`` command, not in the services.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from kubeprober import client
from kubeprober.args import USAGE_EXIT, Parser, ca_bundle, positive_float, readable_file
from kubeprober.probers import container_sdk
from kubeprober.probers.report import MAX_MESSAGE_CHARS, CheckReport
from kubeprober.probers.status import Status, exit_code, shown, worst
from kubeprober.table import print_table

LAYER_COLUMNS = ("application", "middleware", "kubernetes", "infrastructure")
COMMANDS = ("status", "run", "kubeconfig", "report")
"""The subcommands :func:`register` adds."""


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``status``, ``run``, ``kubeconfig`` and ``report`` to the umbrella CLI."""
    for name, helptext in (
        (
            "status",
            "print the fleet's status table (exit 0/1/2/3 like check; 3 also while no check "
            "has a result)",
        ),
        ("run", "run a probe now on a cluster, through its tunnel, and print the result"),
        (
            "kubeconfig",
            "write a kubeconfig whose server is the aggregator's path to a cluster's API, for "
            "plain kubectl (the cluster's agent must run with --accept-api-proxy)",
        ),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:])
        p.add_argument(
            "--aggregator",
            metavar="URL",
            help=f"aggregator URL (default ${client.URL_ENV}, else the demo running from "
            f"this directory ({client.DEMO_INFO}), else {client.DEFAULT_URL})",
        )
        if name == "status":
            p.add_argument(
                "--read-token-file",
                type=readable_file,
                metavar="FILE",
                help="bearer token for an aggregator that requires one",
            )
        else:
            p.add_argument(
                "--operator-token-file",
                type=readable_file,
                metavar="FILE",
                help="operator token (see `kubeprober token`)",
                required=name == "kubeconfig",
            )
        p.add_argument(
            "--aggregator-ca",
            type=ca_bundle,
            metavar="PEM",
            help=f"CA bundle trusted for the aggregator's certificate (default "
            f"${client.CA_ENV}, the demo's CA for the demo, else the system's)",
        )
        if name == "status":
            p.add_argument("--cluster", metavar="NAME", help="show this cluster's probes")
            p.add_argument("--watch", action="store_true", help="redraw every --interval")
            p.add_argument("--interval", type=positive_float, default=5.0, metavar="SECONDS")
            p.set_defaults(func=_status)
        elif name == "run":
            p.add_argument("probe", metavar="[NAMESPACE/]PROBE")
            p.add_argument("--cluster", required=True, metavar="NAME")
            p.set_defaults(func=_run)
        else:
            p.add_argument("--cluster", required=True, metavar="NAME")
            p.add_argument(
                "-o",
                "--output",
                type=Path,
                metavar="FILE",
                help="write it there and print the path (default: standard output)",
            )
            p.add_argument("--namespace", metavar="NS", help="the context's namespace")
            p.set_defaults(func=_kubeconfig)
    _register_report(sub)


def _request(
    args: argparse.Namespace,
    path: str,
    *,
    token_file: Path | None,
    token_flag: str,
    method: str = "GET",
) -> Any:
    """Ask the aggregator the flags name; on failure print one line and exit 3."""
    try:
        target = client.resolve(
            args.aggregator, args.aggregator_ca, token_file, token_flag=token_flag
        )
        return client.request_json(target, path, method=method)
    except client.ClientError as exc:
        print(f"kubeprober: {exc}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None


def _status(args: argparse.Namespace) -> int:
    query = f"?cluster={urllib.parse.quote(args.cluster)}" if args.cluster else ""
    while True:
        doc = _request(
            args, "/status" + query, token_file=args.read_token_file, token_flag="--read-token-file"
        )
        if args.watch:
            print("\033[2J\033[H", end="")
        code = print_fleet(doc, detail=bool(args.cluster))
        if not args.watch:
            return code
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return code


def print_fleet(doc: dict[str, Any], *, detail: bool) -> int:
    """Print the clusters table (and with ``detail`` each check); return the exit code."""
    rows = [
        ("CLUSTER", "STATE", "STATUS", *(c.upper() for c in LAYER_COLUMNS), "LAST SEEN", "KUBECTL")
    ]
    for c in doc["clusters"]:
        layers = [_layer_cell(c["layers"][lay]) for lay in LAYER_COLUMNS]
        rows.append(
            (
                c["name"],
                c["state"],
                _shown(c["summary"]),
                *layers,
                c["lastSeen"] or "never",
                # whether `kubeprober kubeconfig` works for it: read, write, or off
                c.get("apiProxy") or "-",
            )
        )
    print_table(rows)
    if detail:
        for c in doc["clusters"]:
            checks = [("PROBE", "CHECK", "LAYER", "STATUS", "MESSAGE")]
            for p in c["probes"]:
                stale = " (stale)" if p.get("stale") else ""
                for name, status, message in check_rows(p):
                    checks.append(
                        (f"{p['namespace']}/{p['name']}", name, p["layer"], status + stale, message)
                    )
            print()
            print_table(checks)
    if not doc["clusters"]:
        print("no clusters")
    listed = [c["summary"]["status"] for c in doc["clusters"]]
    return exit_code(worst(Status(s) for s in listed if s is not None))


def check_rows(probe: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(check, status, message)`` rows of one probe: a check with targets is one row
    ("198/200 PASS") followed by its failing targets; passing targets are only counted."""
    groups = {t["check"]: t for t in probe.get("targets") or []}
    members: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    rows = []
    for ch in probe["checks"]:
        group, slash, _ = ch["name"].partition("/")
        if slash and group in members:
            members[group].append(ch)
        else:
            rows.append((ch["name"], shown(ch["status"], pending=1), _one_line(ch["message"])))
    for group, targets in groups.items():
        mine = members[group]
        ran = [Status(ch["status"]) for ch in mine if ch["status"] is not None]
        good = sum(s in (Status.PASS, Status.INFO) for s in ran)
        notes = [f"{good}/{len(mine)} PASS" if mine else "no targets"]
        if targets.get("leftOut"):
            notes.append(f"{targets['leftOut']} more left out (over the cap)")
        if targets.get("message"):
            notes.append(targets["message"])
        status = worst(ran)
        word = status.value if status else ("pending" if mine else "no targets")
        rows.append((group, word, "; ".join(notes)))
        failing = [ch for ch in mine if ch["status"] not in (None, "PASS", "INFO")]
        failing.sort(key=lambda ch: (-Status(ch["status"]).severity, ch["name"]))
        rows.extend((f"  {ch['name']}", ch["status"], _one_line(ch["message"])) for ch in failing)
    return rows


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _shown(summary: dict[str, Any]) -> str:
    """A summary's status, or "pending" / "no checks" when no check has a result."""
    return shown(summary["status"], pending=summary["pending"])


def _layer_cell(summary: dict[str, Any]) -> str:
    """``ERROR 1/4``: the layer's status and how many of its checks have it; ``-`` if none."""
    if not summary["total"]:
        return "-"
    if summary["status"] is None:
        return f"pending {summary['pending']}/{summary['total']}"
    return f"{summary['status']} {summary['byStatus'].get(summary['status'], 0)}/{summary['total']}"


def _run(args: argparse.Namespace) -> int:
    namespace, _, name = args.probe.rpartition("/")
    view = _request(
        args,
        f"/api/v1/clusters/{args.cluster}/probes/{namespace or 'default'}/{name}/run",
        token_file=args.operator_token_file,
        token_flag="--operator-token-file",
        method="POST",
    )
    rows = [("CHECK", "STATUS", "DURATION", "MESSAGE")]
    for ch in view["checks"]:
        duration = ch["durationSeconds"]
        rows.append(
            (
                ch["name"],
                shown(ch["status"], pending=1),
                "-" if duration is None else f"{duration * 1000:.0f}ms",
                " ".join(ch["message"].split()),
            )
        )
    status = view["status"]
    print(
        f"{args.cluster}: {view['namespace']}/{view['name']} ({view['layer']}): "
        f"{shown(status, pending=1)}"
    )
    print_table(rows)
    return exit_code(None if status is None else Status(status))


def _register_report(sub: argparse._SubParsersAction[Parser]) -> None:
    helptext = (
        "report a check's result from a container probe to the agent that started it "
        f"(${container_sdk.URL_ENV}, ${container_sdk.TOKEN_ENV}, ${container_sdk.DEADLINE_ENV}); "
        "exit 0 once taken, 3 with the reason if refused or not delivered by the deadline"
    )
    p = sub.add_parser("report", help=helptext, description=helptext[0].upper() + helptext[1:])
    p.add_argument(
        "--check", required=True, metavar="NAME", help="the check, as the Probe names it"
    )
    p.add_argument(
        "--status",
        required=True,
        type=str.upper,
        choices=[s.value for s in Status],
        metavar="STATUS",
        help="PASS, INFO, WARN, ERROR or UNKNOWN (any case)",
    )
    p.add_argument("--message", default="", metavar="TEXT", help="why (required unless PASS)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help=f"print the report instead of sending it (also ${container_sdk.DRY_RUN_ENV}=1)",
    )
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    if args.status != Status.PASS and not args.message:
        print(f"kubeprober report: --message: required for {args.status}", file=sys.stderr)
        return USAGE_EXIT
    if len(args.message) > MAX_MESSAGE_CHARS:
        print(
            f"kubeprober report: --message: longer than {MAX_MESSAGE_CHARS} characters",
            file=sys.stderr,
        )
        return USAGE_EXIT
    check = CheckReport(args.check, Status(args.status), args.message)
    try:
        container_sdk.report(check, dry_run=args.dry_run)
    except container_sdk.ReportFailed as exc:
        print(f"kubeprober report: {exc}", file=sys.stderr)
        return USAGE_EXIT
    return 0


def kubeconfig(target: client.Target, cluster: str, token_file: Path, namespace: str | None) -> str:
    """A kubeconfig for ``cluster`` through the aggregator; it names the token file, never the
    token. Raise ClientError when kubectl could not use it."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", cluster):
        raise client.ClientError(f"--cluster {cluster!r}: not a cluster name (a DNS label)")
    if not target.url.startswith("https://"):
        raise client.ClientError(
            f"aggregator {target.url}: kubectl sends no token over http://; "
            "use the aggregator's https:// address (it serves TLS with --tls-cert)"
        )
    server: dict[str, str] = {"server": f"{target.url}/api/v1/clusters/{cluster}/kube"}
    if target.ca is not None:
        server["certificate-authority"] = str(target.ca.resolve())
    context = {"cluster": cluster, "user": "kubeprober-operator"}
    if namespace:
        context["namespace"] = namespace
    name = f"kubeprober-{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": server}],
        "users": [
            {"name": "kubeprober-operator", "user": {"tokenFile": str(token_file.resolve())}}
        ],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    return json.dumps(doc, indent=2) + "\n"


def _kubeconfig(args: argparse.Namespace) -> int:
    try:
        target = client.resolve(
            args.aggregator,
            args.aggregator_ca,
            args.operator_token_file,
            token_flag="--operator-token-file",
        )
        text = kubeconfig(target, args.cluster, args.operator_token_file, args.namespace)
    except client.ClientError as exc:
        print(f"kubeprober: {exc}", file=sys.stderr)
        return USAGE_EXIT
    if args.output is None:
        print(text, end="")
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"kubeprober: --output {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE_EXIT
    print(args.output)
    return 0
