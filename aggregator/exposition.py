"""Parse one Prometheus text-format (0.0.4) body into families of relabelled sample lines.

The federation keeps every agent's exposition pre-rendered, so the parse happens once per pull
and produces bytes ready to be joined: each sample line gets ``cluster="<name>"`` as its first
label (an agent's own ``cluster`` label becomes ``exported_cluster``, as Prometheus does with
``honor_labels: false``). Samples are grouped by family the way Prometheus' Go text parser
groups them: ``# TYPE``/``# HELP`` name a family; a histogram owns ``_bucket``/``_sum``/``_count``,
a summary ``_sum``/``_count``; any other sample name is a family of its own (so the ``_created``
gauges prometheus_client writes are families of their own, with their own HELP/TYPE).

Bodies in prometheus_client's own layout (what agents send) are validated and relabelled by a
few C-level regex passes per body, with no Python work per line; any other layout goes line by
line (same result, a test holds the two paths together), and so does finding an error's line.

It validates as strictly as that parser (names, label syntax and escapes, values, timestamps,
one HELP and TYPE per family, TYPE before samples, UTF-8) and names the offending line, so a
broken body never reaches the merged output. It must not re-render values (numbers, escapes and
timestamps pass through byte for byte), and it does no I/O. Not checked: duplicate label names
other than ``cluster``, duplicate series, ``le``/``quantile`` presence — the agent's
prometheus_client never writes those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

CLUSTER_LABEL = "cluster"
TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
# Sample-name suffixes a family of that type owns besides (or instead of) its bare name.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
_NAME = rb"[a-zA-Z_:][a-zA-Z0-9_:]*"
# Label values allow exactly the escapes the Go parser allows: \\ \" \n.
# (Unrolled as "plain run, then (escape, plain run)*": many times faster in `re` than an
# alternation per character.)
_LABEL_VALUE = rb'"([^"\\\n]*(?:\\[\\"n][^"\\\n]*)*)"'
_PAIR = rb"([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*" + _LABEL_VALUE
_PAIR_NC = rb"[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*" + _LABEL_VALUE.replace(b"(", b"(?:", 1)
# What strconv.ParseFloat takes from real exporters: decimals, exponents, Inf, NaN.
_VALUE = rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))"
SAMPLE = re.compile(
    rb"[ \t]*(" + _NAME + rb")"
    rb"(?:[ \t]*\{[ \t]*((?:" + _PAIR_NC + rb"[ \t]*,[ \t]*)*(?:" + _PAIR_NC + rb"[ \t]*)?)\}"
    rb"[ \t]*|[ \t]+)"
    rb"(" + _VALUE + rb")(?:[ \t]+(-?[0-9]+))?[ \t]*"
)
# Anchored on the "{" or "," before each pair: a scan from every position of a long metric
# name would backtrack quadratically.
PAIR = re.compile(rb"[{,][ \t]*" + _PAIR)
# What prometheus_client writes: canonical spacing, HELP/TYPE before each family's samples.
# A whole body of this shape is validated by one C-level match, then split and relabelled with
# literal bytes operations; anything else goes line by line, which also finds an error's line.
_CANON_PAIR = rb"[a-zA-Z_][a-zA-Z0-9_]*=" + _LABEL_VALUE.replace(b"(", b"(?:", 1)
_CANON_BODY = re.compile(
    rb"(?:(?:" + _NAME + rb"(?:\{(?:" + _CANON_PAIR + rb"(?:," + _CANON_PAIR + rb")*,?)?\})? "
    rb"" + _VALUE + rb"(?: -?[0-9]+)?"
    rb"|# HELP " + _NAME + rb"(?: [^\\\n]*(?:\\[\\n][^\\\n]*)*)?"
    rb"|# TYPE " + _NAME + rb" (?:counter|gauge|histogram|summary|untyped))\n)*"
)
_HELP_OR_TYPE = re.compile(rb"#[ \t]*(HELP|TYPE)(?:[ \t]|$)")
_HELP = re.compile(rb"#[ \t]*HELP[ \t]+(" + _NAME + rb")(?:[ \t]+((?:[^\\\n]|\\[\\n])*))?")
_TYPE = re.compile(rb"#[ \t]*TYPE[ \t]+(" + _NAME + rb")[ \t]+([a-zA-Z]+)[ \t]*")
_UNESCAPE = re.compile(rb"\\(.)")
_HASH = ord("#")
_BLANKS = (ord(" "), ord("\t"))
_UNESCAPED = {b"\\": b"\\", b'"': b'"', b"n": b"\n"}


class ExpositionError(ValueError):
    """A body that is not valid text format 0.0.4; says whose body, which line and why."""

    def __init__(self, source: str, lineno: int, reason: str, line: bytes) -> None:
        shown = line[:200].decode("utf-8", "replace")
        super().__init__(f"{source}: line {lineno}: {reason}: {shown!r}")
        self.source = source
        self.lineno = lineno
        self.reason = reason


class ParsedFamily(NamedTuple):
    """One family of a body: its header facts and its sample lines, ready to join."""

    name: str
    type: str
    help: bytes | None
    """The HELP text as written (escapes kept), or None when the body had no HELP line."""
    lines: bytes
    """Every sample line, relabelled, each ending in a newline."""
    samples: int
    chunk: bytes = b""
    """The family's text in the body (HELP line to last sample) when parsed in the canonical
    layout: the key under which the next parse of the same cluster may reuse this family."""


def escape_label_value(value: str) -> str:
    """Escape a label value for text format 0.0.4."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape a HELP text for text format 0.0.4."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@lru_cache(maxsize=4096)
