"""Argument types shared by every subcommand's parser: CLI plumbing, no product logic."""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

USAGE_EXIT = 3
"""Exit code of a command that could not run as asked (bad arguments, unreadable files).

The same as UNKNOWN's in the monitoring-plugin convention — the command could not tell —
so that it never reads as ERROR (2), which argparse would otherwise use."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with :data:`USAGE_EXIT`; subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` on stderr and exit with :data:`USAGE_EXIT`."""
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}\n")


def readable_file(text: str) -> Path:
    """Parse the path of a file this process can read (a token, a certificate, a key)."""
    path = Path(text)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {(exc.strerror or str(exc)).lower()}") from None
    return path


def ca_bundle(text: str) -> Path:
    """Parse the path of a PEM file of CA certificates, loading it to be sure it is one."""
    path = readable_file(text)
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise argparse.ArgumentTypeError(f"{text}: no PEM certificate in it") from None
    return path


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


def positive_int(text: str) -> int:
    """Parse an integer of at least 1 (ASCII digits only: ``int`` takes others too)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """Parse a number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def os_problem(exc: OSError) -> str:
    """One line for an OSError: its file and the reason in lower case, no ``[Errno N]``."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror.lower()}"


def tunnel_url(text: str) -> str:
    """Parse the URL agents dial: ``wss://host[:port]`` (``ws://`` and ``http(s)://`` too)."""
    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("ws", "wss", "http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a URL like wss://HOST[:PORT], got {text!r}")
    return text


def base_url(text: str) -> str:
    """Parse an ``http(s)://host[/path]`` URL that links are built on: no query, no fragment."""
    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or "?" in text or "#" in text:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL with no query or fragment, got {text!r}"
        )
    return text
