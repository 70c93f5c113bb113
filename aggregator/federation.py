"""The aggregator's federated ``/metrics``: agents' expositions relabelled once, joined per scrape.

Each pull hands an agent's text-format body to :meth:`Federation.ingest`, which parses it once
(:mod:`aggregator.exposition`), adds ``cluster="<name>"`` to every sample and files the
resulting bytes per family. A scrape then only joins cached bytes: per family one HELP and one
TYPE line, then every cluster's lines. Nothing is parsed or rendered through prometheus_client
at scrape time, and ``match[]`` (:mod:`aggregator.exposition_match`) reads lines only when a
matcher needs a label other than the name or ``cluster``.

Rules that keep the merged output valid (``promtool check metrics``):

- A family's type is the one first seen by the clusters that still have it. A cluster whose
  family of that name has another type (version skew) loses that family until the others are
  gone; it is listed in :attr:`IngestReport.dropped` and counted in ``dropped_total``. The same
  holds for a family whose sample names clash with another family's (a gauge ``x_count`` next to
  a summary ``x``). HELP is likewise the first seen.
- The aggregator's own families (:class:`OwnFamily` per cluster, :meth:`Federation.set_extra`
  for the rest) win over an agent's family of the same name, which is dropped.
- A cluster contributes at most ``max_series`` samples: whole families in the order its agent
  sent them, while they fit; the others are left out (:attr:`IngestReport.capped`). Every
  sample left out, by this cap or a drop above, is counted per cluster in
  :attr:`Federation.dropped_series`, so one agent gone wild cannot swamp every scrape.

Prometheus asks for gzip on every scrape. :meth:`Federation.render_gzip` answers without
compressing the whole exposition each time: each family's members are split into
``GZIP_GROUPS`` groups by a hash of the cluster name, and each group is kept compressed as a
gzip member of its own, redone only when one of its members changed (:meth:`Federation.compress`,
which the aggregator also runs after each pull round, off the scrape). Concatenated gzip members
are one valid gzip stream (RFC 1952, 2.2), so a scrape joins bytes, like the plain one.

A body identical to the cluster's previous one (same BLAKE2 digest) is not parsed again. It does
no I/O and must not grow a cache per scrape: the caller pulls, times out and serves.
Output is text format 0.0.4 only (no OpenMetrics). Thread-safe: one lock guards the index,
held while swapping a cluster's bytes in or taking a snapshot to join, never while parsing.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubeprober.aggregator.exposition import (
    TYPES,
    ParsedFamily,
    escape_help,
    escape_label_value,
    line_labels,
    line_name,
    parse,
    sample_names,
)
from kubeprober.aggregator.exposition_match import Selector, parse_selectors

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXTRA = ""
"""Member key of the aggregator's cluster-less series (no cluster is named ``""``)."""
OWN_SOURCE = "aggregator"
GZIP_GROUPS = 32
"""Compressed groups per family: 2,000 clusters make groups of about 60 members, enough for
gzip to find the repetition (13 times smaller), few enough that one cluster's change
recompresses 1/32 of a family."""
_GZIP_LEVEL = 1  # level 6 is 20% smaller and three times slower: scrapes would wait for it


def _group(cluster: str) -> int:
    return zlib.crc32(cluster.encode()) % GZIP_GROUPS


def _gzip(data: bytes) -> bytes:
    # mtime 0: the same lines give the same bytes (and no clock read per group).
    return gzip.compress(data, _GZIP_LEVEL, mtime=0)


@dataclass(frozen=True)
class OwnFamily:
    """A family of the aggregator's own with one sample per cluster, labelled only ``cluster``."""

    name: str
    help: str
    type: str = "gauge"


@dataclass(frozen=True)
class IngestReport:
    """What one ingest filed, and which of the agent's families were left out."""

    cluster: str
    families: int
    samples: int
    dropped: tuple[str, ...]
    """Family names left out: type or sample-name conflict, or a name the aggregator owns."""
    capped: tuple[str, ...] = ()
    """Family names left out because the cluster's series would pass ``max_series``."""
    dropped_series: int = 0
    """Samples left out, for either reason."""


