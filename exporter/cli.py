"""The agent's subcommands: ``agent``, ``check`` and ``probers``. Parsing only; no logic."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from kubeprober.args import (
    USAGE_EXIT,
    Parser,
    byte_size,
    ca_bundle,
    listen_address,
    positive_int,
    readable_file,
)
from kubeprober.exporter import agent, check
from kubeprober.exporter.api_proxy import ApiProxyMode
from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.kube.containers import ContainerSettings
from kubeprober.exporter.scheduler import SchedulerSettings
from kubeprober.exporter.tunnel_client import tunnel_url
from kubeprober.kube.errors import KubeError
from kubeprober.probers import registry
from kubeprober.probers.options import describe
from kubeprober.probers.probe import MAX_FILE_BYTES
from kubeprober.tunnel.token import parse_token

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the agent-side subcommands to the umbrella CLI."""
    p = sub.add_parser(
        "agent",
        help="run the agent: probes on schedule, results as metrics and /status",
        description="Run probes on their schedules and serve the results on /metrics and "
        "/status. With --probes, from manifest files (reloaded when they change); without, "
        "from Probe custom resources, writing ProbeStatus, conditions and Events back.",
    )
    p.add_argument(
        "--probes",
        type=Path,
        metavar="FILE_OR_DIR",
        help="Probe manifests (the same YAML `kubectl apply` takes); omit for Kubernetes mode",
    )
    _max_file_size(p)
    kube = p.add_argument_group("Kubernetes mode (without --probes)")
    kube.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="kubeconfig to use (default: in-cluster service account, else $KUBECONFIG)",
    )
    where = kube.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace", metavar="NS", help="run the Probes of this namespace (default: current)"
    )
    where.add_argument(
        "--all-namespaces", action="store_true", help="run the Probes of every namespace"
    )
    kube.add_argument(
        "--exec-namespaces",
        type=_exec_namespaces,
        default=ExecNamespaces(),
        metavar="NS,...",
        help="namespaces whose Probes may use the exec prober, which runs commands in the "
        "agent's pod, or run container probes (spec.template); '*' for all (default: none; "
        "--probes files are not restricted)",
    )
    kube.add_argument(
        "--report-url",
        type=_report_url,
        metavar="URL",
        help="the agent as container probes' pods reach it, like http://$(POD_IP):8080; "
        "they POST their results to URL/report (without it container probes end UNKNOWN)",
    )
    kube.add_argument(
        "--container-env-configmap",
        metavar="NAME",
        help="a ConfigMap in the agent's namespace whose data every container probe gets as "
        "environment variables",
    )
    kube.add_argument(
        "--keep-jobs",
        type=positive_int,
        default=ContainerSettings.keep_jobs,
        metavar="N",
        help=f"finished Jobs kept per container probe (default {ContainerSettings.keep_jobs})",
    )
    p.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="keep results here so a restart keeps them"
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        default=("0.0.0.0", 8080),
        metavar="HOST:PORT",
        help="HTTP address (default :8080; port 0 = any free port)",
    )
    p.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=SchedulerSettings.max_concurrency,
        metavar="N",
        help="checks running at once (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help="connections held at once on the listen address; more are answered 503 and "
        "closed (default: half the process's descriptor limit)",
    )
    tunnel = p.add_argument_group("aggregator (the agent dials out; nothing dials in)")
    tunnel.add_argument(
        "--aggregator",
        metavar="URL",
        help="aggregator to report to, like wss://kubeprober.example.com",
    )
    tunnel.add_argument(
        "--token-file",
        type=readable_file,
        metavar="FILE",
        help="file holding this cluster's token kp1.<cluster>.<secret>",
    )
    tunnel.add_argument(
        "--aggregator-ca",
        type=ca_bundle,
        metavar="PEM",
        help="CA bundle trusted for the aggregator's TLS certificate",
    )
    tunnel.add_argument(
        "--insecure",
        action="store_true",
        help="allow ws:// to a non-loopback aggregator (token sent in clear)",
    )
    tunnel.add_argument(
        "--accept-remote-exec",
        action="store_true",
        help="run exec probes the aggregator assigns",
    )
    tunnel.add_argument(
        "--accept-api-proxy",
        action="store_true",
        help="Kubernetes mode: let operators reach this cluster's API through the aggregator, "
        "as the ServiceAccount kubeprober-api-proxy, reads only",
    )
    tunnel.add_argument(
        "--api-proxy-write",
        action="store_true",
        help="with --accept-api-proxy: pass writes too (the ServiceAccount's RBAC still decides)",
    )
    p.set_defaults(func=_agent)

    p = sub.add_parser(
        "check",
        help="run every probe in some files once, print a table, exit 0/1/2/3",
        description="Run every probe once and print the results. Exit code follows the "
        "monitoring-plugin convention: 0 PASS/INFO, 1 WARN, 2 ERROR, 3 UNKNOWN (also: a "
        "Probe or file that cannot be loaded).",
    )
    p.add_argument("probes", type=Path, nargs="+", metavar="FILE_OR_DIR", help="Probe manifests")
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or the /status JSON document",
    )
    _max_file_size(p)
    p.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=SchedulerSettings.max_concurrency,
        metavar="N",
        help="checks running at once (default %(default)s)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="run Kubernetes probers against this cluster (without it they are UNKNOWN), and "
        "take checks' targets.fromObjects from it (listed once)",
    )
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "probers",
        help="list every prober (built-in and plugin) with its with: options",
        description="List the registered probers and the options their `with:` block takes.",
    )
    p.add_argument("name", nargs="?", help="show only this prober")
    p.set_defaults(func=_probers)


