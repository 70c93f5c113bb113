"""Typed ``with:`` options: conversion of every supported type and errors naming path and value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pytest

from kubeprober.probers.options import (
    Duration,
    OptionDoc,
    SpecError,
    camel,
    describe,
    option,
    parse_options,
    shown,
)

PATH = "spec.checks[2].with"


@dataclass(frozen=True)
class Step:
    """A nested option block, as in the http prober's ``steps:``."""

    url: str = option("where to go")
    method: Literal["GET", "POST"] = option("HTTP method", default="GET")

    def __post_init__(self) -> None:
        if not self.url.startswith("http"):
            raise SpecError("url", f"expected an http URL, got {shown(self.url)}")


@dataclass(frozen=True)
class Tls:
    """A nested single block."""

    verify: bool = option("verify the certificate", default=True)
    ca_file: str | None = option("CA file", default=None)


@dataclass(frozen=True)
class Opts:
    """One field of every supported option type."""

    host: str = option("target host")
    port: int = option("TCP port", minimum=1, maximum=65535)
    retries: int = option("retries", default=0, minimum=0)
    ratio: float = option("a ratio", default=0.5, minimum=0, maximum=1)
    verbose: bool = option("say more", default=False)
    timeout: Duration = option("how long", default=Duration(30), minimum=1)
    mode: Literal["fast", "slow"] = option("speed", default="fast")
    note: str | None = option("optional text", default=None)
    codes: tuple[int, ...] = option("expected codes", default=(200,))
    names: list[str] = option("names", default_factory=list)
    headers: dict[str, str] = option("headers", default_factory=dict)
    tls: Tls = option("TLS settings", default=Tls())
    steps: tuple[Step, ...] = option("steps", default=())
    warn_days: int = option("days", default=14, maximum=365)
    raw: Any = option("anything", default=None, key="rawValue")


@dataclass(frozen=True)
class Pair:
    """A cross-field check raising a plain ValueError."""

    low: int = option("low")
    high: int = option("high")

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


def parse(data: object) -> Opts:
    """Parse ``data`` as Opts under the usual check path."""
    return parse_options(Opts, data, PATH)


def test_minimal_gives_defaults() -> None:
    opts = parse({"host": "db", "port": 5432})
    assert opts == Opts(host="db", port=5432)
    assert opts.timeout == 30.0
    assert opts.tls == Tls()


def test_every_type_converts() -> None:
    opts = parse(
        {
            "host": "db",
            "port": 1,
            "retries": 3,
            "ratio": 1,
            "verbose": True,
            "timeout": "1m30s",
            "mode": "slow",
            "note": "hi",
            "codes": [200, 204],
            "names": ["a", "b"],
            "headers": {"X-A": "1"},
            "tls": {"verify": False, "caFile": "/ca.pem"},
            "steps": [{"url": "http://a"}, {"url": "https://b", "method": "POST"}],
            "warnDays": 30,
            "rawValue": {"free": ["form"]},
        }
    )
    assert opts.port == 1
    assert opts.retries == 3
    assert opts.ratio == 1
    assert opts.verbose is True
    assert isinstance(opts.timeout, Duration)
    assert opts.timeout == 90.0
    assert opts.mode == "slow"
    assert opts.note == "hi"
    assert tuple(opts.codes) == (200, 204)
    assert tuple(opts.names) == ("a", "b")
    assert opts.headers == {"X-A": "1"}
    assert opts.tls == Tls(verify=False, ca_file="/ca.pem")
    assert opts.steps == (Step("http://a"), Step("https://b", "POST"))
    assert opts.warn_days == 30
    assert opts.raw == {"free": ["form"]}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("1h", 3600.0), (5, 5.0), (2.5, 2.5), ("250ms", None)],
)
def test_duration_forms(value: object, seconds: float | None) -> None:
    if seconds is None:  # below the minimum of 1s
        with pytest.raises(SpecError):
            parse({"host": "h", "port": 1, "timeout": value})
        return
    assert parse({"host": "h", "port": 1, "timeout": value}).timeout == seconds


