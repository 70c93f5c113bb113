"""No committed file holds a private key or a live-looking token (docs/security.md).

Test fixtures make their keys and tokens at run time (trustme, ``new_token``); the few
literal tokens in tests are visibly made up (``abcdefghijklmnop``) and do not match.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import trustme

from kubeprober.aggregator.auth import new_operator_token
from kubeprober.tunnel.token import new_token

ROOT = Path(__file__).resolve().parent.parent

# Each pattern is written so that this file does not match it.
PATTERNS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # kp1.<cluster>.<secret> whose secret mixes cases and digits, as generated ones do
    "an agent token": re.compile(
        r"kp1\.[a-z0-9-]+\.(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[a-z])"
        r"(?=[A-Za-z0-9_-]*[A-Z])[A-Za-z0-9_-]{32,}"
    ),
    "a service account token (JWT)": re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."),
    "a kubeconfig credential": re.compile(r"(client-key-data|token):\s*[A-Za-z0-9+/=_.-]{40,}"),
}


def leaks(text: str) -> list[str]:
    """Name what ``text`` appears to hold."""
    return [what for what, pattern in PATTERNS.items() if pattern.search(text)]


def test_the_patterns_catch_real_secrets() -> None:
    key = trustme.CA().private_key_pem.bytes().decode()
    assert leaks(key) == ["a private key"]
    assert leaks(f"--from-literal=token={new_token('moon')}") == ["an agent token"]
    assert leaks(f"    token: {new_operator_token()}{new_operator_token()}") == [
        "a kubeconfig credential"
    ]
    assert leaks("kp1.moon.abcdefghijklmnopqrstuvwxyz0123456789") == []


def test_no_committed_file_holds_a_secret() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, (n.decode() for n in listed)):
        path = ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: no PEM or token text to find
        found += [f"{name}: {what}" for what in leaks(text)]
    if found:
        pytest.fail("committed secrets: " + "; ".join(found))