class _Entry:
    """One family of the merged output: header bytes and each member's sample lines."""

    __slots__ = (
        "changes", "header", "header_gz", "members", "name", "names", "owned", "type", "zipped",
    )  # fmt: skip

    def __init__(self, name: str, kind: str, help_text: bytes | None, *, owned: bool) -> None:
        self.name = name
        self.type = kind
        self.names = sample_names(name, kind)
        self.owned = owned
        """The aggregator's own (per-cluster or extra): agents' families of this name drop."""
        head = b"" if help_text is None else b"# HELP %s %s\n" % (name.encode(), help_text)
        self.header = head + b"# TYPE %s %s\n" % (name.encode(), kind.encode())
        self.header_gz = _gzip(self.header)
        self.members: dict[str, bytes] = {}
        """Cluster name (or EXTRA) -> its sample lines, each ending in a newline. Written only
        through :meth:`put` and :meth:`drop`, which keep the compressed groups honest."""
        self.changes = [0] * GZIP_GROUPS
        """Per group: how many times one of its members changed."""
        self.zipped: dict[int, tuple[int, bytes]] = {}
        """Group -> (its ``changes`` when compressed, its members' lines as a gzip member)."""

    def put(self, cluster: str, lines: bytes) -> None:
        """Set ``cluster``'s lines (a change only if they differ)."""
        if self.members.get(cluster) != lines:
            self.members[cluster] = lines
            self.changes[_group(cluster)] += 1

    def drop(self, cluster: str) -> bool:
        """Remove ``cluster``'s lines; return whether it had any."""
        if self.members.pop(cluster, None) is None:
            return False
        self.changes[_group(cluster)] += 1
        return True

    def stale(self) -> list[int]:
        """Return the groups whose compressed bytes are out of date."""
        return [g for g, n in enumerate(self.changes) if self.zipped.get(g, (0, b""))[0] != n]