def test_none_or_missing_block_is_empty() -> None:
    assert parse_options(Tls, None, PATH) == Tls()
    assert parse_options(Tls, {}, PATH) == Tls()


def test_optional_accepts_null() -> None:
    assert parse({"host": "h", "port": 1, "note": None}).note is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"host": "h", "port": "http"}, f'{PATH}.port: expected integer 1-65535, got "http"'),
        ({"host": "h", "port": 0}, f"{PATH}.port: expected integer 1-65535, got 0"),
        ({"host": "h", "port": 65536}, f"{PATH}.port: expected integer 1-65535, got 65536"),
        ({"host": "h", "port": 80.5}, f"{PATH}.port: expected integer 1-65535, got 80.5"),
        ({"host": "h", "port": True}, f"{PATH}.port: expected integer 1-65535, got true"),
        ({"host": "h", "port": None}, f"{PATH}.port: expected integer 1-65535, got null"),
        ({"host": "h", "port": 1, "retries": -1}, f"{PATH}.retries: expected integer >= 0, got -1"),
        (
            {"host": "h", "port": 1, "warnDays": 400},
            f"{PATH}.warnDays: expected integer <= 365, got 400",
        ),
        ({"host": "h", "port": 1, "ratio": 2}, f"{PATH}.ratio: expected number 0-1, got 2"),
        ({"host": "h", "port": 1, "ratio": "x"}, f'{PATH}.ratio: expected number 0-1, got "x"'),
        ({"host": 5, "port": 1}, f"{PATH}.host: expected a string, got 5"),
        ({"host": None, "port": 1}, f"{PATH}.host: expected a string, got null"),
        ({"port": 1}, f"{PATH}.host: required"),
        ({"host": "h"}, f"{PATH}.port: required"),
        (
            {"host": "h", "port": 1, "verbose": "yes"},
            f'{PATH}.verbose: expected true or false, got "yes"',
        ),
        (
            {"host": "h", "port": 1, "timeout": "soon"},
            f'{PATH}.timeout: expected a duration like 30s or 1m30s of at least 1s, got "soon"',
        ),
        (
            {"host": "h", "port": 1, "timeout": -5},
            f"{PATH}.timeout: expected a duration like 30s or 1m30s of at least 1s, got -5",
        ),
        (
            {"host": "h", "port": 1, "timeout": True},
            f"{PATH}.timeout: expected a duration like 30s or 1m30s of at least 1s, got true",
        ),
        (
            {"host": "h", "port": 1, "mode": "medium"},
            f'{PATH}.mode: expected one of fast, slow, got "medium"',
        ),
        ({"host": "h", "port": 1, "codes": 200}, f"{PATH}.codes: expected a list, got 200"),
        (
            {"host": "h", "port": 1, "codes": [200, "ok"]},
            f'{PATH}.codes[1]: expected integer, got "ok"',
        ),
        ({"host": "h", "port": 1, "names": "a"}, f'{PATH}.names: expected a list, got "a"'),
        (
            {"host": "h", "port": 1, "headers": ["a"]},
            f'{PATH}.headers: expected a map, got ["a"]',
        ),
        (
            {"host": "h", "port": 1, "headers": {"X-A": 1}},
            f"{PATH}.headers.X-A: expected a string, got 1",
        ),
        (
            {"host": "h", "port": 1, "tls": {"verify": "no"}},
            f'{PATH}.tls.verify: expected true or false, got "no"',
        ),
        ({"host": "h", "port": 1, "tls": True}, f"{PATH}.tls: expected a map, got true"),
        (
            {"host": "h", "port": 1, "tls": {"cafile": "x"}},
            f"{PATH}.tls.cafile: unknown option (known: verify, caFile)",
        ),
        ({"host": "h", "port": 1, "steps": [{}]}, f"{PATH}.steps[0].url: required"),
        (
            {"host": "h", "port": 1, "steps": [{"url": "http://a"}, {"url": "ftp://b"}]},
            f'{PATH}.steps[1].url: expected an http URL, got "ftp://b"',
        ),
        (
            {"host": "h", "port": 1, "steps": [{"url": "http://a", "method": "PUT"}]},
            f'{PATH}.steps[0].method: expected one of GET, POST, got "PUT"',
        ),
        (["host"], f'{PATH}: expected a map, got ["host"]'),
        ("host: h", f'{PATH}: expected a map, got "host: h"'),
    ],
)
def test_rejects(data: object, error: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(data)
    assert str(info.value) == error


def test_error_carries_path_and_message() -> None:
    with pytest.raises(SpecError) as info:
        parse({"host": "h", "port": "http"})
    assert info.value.path == f"{PATH}.port"
    assert info.value.message == 'expected integer 1-65535, got "http"'
    assert isinstance(info.value, ValueError)


def test_unknown_key_names_it_and_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        parse({"host": "h", "port": 1, "warn_days": 3})
    assert info.value.path == f"{PATH}.warn_days"
    assert info.value.message.startswith("unknown option (known: host, port, retries, ")
    assert "warnDays" in info.value.message
    assert "rawValue" in info.value.message


def test_field_key_override_replaces_the_camel_case_key() -> None:
    with pytest.raises(SpecError, match=r"\.raw: unknown option"):
        parse({"host": "h", "port": 1, "raw": 1})


def test_plain_value_error_from_post_init_names_the_block() -> None:
    with pytest.raises(SpecError) as info:
        parse_options(Pair, {"low": 3, "high": 1}, PATH)
    assert str(info.value) == f"{PATH}: low must not exceed high"


def test_empty_path_has_no_leading_dot() -> None:
    with pytest.raises(SpecError) as info:
        parse_options(Tls, {"verify": 1}, "")
    assert str(info.value) == "verify: expected true or false, got 1"


def test_long_values_are_shortened() -> None:
    with pytest.raises(SpecError) as info:
        parse({"host": "h", "port": "x" * 500})
    got = info.value.message.removeprefix("expected integer 1-65535, got ")
    assert got == '"' + "x" * 76 + "..."


@pytest.mark.parametrize(
    ("name", "key"),
    [("port", "port"), ("warn_days", "warnDays"), ("ca_file", "caFile"), ("a_b_c", "aBC")],
)
def test_camel(name: str, key: str) -> None:
    assert camel(name) == key


def test_describe_lists_every_option_flattened() -> None:
    docs = {d.key: d for d in describe(Opts)}
    assert list(docs) == [
        "host",
        "port",
        "retries",
        "ratio",
        "verbose",
        "timeout",
        "mode",
        "note",
        "codes",
        "names",
        "headers",
        "tls",
        "tls.verify",
        "tls.caFile",
        "steps",
        "steps[].url",
        "steps[].method",
        "warnDays",
        "rawValue",
    ]
    assert docs["host"] == OptionDoc("host", "string", "required", "target host")
    assert docs["port"] == OptionDoc("port", "integer", "required", "TCP port")
    expected_types = {
        "retries": "integer",
        "ratio": "number",
        "verbose": "boolean",
        "timeout": "duration",
        "mode": "fast|slow",
        "note": "string",
        "codes": "list of integer",
        "names": "list of string",
        "headers": "map of string",
        "tls": "object",
        "tls.caFile": "string",
        "steps": "list of object",
        "steps[].method": "GET|POST",
        "rawValue": "any",
    }
    assert {k: docs[k].type for k in expected_types} == expected_types
    assert docs["verbose"].default == "false"
    assert docs["mode"].default == '"fast"'
    assert docs["note"].default == "-"
    assert docs["codes"].default == "[200]"
    assert docs["names"].default == "[]"
    assert docs["headers"].default == "{}"
    assert docs["steps[].url"].default == "required"
    assert docs["tls.verify"].doc == "verify the certificate"
    assert all(d.doc for d in docs.values())