def sample_names(name: str, kind: str) -> frozenset[str]:
    """Return the sample names a family of this name and type owns."""
    return frozenset(name + s for s in _SUFFIXES.get(kind, ("",)))


def line_name(line: bytes) -> bytes:
    """Return the sample name of a stored (normalised) sample line."""
    end = len(line)
    for stop in (b"{", b" ", b"\t"):
        i = line.find(stop, 0, end)
        if i != -1:
            end = i
    return line[:end]


def line_labels(line: bytes) -> dict[str, str]:
    """Return the labels of a valid sample line, values unescaped (no ``__name__``)."""
    # On a validated line a left-to-right scan finds exactly its pairs: the metric name is
    # never followed by "=", and a value cannot hold an unescaped quote.
    labels = {}
    for name, raw in PAIR.findall(line):
        if b"\\" in raw:
            raw = _UNESCAPE.sub(lambda e: _UNESCAPED[e.group(1)], raw)
        labels[name.decode()] = raw.decode()
    return labels


@lru_cache(maxsize=4096)
def _encoded_names(name: bytes, kind: str) -> frozenset[bytes]:
    """Return sample_names as bytes (cached: a fleet repeats the same families)."""
    return frozenset(n.encode() for n in sample_names(name.decode(), kind))


class _Family:
    """A family while its body is being parsed."""

    __slots__ = ("help", "lines", "name", "names", "type", "typed")

    def __init__(self, name: bytes, kind: str, *, typed: bool) -> None:
        self.name = name
        self.type = kind
        self.typed = typed
        self.help: bytes | None = None
        self.lines: list[bytes] = []
        self.names: frozenset[bytes] = _encoded_names(name, kind)


