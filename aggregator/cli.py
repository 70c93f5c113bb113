"""The aggregator's own subcommands: ``aggregator``, ``token`` and ``cluster add``.

Argument parsing and printing only; the work is in :mod:`aggregator.process` and friends.
The client commands (``status``, ``run``) and the demo are the CLI package's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from kubeprober.aggregator.auth import OperatorTokens, new_operator_token, token_hash
from kubeprober.aggregator.board.links import BoardLinks
from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.process import run_aggregator, tune_gc
from kubeprober.aggregator.puller import PullSettings
from kubeprober.aggregator.registry import load_file
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.aggregator.tokens import InvalidToken, hashed_token, new_token
from kubeprober.args import (
    USAGE_EXIT,
    Parser,
    base_url,
    listen_address,
    os_problem,
    positive_float,
    positive_int,
    readable_file,
    tunnel_url,
)


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the central subcommands to the umbrella CLI."""
    p = sub.add_parser(
        "aggregator",
        help="run the central service: tunnel endpoint, unified /status, board, /metrics",
        description="Accept agents' tunnels, assign probes to clusters, pull every agent and "
        "serve one /status, an HTML board at / and a federated /metrics.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--clusters",
        type=readable_file,
        metavar="FILE",
        help="Cluster, Secret and Probe manifests (see `kubeprober cluster add`)",
    )
    source.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="read Cluster, Secret and Probe objects through this kubeconfig and write "
        "Cluster status (in a pod, neither flag means its service account)",
    )
    p.add_argument(
        "--namespace",
        metavar="NS",
        help="namespace of the Cluster objects (default: the context's or the pod's)",
    )
    p.add_argument(
        "--advertise",
        metavar="URL",
        default="",
        help="Kubernetes mode: the URL other replicas reach this one's API at (default: the "
        "listen address, with the host's own address for 0.0.0.0, e.g. the pod's IP)",
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        default=("0.0.0.0", 8088),
        metavar="HOST:PORT",
        help="address (default :8088; port 0 = any free port)",
    )
    p.add_argument(
        "--tls-cert", type=readable_file, metavar="PEM", help="serve HTTPS with this chain"
    )
    p.add_argument("--tls-key", type=readable_file, metavar="PEM", help="key of --tls-cert")
    p.add_argument(
        "--read-token-file",
        type=readable_file,
        metavar="FILE",
        help="require this bearer token (or an operator token) on /status and /metrics",
    )
    p.add_argument(
        "--operator-tokens",
        type=readable_file,
        metavar="FILE",
        help="'NAME: SHA256' lines of the tokens that may run probes (`kubeprober token`); "
        "without it the run API is off",
    )
    p.add_argument(
        "--full-pull-interval",
        type=positive_float,
        default=PullSettings.full_interval,
        metavar="SECONDS",
        help="safety-net pull of a cluster whose agent announces its changes (it is pulled on "
        f"each notice); one that announces none is pulled every {PullSettings.interval:g} s "
        "(default %(default)g)",
    )
    links = p.add_argument_group("links from the board's checks (aggregator/board/links.py)")
    links.add_argument(
        "--grafana-url",
        type=base_url,
        metavar="URL",
        help="the Grafana holding dashboards/: each check links to its panel",
    )
    links.add_argument(
        "--runbook-url",
        type=base_url,
        metavar="URL",
        help="where docs/runbooks.md is read: each problem links to its alert's section",
    )
    limits = p.add_argument_group("limits (docs/security.md)")
    limits.add_argument(
        "--max-answer-mib",
        type=positive_int,
        default=AggregatorSettings.max_answer // 2**20,
        metavar="MIB",
        help="largest agent answer read, in MiB; a bigger one fails the pull (default %(default)s)",
    )
    limits.add_argument(
        "--max-concurrent-pulls",
        type=positive_int,
        default=PullSettings.concurrency,
        metavar="N",
        help="agents pulled at once (default %(default)s)",
    )
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help="connections held at once, agents' tunnels included; more are answered 503 "
        "and closed (default: half the process's descriptor limit)",
    )
    limits.add_argument(
        "--max-history-requests",
        type=positive_int,
        default=AggregatorSettings.max_history_requests,
        metavar="N",
        help="histories (/status?history=1) asked of agents at once; more are answered 503 "
        "(default %(default)s)",
    )
    limits.add_argument(
        "--max-series-per-cluster",
        type=positive_int,
        default=AggregatorSettings.max_series_per_cluster,
        metavar="N",
        help="series one cluster may add to /metrics; the rest is counted in "
        "kubeprober_federation_dropped_series_total (default %(default)s)",
    )
    p.set_defaults(func=_aggregator)

    p = sub.add_parser(
        "token",
        help="make an operator token: print it, add its hash to --operator-tokens FILE",
        description="Make an operator token for the run API. The token goes to standard "
        "output, once; the aggregator keeps only 'NAME: SHA256' lines. Without "
        "--operator-tokens, the line to add is printed on standard error.",
    )
    p.add_argument("name", help="who holds the token, as logs will name them (like alice)")
    p.add_argument(
        "--operator-tokens", type=Path, metavar="FILE", help="append the hash line to this file"
    )
    p.set_defaults(func=_token)

    p = sub.add_parser("cluster", help="manage clusters (add)")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    p = csub.add_parser(
        "add",
        help="define a cluster and its agent token; print what to apply on the cluster",
        description="Append a Cluster and its token Secret to the clusters file (or create "
        "them through the Kubernetes API), then print the token and the commands to run on "
        "the managed cluster.",
    )
    p.add_argument("name", help="cluster name (a DNS label)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--clusters", type=Path, metavar="FILE", help="append to this file")
    where.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="create the Cluster and its Secret through this kubeconfig (your credentials)",
    )
    p.add_argument("--namespace", metavar="NS", help="with --kubeconfig (default: the context's)")
    p.add_argument("--display-name", default="")
    p.add_argument(
        "--aggregator-url",
        type=tunnel_url,
        default="wss://kubeprober.example.com",
        help="URL agents dial, for the printed instructions",
    )
    p.set_defaults(func=_cluster_add)


