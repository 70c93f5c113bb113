"""The ``kubeprober`` command: wires each package's subcommands, holds no logic itself."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kubeprober import __version__, client_commands, demo
from kubeprober.aggregator import cli as aggregator_cli
from kubeprober.args import USAGE_EXIT, Parser
from kubeprober.exporter import cli as exporter_cli

INTERRUPTED_EXIT = 130
"""What a shell reports for a command ended by Ctrl-C (128 + SIGINT)."""


def build_parser() -> argparse.ArgumentParser:
    """Build the umbrella parser with every subcommand."""
    parser = Parser(
        prog="kubeprober",
        description="Prove Kubernetes clusters work: run probes, report what broke, layer by "
        "layer (application, middleware, kubernetes, infrastructure).",
    )
    parser.add_argument("--version", action="version", version=f"kubeprober {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    exporter_cli.register(sub)
    aggregator_cli.register(sub)
    client_commands.register(sub)
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, set up logging and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C where no service handles it (check, status, run)
        print(file=sys.stderr)
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        # The reader left early (`| head`): say nothing more, and let the interpreter's
        # final flush of stdout go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return USAGE_EXIT
    return code


if __name__ == "__main__":
    sys.exit(main())
