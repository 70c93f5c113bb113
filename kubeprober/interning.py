"""Decoded JSON kept by the thousand shares its strings.

Exists because an aggregator keeps a decoded object per cluster, several times over: each
agent's last report and, in Kubernetes mode, every Cluster and Secret of the fleet on every
replica. Decoded apart, each object carries its own copy of every key (``"lastTransitionTime"``)
and of every common value (``"PASS"``, ``"Online"``, a probe's name); interned, each string is
kept once. Must not change what the objects say: only which equal strings are the same object.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

T = TypeVar("T")
SHORT = 32
"""Strings up to this many characters are interned: keys, names, statuses and timestamps,
which repeat across clusters, but not messages or tokens, which rarely do."""


def _shared(value: Any) -> Any:
    return sys.intern(value) if type(value) is str and len(value) <= SHORT else value


def interned(value: T) -> T:
    """Intern, in place, every dict key and every short string in ``value`` (decoded JSON),
    and return it. Iterative, so it goes as deep as the decoder did."""
    containers: list[Any] = [value]
    while containers:
        node = containers.pop()
        if type(node) is dict:
            items = [(sys.intern(k), _shared(v)) for k, v in node.items()]
            node.clear()
            node.update(items)
            containers.extend(v for _, v in items if type(v) in (dict, list))
        elif type(node) is list:
            node[:] = [_shared(v) for v in node]
            containers.extend(v for v in node if type(v) in (dict, list))
    return value
