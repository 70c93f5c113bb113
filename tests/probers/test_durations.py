"""Go-style durations: what parses, what is rejected, how seconds are shown back."""

from __future__ import annotations

import re

import pytest

from kubeprober.probers.durations import PATTERN, format_duration, parse_duration

VALID = [
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1h30m", 5400.0),
    ("1h30m15s", 5415.0),
    ("250ms", 0.25),
    ("1.5h", 5400.0),
    ("1.5s", 1.5),
    ("2m0.5s", 120.5),
    ("0", 0.0),
    ("0s", 0.0),
    ("10us", 1e-5),
    ("10µs", 1e-5),
    ("100ns", 1e-7),
    ("1m1m", 120.0),
    (" 30s ", 30.0),
]
INVALID = ["", "30", "s", "5x", "-5s", "+5s", "1h30", "30 s", "1d", "5S", "1h-30m", "1..5s", "abc"]


@pytest.mark.parametrize(("text", "seconds"), VALID)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("text", INVALID)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rejection_message_shows_the_text() -> None:
    with pytest.raises(ValueError, match=r"'5x'"):
        parse_duration("5x")


# The CRD's OpenAPI pattern must accept exactly what the parser accepts, or kubectl apply and
# --probes disagree about the same file.
@pytest.mark.parametrize("text", [t for t, _ in VALID if t == t.strip()] + [".5s"])
def test_crd_pattern_accepts_what_the_parser_accepts(text: str) -> None:
    parse_duration(text)
    assert re.match(PATTERN, text), f"{text!r} parses but the CRD pattern {PATTERN} rejects it"


@pytest.mark.parametrize("text", [t for t in INVALID if t == t.strip()])
def test_crd_pattern_rejects_what_the_parser_rejects(text: str) -> None:
    assert not re.match(PATTERN, text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (5, "5s"),
        (30, "30s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (3600, "1h"),
        (3661, "1h1m1s"),
        (5400, "1h30m"),
        (86400, "24h"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
