"""Argument types shared by every subcommand's parser: CLI plumbing, no product logic."""

from __future__ import annotations

import argparse


def listen_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``:PORT`` means all interfaces, ``[::1]:0`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT like 127.0.0.1:8080, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


_UNITS = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def byte_size(text: str) -> int:
    """Parse a positive size in bytes: ``1048576``, ``512KiB``, ``4MiB`` or ``1GiB``."""
    number = text.rstrip("KMGiB")
    unit = _UNITS.get(text[len(number) :])
    if unit is None or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"expected a size like 1048576, 512KiB or 4MiB, got {text!r}"
        )
    return int(number) * unit