def _exec_namespaces(text: str) -> ExecNamespaces:
    try:
        return ExecNamespaces.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_file_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-probe-file-size",
        type=byte_size,
        default=MAX_FILE_BYTES,
        metavar="SIZE",
        help="refuse a probe file larger than this, like 512KiB or 4MiB (default 1MiB)",
    )


def _report_url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or "/" in text.split("://", 1)[1].strip("/"):
        raise argparse.ArgumentTypeError(
            f"expected http(s)://HOST:PORT, where pods reach the agent, got {text!r}"
        )
    return text.rstrip("/")


def _agent(args: argparse.Namespace) -> int:
    host, port = args.listen
    kube_flags = (
        args.kubeconfig
        or args.namespace
        or args.all_namespaces
        or args.report_url
        or args.container_env_configmap
    )
    if args.probes and (kube_flags or args.exec_namespaces.names):
        print(
            "kubeprober agent: --kubeconfig, --namespace, --all-namespaces, "
            "--exec-namespaces, --report-url and --container-env-configmap are for "
            "Kubernetes mode; drop them or drop --probes",
            file=sys.stderr,
        )
        return USAGE_EXIT
    if args.state_dir is not None:
        try:  # an unusable state directory fails now, not with an error every second
            args.state_dir.mkdir(parents=True, exist_ok=True)
            (args.state_dir / ".kubeprober-write-test").touch()
            (args.state_dir / ".kubeprober-write-test").unlink()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            print(f"kubeprober agent: --state-dir {args.state_dir}: {reason}", file=sys.stderr)
            return USAGE_EXIT
    api_proxy = ApiProxyMode.OFF
    if args.accept_api_proxy:
        api_proxy = ApiProxyMode.WRITE if args.api_proxy_write else ApiProxyMode.READ
    if args.api_proxy_write and not args.accept_api_proxy:
        print("kubeprober agent: --api-proxy-write needs --accept-api-proxy", file=sys.stderr)
        return USAGE_EXIT
    if args.accept_api_proxy and (args.probes or not args.aggregator):
        print(
            "kubeprober agent: --accept-api-proxy needs Kubernetes mode (no --probes) and "
            "--aggregator",
            file=sys.stderr,
        )
        return USAGE_EXIT
    cluster = "local"
    if args.aggregator:
        if args.token_file is None:
            print("kubeprober agent: --aggregator needs --token-file", file=sys.stderr)
            return USAGE_EXIT
        try:
            cluster = parse_token(args.token_file.read_text()).cluster
        except (OSError, ValueError) as exc:
            print(f"kubeprober agent: --token-file {args.token_file}: {exc}", file=sys.stderr)
            return USAGE_EXIT
        try:
            tunnel_url(args.aggregator, insecure=args.insecure)
        except ValueError as exc:
            print(f"kubeprober agent: --aggregator: {exc}", file=sys.stderr)
            return USAGE_EXIT
        if args.insecure:
            log.warning(
                "--insecure: the tunnel may run without TLS; the token can be read "
                "and the session hijacked by anyone on the path"
            )
    settings = agent.AgentSettings(
        probes=args.probes,
        max_probe_file_bytes=args.max_probe_file_size,
        state_dir=args.state_dir,
        host=host,
        port=port,
        cluster=cluster,
        scheduler=SchedulerSettings(max_concurrency=args.max_concurrency),
        max_connections=args.max_connections,
        aggregator=args.aggregator,
        token_file=args.token_file,
        aggregator_ca=args.aggregator_ca,
        insecure=args.insecure,
        accept_remote_exec=args.accept_remote_exec,
        api_proxy=api_proxy,
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        all_namespaces=args.all_namespaces,
        exec_namespaces=args.exec_namespaces,
        containers=ContainerSettings(
            report_url=args.report_url,
            env_config_map=args.container_env_configmap,
            keep_jobs=args.keep_jobs,
        ),
    )

    def listening(url: str) -> None:
        print(f"kubeprober agent serving {url}/metrics and {url}/status", flush=True)

    try:
        asyncio.run(agent.run_agent(settings, on_listening=listening))
    except (OSError, KubeError) as exc:
        print(f"kubeprober agent: {exc}", file=sys.stderr)
        return USAGE_EXIT
    return 0


def _check(args: argparse.Namespace) -> int:
    missing = [path for path in args.probes if not path.exists()]
    for path in missing:
        print(f"kubeprober check: {path}: no such file or directory", file=sys.stderr)
    if missing:
        return USAGE_EXIT
    try:
        return check.main(
            args.probes,
            concurrency=args.max_concurrency,
            output=args.output,
            max_file_bytes=args.max_probe_file_size,
            kubeconfig=args.kubeconfig,
        )
    except KubeError as exc:
        print(f"kubeprober check: {exc}", file=sys.stderr)
        return USAGE_EXIT


def _probers(args: argparse.Namespace) -> int:
    found = registry.probers()
    names = [args.name] if args.name else sorted(found)
    for name in names:
        prober = found.get(name)
        if prober is None:
            print(f"unknown prober {name!r}; known: {', '.join(sorted(found))}", file=sys.stderr)
            return USAGE_EXIT
        origin = "" if prober.origin == "builtin" else f"  (plugin from {prober.origin})"
        print(f"{name}: {prober.description}{origin}")
        for opt in describe(prober.spec):
            print(f"  {opt.key:<24} {opt.type:<20} default {opt.default:<10} {opt.doc}")
        print()
    return 0