def parse(
    body: bytes,
    *,
    cluster: str | None,
    source: str,
    known: Mapping[bytes, ParsedFamily] | None = None,
) -> list[ParsedFamily]:
    """Parse ``body``, adding ``cluster`` as first label when given; raise ExpositionError.

    ``known`` maps the ``chunk`` of families parsed earlier with the same ``cluster`` to
    them: a family whose text did not change is reused, not validated and relabelled again.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = body.count(b"\n", 0, exc.start) + 1
        raise ExpositionError(source, lineno, "invalid UTF-8", _line_at(body, exc.start)) from None
    fast = _parse_canonical(body, cluster=cluster, known=known or {})
    return fast if fast is not None else parse_lines(body, cluster=cluster, source=source)


def parse_lines(body: bytes, *, cluster: str | None, source: str) -> list[ParsedFamily]:
    """Parse valid UTF-8 ``body`` line by line: any layout the Go parser takes, exact errors."""
    first = b""
    if cluster is not None:
        first = f'{CLUSTER_LABEL}="{escape_label_value(cluster)}"'.encode()
    families: dict[bytes, _Family] = {}
    # sample name -> family: most lines hit this dict once and nothing else
    owner: dict[bytes, _Family] = {}
    for lineno, line in enumerate(body.split(b"\n"), 1):
        if not line:
            continue
        if line[0] in _BLANKS:  # rare: only indented lines pay for the strip
            stripped = line.lstrip(b" \t")
            if not stripped:
                continue
            if stripped[0] == _HASH:
                _comment(stripped, families, owner, source=source, lineno=lineno)
                continue
        elif line[0] == _HASH:
            _comment(line, families, owner, source=source, lineno=lineno)
            continue
        m = SAMPLE.fullmatch(line)
        if m is None:
            raise ExpositionError(source, lineno, "invalid sample line", line)
        name = m.group(1)
        fam = owner.get(name) or _owner_of(name, families, owner)
        if fam is None:
            raise ExpositionError(source, lineno, "sample name not valid for its family", line)
        if cluster is not None:
            line = _relabel(line, m, first)
        elif m.start(1):
            line = line[m.start(1) :]
        fam.lines.append(line)
    return [
        ParsedFamily(
            name=f.name.decode(),
            type=f.type,
            help=f.help,
            lines=b"\n".join(f.lines) + b"\n",
            samples=len(f.lines),
        )
        for f in families.values()
        if f.lines
    ]


def _parse_canonical(
    body: bytes, *, cluster: str | None, known: Mapping[bytes, ParsedFamily]
) -> list[ParsedFamily] | None:
    """Parse a body in prometheus_client's layout at C speed; None if it is laid out otherwise."""
    # Every family's chunk runs from its HELP line to its last sample, without the newline
    # that ends it: a chunk is valid, or not, wherever it stands in a body.
    chunks = (b"\n" + body.removesuffix(b"\n")).split(b"\n# HELP ")
    if chunks[0]:  # samples or a lone TYPE before the first HELP (or an empty body)
        return None
    label = b""
    if cluster is not None:
        label = f'{CLUSTER_LABEL}="{escape_label_value(cluster)}"'.encode()
    seen = set()
    out = []
    for chunk in chunks[1:]:
        reused = known.get(chunk)
        if reused is not None:
            if reused.name in seen:
                return None
            seen.add(reused.name)
            out.append(reused)
            continue
        if _CANON_BODY.fullmatch(b"# HELP " + chunk + b"\n") is None:
            return None
        # Validated line by line above, so every "\n" ends a line and literal searches are exact.
        head, _, rest = chunk.partition(b"\n")
        name, _, text = head.partition(b" ")
        type_line, _, lines = rest.partition(b"\n")
        kind = type_line.removeprefix(b"# TYPE " + name + b" ")
        family = name.decode()
        if kind == type_line or family in seen:  # HELP without its TYPE, or a split family
            return None
        seen.add(family)
        if not lines:
            continue
        framed = b"\n" + lines + b"\n"
        names = _encoded_names(name, kind.decode())
        opens = sum(framed.count(b"\n" + n + b"{") for n in names)
        bare = sum(framed.count(b"\n" + n + b" ") for n in names)
        count = framed.count(b"\n") - 1
        if opens + bare != count:  # a sample of another family, or a lone HELP/TYPE line
            return None
        if cluster is not None:
            if b"cluster=" in framed:  # the agent's own cluster label: renamed line by line
                return None
            if opens:
                # Plain replaces are right only if every "{" opens a label set.
                if framed.count(b"{") != opens:
                    return None
                framed = framed.replace(b"{", b"{" + label + b",")
                framed = framed.replace(label + b",}", label + b"}")
            for n in names if bare else ():
                framed = framed.replace(b"\n" + n + b" ", b"\n" + n + b"{" + label + b"} ")
        out.append(ParsedFamily(family, kind.decode(), text, framed[1:], count, chunk))
    return out