class Federation:
    """Per-family cache of every cluster's relabelled series, joined into one exposition."""

    def __init__(self, own: Iterable[OwnFamily] = (), *, max_series: int | None = None) -> None:
        self.max_series = max_series
        """Samples one cluster may contribute; None for no limit."""
        self.dropped_series: dict[str, int] = {}
        """Cluster -> samples of its agent left out so far (a counter: every ingest adds)."""
        self._lock = threading.Lock()
        self._compressing = threading.Lock()
        self._families: dict[str, _Entry] = {}
        self._claims: dict[str, str] = {}
        """Sample name -> the family that owns it, so no two families share a sample name."""
        self._agents: dict[str, tuple[str, ...]] = {}
        """Cluster -> the families its agent contributes."""
        self._last: dict[str, tuple[bytes, IngestReport]] = {}
        """Cluster -> digest of its last body filed in full, and that ingest's report."""
        self._known: dict[str, dict[bytes, ParsedFamily]] = {}
        """Cluster -> its last body's families by their text: between two pulls most
        families (statuses, intervals, info) do not change and are not parsed again."""
        self._extra: tuple[str, ...] = ()
        self._own: dict[str, OwnFamily] = {}
        self.dropped_total = 0
        """Agent families left out so far (type conflicts, clashes, reserved names)."""
        for fam in own:
            if fam.type not in TYPES - {"histogram", "summary"}:
                raise ValueError(f"own family {fam.name}: type {fam.type} needs one sample")
            if self._create(fam.name, fam.type, escape_help(fam.help).encode(), owned=True) is None:
                raise ValueError(f"own family {fam.name} declared twice")
            self._own[fam.name] = fam

    def ingest(self, cluster: str, body: bytes) -> IngestReport:
        """Replace ``cluster``'s agent series with ``body``; keep the old ones if it is invalid.

        Raises ExpositionError (a ValueError) naming the cluster and line.
        """
        if not cluster:
            raise ValueError("cluster name must not be empty")
        # An agent whose checks did not run since the last pull sends the same bytes again.
        digest = hashlib.blake2b(body, digest_size=16).digest()
        with self._lock:
            last = self._last.get(cluster)
            if last is not None and last[0] == digest:
                self._count_dropped(cluster, last[1].dropped_series)
                return last[1]
        known = self._known.get(cluster)
        parsed = parse(body, cluster=cluster, source=f"cluster {cluster}", known=known)
        kept, capped = _cap(parsed, self.max_series)
        with self._lock:
            self._known[cluster] = {f.chunk: f for f in parsed if f.chunk}
            accepted, dropped = self._file(cluster, kept)
            self._agents[cluster] = accepted
            self.dropped_total += len(dropped)
            samples = sum(f.samples for f in parsed if f.name in accepted)
            report = IngestReport(
                cluster=cluster,
                families=len(accepted),
                samples=samples,
                dropped=dropped,
                capped=capped,
                dropped_series=sum(f.samples for f in parsed) - samples,
            )
            self._count_dropped(cluster, report.dropped_series)
            if not dropped:  # a dropped family may fit at the next pull: parse again then
                self._last[cluster] = (digest, report)
            else:
                self._last.pop(cluster, None)
        return report

    def _count_dropped(self, cluster: str, samples: int) -> None:
        if samples:
            self.dropped_series[cluster] = self.dropped_series.get(cluster, 0) + samples

    def forget_agent(self, cluster: str) -> None:
        """Drop ``cluster``'s agent series but keep its own (``agent_up`` 0 stays visible)."""
        with self._lock:
            self._last.pop(cluster, None)
            self._known.pop(cluster, None)
            for name in self._agents.pop(cluster, ()):
                self._leave(name, cluster)

    def remove(self, cluster: str) -> None:
        """Drop everything about ``cluster``: its agent series and its own series."""
        with self._lock:
            self._last.pop(cluster, None)
            self._known.pop(cluster, None)
            self.dropped_series.pop(cluster, None)
            for name in self._agents.pop(cluster, ()):
                self._leave(name, cluster)
            for name in self._own:
                self._families[name].drop(cluster)

    def set_own(self, cluster: str, values: Mapping[str, float]) -> None:
        """Set ``cluster``'s own series, one value per OwnFamily name; absent names go."""
        self.set_own_many({cluster: values})

    def set_own_many(self, clusters: Mapping[str, Mapping[str, float]]) -> None:
        """Set the own series of several clusters under one lock (a refresh of the fleet)."""
        rendered = []
        for cluster, values in clusters.items():
            if not values.keys() <= self._own.keys():
                unknown = sorted(set(values) - set(self._own))
                raise ValueError(f"not declared as OwnFamily: {', '.join(unknown)}")
            label = b'{cluster="%s"} ' % escape_label_value(cluster).encode()
            rendered.append((cluster, {n: label + _go_float(v) for n, v in values.items()}))
        with self._lock:
            for name in self._own:
                entry = self._families[name]
                prefix = name.encode()
                for cluster, lines in rendered:
                    line = lines.get(name)
                    if line is not None:
                        entry.put(cluster, prefix + line + b"\n")
                    else:
                        entry.drop(cluster)

    def set_extra(self, body: bytes) -> None:
        """Replace the aggregator's cluster-less series (e.g. generate_latest of a small registry).

        Its families win over agents' families of the same (or a clashing) name.
        Raises ExpositionError, or ValueError for a name declared as OwnFamily.
        """
        parsed = parse(body, cluster=None, source=OWN_SOURCE)
        mine = sorted({f.name for f in parsed} & set(self._own))
        if mine:
            raise ValueError(f"{OWN_SOURCE}: declared as OwnFamily: {', '.join(mine)}")
        with self._lock:
            for name in self._extra:
                entry = self._families.get(name)
                if entry is not None and entry.drop(EXTRA) and not entry.members:
                    self._delete(entry)
            accepted = []
            for fam in parsed:
                # Agents' families with this name or one of its sample names make way.
                for n in {fam.name} | sample_names(fam.name, fam.type):
                    other = self._families.get(self._claims.get(n, fam.name))
                    if other is not None and not other.owned:
                        self.dropped_total += len(other.members)
                        self._delete(other)
                        self._last.clear()  # evicted agents must be parsed in full again
                entry = self._families.get(fam.name)
                if entry is None:
                    entry = self._create(fam.name, fam.type, fam.help, owned=True)
                if entry is None or entry.type != fam.type:
                    self.dropped_total += 1  # clashes with another family of this very body
                    continue
                entry.put(EXTRA, fam.lines)
                accepted.append(fam.name)
            self._extra = tuple(accepted)

    def clusters(self) -> list[str]:
        """Return the clusters whose agent series are cached, sorted."""
        with self._lock:
            return sorted(self._agents)

    def render(self, match: Sequence[str] = ()) -> bytes:
        """Join the merged exposition, limited to ``match[]`` selectors when any are given.

        Raises ValueError (a 400 for the client) for a selector that cannot be parsed.
        """
        selectors = parse_selectors(match)
        with self._lock:
            if selectors:
                parts = self._select(selectors)
            else:
                parts = []
                for entry in self._families.values():
                    if entry.members:
                        parts.append(entry.header)
                        parts.extend(entry.members.values())
        # The bytes are immutable: join outside the lock so ingests never wait for a scrape.
        return b"".join(parts)

    def render_gzip(self, match: Sequence[str] = ()) -> bytes:
        """Return :meth:`render`'s exposition as gzip: compressed groups joined, when unfiltered.

        A ``match[]`` answer is compressed whole: it is as small as its selection.
        """
        if match:
            return _gzip(self.render(match))
        self.compress()
        with self._lock:
            parts = []
            for entry in self._families.values():
                if entry.members:
                    parts.append(entry.header_gz)
                    parts.extend(entry.zipped[g][1] for g in sorted(entry.zipped))
        return b"".join(parts)

    def compress(self) -> None:
        """Bring every family's compressed groups up to date; thread-safe, ingests go on."""
        with self._compressing:  # one at a time: an older result never overwrites a newer
            with self._lock:
                todo: list[tuple[_Entry, int, int, list[bytes]]] = []
                for entry in self._families.values():
                    stale = entry.stale()
                    if not stale:
                        continue
                    grouped: dict[int, list[bytes]] = {g: [] for g in stale}
                    for cluster, lines in entry.members.items():
                        bucket = grouped.get(_group(cluster))
                        if bucket is not None:
                            bucket.append(lines)
                    todo.extend((entry, g, entry.changes[g], grouped[g]) for g in stale)
            # The compressing itself, the costly part, runs without the index lock.
            done = [(e, g, n, _gzip(b"".join(lines)) if lines else b"") for e, g, n, lines in todo]
            with self._lock:
                for entry, g, n, blob in done:
                    # A group changed again meanwhile keeps its count behind: redone next time.
                    if blob:
                        entry.zipped[g] = (n, blob)
                    elif entry.changes[g] == n:
                        entry.zipped.pop(g, None)
                        entry.changes[g] = 0

    def _file(
        self, cluster: str, parsed: list[ParsedFamily]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Swap ``cluster``'s families in; return the names filed and the names dropped."""
        new = {f.name for f in parsed}
        for name in self._agents.get(cluster, ()):
            if name not in new:
                self._leave(name, cluster)
        accepted: list[str] = []
        dropped: list[str] = []
        for fam in parsed:
            entry = self._families.get(fam.name)
            if (
                entry is not None
                and not entry.owned
                and entry.type != fam.type
                and entry.members.keys() <= {cluster}
            ):
                # This cluster alone had the family: it may change its type (agent upgrade).
                self._delete(entry)
                entry = None
            if entry is None:
                entry = self._create(fam.name, fam.type, fam.help, owned=False)
            if entry is None or entry.owned or entry.type != fam.type:
                self._leave(fam.name, cluster)
                dropped.append(fam.name)
                continue
            entry.put(cluster, fam.lines)
            accepted.append(fam.name)
        return tuple(accepted), tuple(dropped)

    def _create(
        self, name: str, kind: str, help_text: bytes | None, *, owned: bool
    ) -> _Entry | None:
        """Add a family, or return None if one of its sample names belongs to another family."""
        if name in self._families:
            return None
        entry = _Entry(name, kind, help_text, owned=owned)
        if any(self._claims.get(n, name) != name for n in entry.names):
            return None
        for n in entry.names:
            self._claims[n] = name
        self._families[name] = entry
        return entry

    def _delete(self, entry: _Entry) -> None:
        del self._families[entry.name]
        for n in entry.names:
            if self._claims.get(n) == entry.name:
                del self._claims[n]

    def _leave(self, name: str, cluster: str) -> None:
        """Take ``cluster``'s agent lines out of family ``name``; drop the family when empty."""
        entry = self._families.get(name)
        if entry is None or entry.owned:
            return
        entry.drop(cluster)
        if not entry.members:
            self._delete(entry)

    def _select(self, selectors: Sequence[Selector]) -> list[bytes]:
        """Return header and line bytes of the series any selector matches."""
        parts: list[bytes] = []
        for entry in self._families.values():
            if not entry.members:
                continue
            relevant = []
            for sel in selectors:
                names = frozenset(n for n in entry.names if sel.match_name(n))
                if names:
                    relevant.append((sel, names, names == entry.names))
            if not relevant:
                continue
            if any(every and not sel.clusters and not sel.labels for sel, _, every in relevant):
                parts.append(entry.header)  # by name alone: the whole family, as unfiltered
                parts.extend(entry.members.values())
                continue
            pieces: list[bytes] = []
            for key in _candidates(entry.members, relevant):
                piece = _member(key, entry.members[key], relevant)
                if piece:
                    pieces.append(piece)
            if pieces:
                parts.append(entry.header)
                parts.extend(pieces)
        return parts


def _cap(
    parsed: list[ParsedFamily], limit: int | None
) -> tuple[list[ParsedFamily], tuple[str, ...]]:
    """Return the families that fit in ``limit`` samples, in order, and the names left out."""
    if limit is None or sum(f.samples for f in parsed) <= limit:
        return parsed, ()
    kept: list[ParsedFamily] = []
    capped: list[str] = []
    total = 0
    for fam in parsed:
        if total + fam.samples <= limit:
            kept.append(fam)
            total += fam.samples
        else:
            capped.append(fam.name)
    return kept, tuple(capped)


def _go_float(value: float) -> bytes:
    """Format a sample value the way Go (and so Prometheus) writes it."""
    if math.isfinite(value):
        return repr(float(value)).encode()
    if math.isnan(value):
        return b"NaN"
    return b"+Inf" if value > 0 else b"-Inf"


def _candidates(
    members: dict[str, bytes], relevant: list[tuple[Selector, frozenset[str], bool]]
) -> Iterable[str]:
    """Return the member keys worth a look: only the named ones when all say cluster="x"."""
    named = [next((m.value for m in sel.clusters if m.op == "="), None) for sel, _, _ in relevant]
    if any(n is None for n in named):
        return members.keys()
    return [k for k in dict.fromkeys([*named, EXTRA]) if k in members]


def _member(key: str, blob: bytes, relevant: list[tuple[Selector, frozenset[str], bool]]) -> bytes:
    """Return the part of one member's lines that the selectors match."""
    tests: list[tuple[Selector, frozenset[str]]] = []
    for sel, names, every_name in relevant:
        if key != EXTRA:
            if not sel.match_cluster(key):
                continue
            if every_name and not sel.labels:
                return blob  # the common case: decided without reading a line
        if all(n in blob for n in sel.needles):
            tests.append((sel, names))
    if not tests:
        return b""
    with_cluster = key == EXTRA  # extra series carry their cluster label (if any) in the line
    kept = []
    for line in blob.split(b"\n")[:-1]:
        name = line_name(line).decode()
        labels: dict[str, str] | None = None
        for sel, names in tests:
            if name not in names or not all(n in line for n in sel.needles):
                continue
            if sel.labels or (with_cluster and sel.clusters):
                labels = labels if labels is not None else line_labels(line)
                if not sel.match_labels(labels, with_cluster=with_cluster):
                    continue
            kept.append(line + b"\n")
            break
    return b"".join(kept)