def _aggregator(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        print("kubeprober aggregator: --tls-cert and --tls-key go together", file=sys.stderr)
        return USAGE_EXIT
    kube = None
    if args.clusters is None:
        if args.kubeconfig is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            print(
                "kubeprober aggregator: give --clusters FILE or --kubeconfig PATH "
                "(or run in a pod, which uses its service account)",
                file=sys.stderr,
            )
            return USAGE_EXIT
        kube = KubeModeSettings(
            kubeconfig=args.kubeconfig, namespace=args.namespace, advertise=args.advertise
        )
    elif args.namespace or args.advertise:
        flag = "--namespace" if args.namespace else "--advertise"
        print(f"kubeprober aggregator: {flag} goes with Kubernetes mode", file=sys.stderr)
        return USAGE_EXIT
    host, port = args.listen
    settings = AggregatorSettings(
        clusters_file=args.clusters,
        kube=kube,
        host=host,
        port=port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        read_token_file=args.read_token_file,
        operator_tokens_file=args.operator_tokens,
        pull=PullSettings(
            full_interval=args.full_pull_interval, concurrency=args.max_concurrent_pulls
        ),
        max_answer=args.max_answer_mib * 2**20,
        max_series_per_cluster=args.max_series_per_cluster,
        max_history_requests=args.max_history_requests,
        max_connections=args.max_connections,
        board_links=BoardLinks(grafana_url=args.grafana_url, runbook_url=args.runbook_url),
    )

    def listening(url: str) -> None:
        print(
            f"kubeprober aggregator serving {url}/ (board), {url}/status, {url}/metrics; "
            f"agents dial {url.replace('http', 'ws', 1)}/api/v1/tunnel",
            flush=True,
        )

    tune_gc()
    try:
        asyncio.run(run_aggregator(settings, on_listening=listening))
    except (OSError, ValueError) as exc:
        problem = os_problem(exc) if isinstance(exc, OSError) else str(exc)
        print(f"kubeprober aggregator: {problem}", file=sys.stderr)
        return USAGE_EXIT
    return 0


def _fail(message: str) -> int:
    print(f"kubeprober: {message}", file=sys.stderr)
    return USAGE_EXIT


def _token(args: argparse.Namespace) -> int:
    token = new_operator_token()
    line = f"{args.name}: {token_hash(token)}\n"
    try:
        OperatorTokens.parse(line, source="NAME")  # the name must be one the file accepts
    except ValueError:
        return _fail(f"operator name {args.name!r}: use letters, digits, '-', '_', '.', '@'")
    path: Path | None = args.operator_tokens
    if path is None:
        print(
            f"add this line to the aggregator's --operator-tokens file:\n{line}",
            end="",
            file=sys.stderr,
        )
    else:
        try:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            if text.strip():
                known = OperatorTokens.parse(text, source=str(path)).names.values()
                if args.name in known:
                    return _fail(f"{path}: {args.name} already has a token")
            with path.open("a", encoding="utf-8") as f:
                f.write(("" if not text or text.endswith("\n") else "\n") + line)
        except OSError as exc:
            return _fail(f"--operator-tokens {os_problem(exc)}")
        except ValueError as exc:
            return _fail(str(exc))
        print(
            f"added {args.name} to {path}; the aggregator picks it up within seconds",
            file=sys.stderr,
        )
    print(token)
    return 0


def _cluster_add(args: argparse.Namespace) -> int:
    if args.kubeconfig is not None:
        return _cluster_add_kube(args)
    if args.namespace:
        return _fail("--namespace goes with --kubeconfig")
    path: Path = args.clusters
    try:
        token = new_token(args.name)  # validates the name as a DNS label
    except InvalidToken:
        return _fail(f"cluster name {args.name!r} is not a DNS label (like moon or eu-west-1)")
    if path.exists():
        try:
            fleet = load_file(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return _fail(f"--clusters {path}: {exc}")
        if fleet.errors:  # appending to a file that is not a clusters file could ruin it
            return _fail(f"--clusters {path}: fix it first: {fleet.errors[0]}")
        if args.name in fleet.clusters:
            return _fail(f"cluster {args.name} is already in {path}")
    elif not path.parent.is_dir():
        return _fail(f"--clusters {path}: directory {path.parent} does not exist")
    secret = f"kubeprober-token-{args.name}"
    docs = (
        f"---\napiVersion: kubeprober.io/v1\nkind: Cluster\nmetadata:\n  name: {args.name}\n"
        f"spec:\n  displayName: {json.dumps(args.display_name or args.name)}\n"
        f"  tokenSecretRef:\n    name: {secret}\n"
        f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n"
        f"stringData:\n  tokenHash: {hashed_token(str(token))}\n"
    )
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(docs)
    except OSError as exc:
        return _fail(f"--clusters {path}: {exc.strerror or exc}")
    print(f"Added cluster {args.name} to {path} (the aggregator picks it up within seconds).")
    print('Assign probes with the label probe/<probe-name>: "true" on its Cluster.\n')
    _print_instructions(args, str(token))
    return 0


def _cluster_add_kube(args: argparse.Namespace) -> int:
    from kubeprober.aggregator.kube.add import add_cluster  # the client's import costs a second
    from kubeprober.kube.api import KubeApi
    from kubeprober.kube.errors import KubeError

    async def add() -> tuple[str, str]:
        api = KubeApi.load(args.kubeconfig, namespace=args.namespace)
        try:
            return await add_cluster(api, args.name, display_name=args.display_name), api.namespace
        finally:
            await api.close()

    try:
        token, namespace = asyncio.run(add())
    except InvalidToken:
        return _fail(f"cluster name {args.name!r} is not a DNS label (like moon or eu-west-1)")
    except KubeError as exc:
        return _fail(str(exc))
    print(
        f"Created Cluster {args.name} and its token Secret in namespace {namespace} "
        "(the aggregator picks it up within seconds)."
    )
    print(f"Assign probes: kubectl -n {namespace} label cluster {args.name} probe/<probe>=true\n")
    _print_instructions(args, str(token))
    return 0


AGENT_NAMESPACE = "kubeprober"
"""Where manifests/managed/ installs the agent; the printed commands create its settings there."""
AGENT_TOKEN_SECRET = "kubeprober-agent-token"
"""The Secret (key ``token``) the agent's Deployment mounts."""
AGENT_CONFIGMAP = "kubeprober-agent"
"""The ConfigMap (key ``aggregator-url``) the agent's Deployment reads."""


def install_commands(token: str, aggregator_url: str) -> list[str]:
    """The commands that install the agent on a managed cluster, from a kubeprober checkout."""
    ns = AGENT_NAMESPACE
    return [
        "kubectl apply -k manifests/crds",
        "kubectl apply -k manifests/managed",
        f"kubectl -n {ns} create secret generic {AGENT_TOKEN_SECRET} --from-literal=token={token}",
        f"kubectl -n {ns} create configmap {AGENT_CONFIGMAP} "
        f"--from-literal=aggregator-url={aggregator_url}",
    ]


def _print_instructions(args: argparse.Namespace, token: str) -> None:
    """Print what to apply on the managed cluster; the same in both modes."""
    print(
        "Install the agent: with kubectl pointed at the managed cluster, in a checkout of "
        "kubeprober at the aggregator's version, run:\n"
    )
    for command in install_commands(token, args.aggregator_url):
        print(f"  {command}")
    print(f"\nor run the agent directly:\n\n  echo {token} > agent-token")
    print(
        f"  kubeprober agent --probes probes/ --aggregator {args.aggregator_url} "
        "--token-file agent-token\n"
    )
    print(
        "The token is shown only now: its Secret holds only the token's hash (tokenHash), "
        "which is all the aggregator reads."
    )