def _line_at(body: bytes, pos: int) -> bytes:
    start = body.rfind(b"\n", 0, pos) + 1
    end = body.find(b"\n", pos)
    return body[start : end if end != -1 else len(body)]


def _comment(
    line: bytes,
    families: dict[bytes, _Family],
    owner: dict[bytes, _Family],
    *,
    source: str,
    lineno: int,
) -> None:
    kind = _HELP_OR_TYPE.match(line)
    if kind is None:  # any other comment carries nothing
        return
    if kind.group(1) == b"HELP":
        m = _HELP.fullmatch(line)
        if m is None:
            raise ExpositionError(source, lineno, "invalid HELP line", line)
        fam = families.get(m.group(1)) or _declare(m.group(1), families, owner)
        if fam.help is not None:
            raise ExpositionError(source, lineno, "second HELP line for this family", line)
        fam.help = m.group(2) or b""
        return
    t = _TYPE.fullmatch(line)
    if t is None:
        raise ExpositionError(source, lineno, "invalid TYPE line", line)
    kind_name = t.group(2).decode().lower()
    if kind_name not in TYPES:
        raise ExpositionError(source, lineno, "unknown metric type", line)
    typed = families.get(t.group(1))
    if typed is not None and typed.typed:
        raise ExpositionError(source, lineno, "second TYPE line for this family", line)
    if typed is not None and typed.lines:
        raise ExpositionError(source, lineno, "TYPE line after samples of its family", line)
    if typed is None:
        typed = _declare(t.group(1), families, owner)
    for n in typed.names:
        if owner.get(n) is typed:
            owner.pop(n)
    typed.type = kind_name
    typed.typed = True
    typed.names = _encoded_names(typed.name, kind_name)
    for n in typed.names:
        # As in the Go parser, a family of exactly this name beats a histogram's suffix.
        if n == typed.name:
            owner[n] = typed
        else:
            owner.setdefault(n, typed)


def _declare(name: bytes, families: dict[bytes, _Family], owner: dict[bytes, _Family]) -> _Family:
    fam = _Family(name, "untyped", typed=False)
    families[name] = fam
    owner.setdefault(name, fam)
    return fam


def _owner_of(
    name: bytes, families: dict[bytes, _Family], owner: dict[bytes, _Family]
) -> _Family | None:
    """Find (or create, untyped) the family a sample name belongs to, as the Go parser does."""
    fam = families.get(name)
    if fam is not None:
        # A histogram's bare name is not one of its samples.
        return fam if name in fam.names else None
    for suffix in (b"_bucket", b"_sum", b"_count"):
        if name.endswith(suffix):
            base = families.get(name[: -len(suffix)])
            if base is not None and name in base.names:
                owner[name] = base
                return base
    return _declare(name, families, owner)


def _relabel(line: bytes, m: re.Match[bytes], first: bytes) -> bytes:
    """Put ``first`` (``cluster="…"``) in front of the line's labels; keep the rest verbatim."""
    start = m.start(1)
    labels = m.group(2)
    if labels is None:
        end = m.end(1)
        return line[start:end] + b"{" + first + b"}" + line[end:]
    at = m.start(2)
    if not labels:
        return line[start:at] + first + line[at:]
    if b"cluster" in labels:
        labels = _export_cluster(labels)
    return line[start:at] + first + b"," + labels + line[m.end(2) :]


def _export_cluster(labels: bytes) -> bytes:
    """Rename an agent's own ``cluster`` label to ``exported_cluster``, as Prometheus does."""
    framed = b"," + labels
    names = {p.group(1) for p in PAIR.finditer(framed)}
    if b"cluster" not in names:  # the substring was inside a value
        return labels
    new = b"exported_cluster"
    while new in names:
        new = b"exported_" + new
    out = []
    pos = 1
    for p in PAIR.finditer(framed):
        if p.group(1) == b"cluster":
            out.append(framed[pos : p.start(1)] + new)
            pos = p.end(1)
    out.append(framed[pos:])
    return b"".join(out)
