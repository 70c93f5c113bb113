"""Bearer tokens of the aggregator's API: header parsing, operator token files, exposure."""

from __future__ import annotations

import subprocess

import pytest

from kubeprober.aggregator.auth import (
    OperatorTokens,
    bearer,
    new_operator_token,
    open_reads_warning,
    token_hash,
)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),  # RFC 9110: the scheme is case-insensitive
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_operator_tokens_name_who_holds_a_token() -> None:
    alice, bob = new_operator_token(), new_operator_token()
    text = f"# who may run probes\nalice: {token_hash(alice)}\n\nbob: {token_hash(bob)}  # ops\n"
    tokens = OperatorTokens.parse(text, source="ops.tokens")
    assert tokens.who(alice) == "alice"
    assert tokens.who(bob) == "bob"
    assert tokens.who(alice + "x") is None
    assert alice not in repr(tokens) and bob not in repr(tokens)


def test_token_hash_is_what_sha256sum_prints() -> None:
    token = new_operator_token()
    out = subprocess.run(
        ["sha256sum"], input=token, capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[0] == token_hash(token)


@pytest.mark.parametrize(
    ("host", "read_token", "warns"),
    [
        ("0.0.0.0", None, True),
        ("", None, True),
        ("::", None, True),
        ("10.1.2.3", None, True),
        ("probe.example.com", None, True),
        ("0.0.0.0", "s3cret", False),
        ("127.0.0.1", None, False),
        ("127.0.0.2", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_open_reads_warning(host: str, read_token: str | None, warns: bool) -> None:
    warning = open_reads_warning(host, read_token=read_token)
    assert (warning is not None) == warns
    if warning is not None:
        assert warning.startswith("NO TOKEN PROTECTS READS") and "--read-token-file" in warning
