"""Label and field selectors, parsed and matched as the apiserver does.

Kept separate from storage because lists, watches and the controllers all filter with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ApiError

Matcher = Callable[[dict[str, Any]], bool]

_REQ = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<val>\([^)]*\)|[A-Za-z0-9._-]*))?\s*"
)


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_labels(selector: str | None) -> Matcher:
    """Return a matcher of an object's labels for a label selector string."""
    reqs: list[tuple[str, str, frozenset[str]]] = []
    for part in _split(selector or ""):
        m = _REQ.fullmatch(part)
        if not m:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
        key, op, val = m["key"], (m["op"] or "").strip(), m["val"] or ""
        if not op:
            op = "!exists" if m["neg"] else "exists"
        values = frozenset(v.strip() for v in val.strip("()").split(",") if v.strip())
        reqs.append((key, "=" if op == "==" else op, values or frozenset({""})))

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_holds(labels, key, op, values) for key, op, values in reqs)

    return match


def _holds(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op == "exists":
        return key in labels
    if op == "!exists":
        return key not in labels
    if op in ("=", "in"):
        return labels.get(key) in values
    # "!=" and "notin" also match objects without the label, as the apiserver does.
    return labels.get(key) not in values


def match_label_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Match a structured LabelSelector (matchLabels/matchExpressions); empty matches all."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if (
            (op == "In" and labels.get(k) not in vals)
            or (op == "NotIn" and labels.get(k) in vals)
            or (op == "Exists" and k not in labels)
            or (op == "DoesNotExist" and k in labels)
        ):
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    """Return the string value a field selector compares (empty when absent)."""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_fields(selector: str | None, allowed: tuple[str, ...], kind: str) -> Matcher:
    """Return a matcher for a field selector, rejecting fields the kind does not index."""
    if not selector:
        return lambda obj: True
    checks: list[tuple[str, str, bool]] = []
    for part in _split(selector):
        m = re.fullmatch(r"\s*([A-Za-z0-9._\[\]/-]+)\s*(==|!=|=)\s*(.*?)\s*", part)
        if not m:
            raise ApiError(400, f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = m.groups()
        if path not in allowed:
            raise ApiError(
                400,
                f"field label not supported: {path}",
            )
        checks.append((path, value, op != "!="))

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, p) == v) == eq for p, v, eq in checks)

    return match
