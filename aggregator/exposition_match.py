"""Parse and evaluate ``match[]`` series selectors, as Prometheus' ``/federate`` takes them.

Supported: ``name``, ``name{…}`` and ``{…}`` with matchers ``=``, ``!=``, ``=~``, ``!~`` on any
label, ``__name__`` included; values in double or single quotes (Go escapes) or backticks (raw);
regexes fully anchored, as in PromQL. Several selectors are a union. As in Prometheus, every
selector needs one matcher that does not match the empty string (``{}`` and ``{a=~".*"}`` are
refused), and a label that a series lacks has the value ``""``.

Not supported, and refused with a ValueError whose text suits a 400 answer: anything beyond a
series selector (functions, operators, ``or``, range ``[5m]``, ``offset``, ``@``), quoted metric
names (``{"name"}``), and regex syntax Python's ``re`` does not share with RE2 (``\\p{L}``
classes, for one). It must not touch exposition bytes: the federation decides per family,
per cluster, and per line only when a matcher needs a label other than the name or cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from kubeprober.aggregator.exposition import CLUSTER_LABEL, escape_label_value

OPS = ("=~", "!~", "!=", "=")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_BLANK = re.compile(r"\s*")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
UNSUPPORTED = 'only series selectors like name{label="value"} are supported'


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``label op "value"``."""

    label: str
    op: str
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, value: str) -> bool:
        """Return whether a series whose label has ``value`` (``""`` if absent) matches."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    """A series selector: all its matchers must match."""

    text: str
    names: tuple[Matcher, ...]
    """Matchers on ``__name__``: decided per family (and per sample name)."""
    clusters: tuple[Matcher, ...]
    """Matchers on ``cluster``: decided per cluster cache, without reading lines."""
    labels: tuple[Matcher, ...]
    """Matchers on other labels: these need each line's labels."""
    needles: tuple[bytes, ...] = ()
    """Quoted, escaped values that a matching line must contain (from ``=`` matchers): a
    cheap substring test before a line's labels are read."""

    def match_name(self, name: str) -> bool:
        """Return whether a sample of this name can match."""
        return all(m.matches(name) for m in self.names)

    def match_cluster(self, cluster: str) -> bool:
        """Return whether series labelled with this cluster can match."""
        return all(m.matches(cluster) for m in self.clusters)

    def match_labels(self, labels: Mapping[str, str], *, with_cluster: bool) -> bool:
        """Return whether a series with these labels matches the label (and cluster) matchers."""
        if with_cluster and not all(m.matches(labels.get(m.label, "")) for m in self.clusters):
            return False
        return all(m.matches(labels.get(m.label, "")) for m in self.labels)


def parse_selectors(texts: Iterable[str]) -> tuple[Selector, ...]:
    """Parse every ``match[]`` value; raise ValueError naming the bad one."""
    return tuple(parse_selector(t) for t in texts)


def parse_selector(text: str) -> Selector:
    """Parse one series selector; raise ValueError saying what is wrong and where."""
    p = _Scanner(text)
    matchers: list[Matcher] = []
    name = p.take(_METRIC_NAME)
    if name is not None:
        matchers.append(Matcher("__name__", "=", name))
    if p.peek("{"):
        p.pos += 1
        matchers.extend(_matchers(p))
    if p.pos != len(text):
        p.fail(f"unexpected {text[p.pos]!r}")
    if not matchers:
        p.fail("empty selector")
    if sum(m.label == "__name__" for m in matchers) > 1 and name is not None:
        p.fail("metric name given twice")
    if all(m.matches("") for m in matchers):
        p.fail("needs at least one matcher that does not match the empty string")
    return Selector(
        text=text,
        names=tuple(m for m in matchers if m.label == "__name__"),
        clusters=tuple(m for m in matchers if m.label == CLUSTER_LABEL),
        labels=tuple(m for m in matchers if m.label not in ("__name__", CLUSTER_LABEL)),
        needles=tuple(
            f'"{escape_label_value(m.value)}"'.encode()
            for m in matchers
            if m.op == "=" and m.value and m.label not in ("__name__", CLUSTER_LABEL)
        ),
    )


class _Scanner:
    """A cursor over the selector text that skips blanks between tokens."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.blank()

    def blank(self) -> None:
        """Skip blanks."""
        m = _BLANK.match(self.text, self.pos)
        self.pos = m.end() if m else self.pos

    def take(self, pattern: re.Pattern[str]) -> str | None:
        """Consume and return a token of ``pattern`` at the cursor, or None."""
        m = pattern.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        self.blank()
        return m.group()

    def peek(self, token: str) -> bool:
        """Return whether ``token`` is at the cursor."""
        return self.text.startswith(token, self.pos)

    def eat(self, token: str) -> bool:
        """Consume ``token`` if it is at the cursor."""
        if not self.peek(token):
            return False
        self.pos += len(token)
        self.blank()
        return True

    def fail(self, reason: str) -> NoReturn:
        """Raise the ValueError a client sees."""
        raise ValueError(
            f"invalid match[] selector {self.text!r} at position {self.pos}: {reason} "
            f"({UNSUPPORTED}; functions, ranges, offset and @ are not)"
        )


def _matchers(p: _Scanner) -> list[Matcher]:
    p.blank()
    found: list[Matcher] = []
    while not p.eat("}"):
        if p.pos >= len(p.text):
            p.fail("missing '}'")
        if p.peek('"') or p.peek("'"):
            p.fail("quoted metric names are not supported")
        label = p.take(_LABEL_NAME)
        if label is None:
            p.fail("expected a label name")
        op = next((o for o in OPS if p.eat(o)), None)
        if op is None:
            p.fail(f"expected one of {', '.join(OPS)} after {label}")
        value = _string(p)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                p.fail(f"invalid regex {value!r}: {exc}")
        found.append(Matcher(label, op, value, regex))
        if not p.eat(",") and not p.peek("}"):
            p.fail("expected ',' or '}'")
    return found


def _string(p: _Scanner) -> str:
    """Read a PromQL string literal: "…" or '…' with Go escapes, or `…` raw."""
    text = p.text
    if p.pos >= len(text) or text[p.pos] not in "\"'`":
        p.fail("expected a quoted value")
    quote = text[p.pos]
    i = p.pos + 1
    out: list[str] = []
    while i < len(text) and text[i] != quote:
        c = text[i]
        if c == "\\" and quote != "`":
            i += 1
            e = text[i] if i < len(text) else ""
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in _HEX_DIGITS:
                digits = text[i + 1 : i + 1 + _HEX_DIGITS[e]]
                if len(digits) != _HEX_DIGITS[e] or not all(
                    d in "0123456789abcdefABCDEF" for d in digits
                ):
                    p.pos = i
                    p.fail(f"invalid \\{e} escape")
                out.append(chr(int(digits, 16)))
                i += len(digits)
            else:
                p.pos = i
                p.fail(f"unknown escape sequence \\{e}")
        elif c == "\n" and quote != "`":
            p.pos = i
            p.fail("newline in string")
        else:
            out.append(c)
        i += 1
    if i >= len(text):
        p.fail("unterminated string")
    p.pos = i + 1
    p.blank()
    return "".join(out)
