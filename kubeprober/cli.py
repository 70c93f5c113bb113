"""The ``kubeprober`` command: wires each package's subcommands, holds no logic itself."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kubeprober import __version__, client_commands
from kubeprober.args import USAGE_EXIT, Parser

INTERRUPTED_EXIT = 130
"""What a shell reports for a command ended by Ctrl-C (128 + SIGINT)."""


def build_parser(*, clients_only: bool = False) -> argparse.ArgumentParser:
    """Build the umbrella parser with every subcommand (or only the client commands).

    The services' modules import the Kubernetes client and more, a second of CPU; a client
    command (``kubeprober report`` in a probe's pod, once per check) must not pay for them.
    """
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
    if not clients_only:
        from kubeprober import demo
        from kubeprober.aggregator import cli as aggregator_cli
        from kubeprober.exporter import cli as exporter_cli

        exporter_cli.register(sub)
        aggregator_cli.register(sub)
    client_commands.register(sub)
    if not clients_only:
        demo.register(sub)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (after the umbrella's own options), if any."""
    rest = iter(argv)
    for arg in rest:
        if arg == "--log-level":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, set up logging and run the chosen subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    clients_only = _command(argv) in client_commands.COMMANDS
    try:
        # Building the parser imports the services' modules, a second in which Ctrl-C is
        # likely: it ends the command as quietly as Ctrl-C during the command does.
        args = build_parser(clients_only=clients_only).parse_args(argv)
        logging.basicConfig(
            level=args.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
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
