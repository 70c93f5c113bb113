"""Argument types shared by every subcommand's parser: CLI plumbing, no product logic."""

from __future__ import annotations

import argparse


def listen_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``:PORT`` means all interfaces, ``[::1]:0`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT like 127.0.0.1:8080, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
