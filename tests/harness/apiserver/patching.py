"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of strategic merge.

Strategic merge in a real apiserver reads patch strategies from Go struct tags; here a small
table of well-known list fields and their merge keys stands in, which covers what kubectl and
controllers send for pods, services and workloads. Lists not in the table are replaced. Merged
lists are ordered as the apiserver orders them (see ``_ordered``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .errors import ApiError

# list field name -> merge key (None: a set of primitives merged by value)
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "finalizers": None,
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "taints": "key",
    "addresses": "type",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(400, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts[:-1]:
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError) as exc:
            raise ApiError(422, f"jsonpatch: missing path element {p!r}") from exc
    return cur


def _get(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"jsonpatch: path {'/'.join(parts)!r} not found") from exc
    return cur


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last)
        if idx > len(parent):
            raise ApiError(422, "jsonpatch: add index out of range")
        parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise ApiError(422, "jsonpatch: add to a non-container")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts), parts[-1]
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, f"jsonpatch: cannot remove missing {'/'.join(parts)!r}") from exc
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            doc = _add(_remove(doc, parts), parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise ApiError(
                    422,
                    f"the server rejected our request due to an error in our "
                    f"request: testing value {op.get('path')} failed",
                )
        else:
            raise ApiError(400, f"Unexpected kind: {kind}")
    return doc


def strategic_merge(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch using the merge-key table."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and (key in MERGE_KEYS or key == "ports"):
            result[key] = _merge_list(result.get(key), value, _merge_key(key, value))
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_key(field: str, patch: list[Any]) -> str | None:
    """Return the merge key, telling container ports from service ports by their fields."""
    if field == "ports":
        first = patch[0] if patch and isinstance(patch[0], dict) else {}
        return "containerPort" if "containerPort" in first else "port"
    return MERGE_KEYS[field]


def _merge_list(current: Any, patch: list[Any], key: str | None) -> list[Any]:
    current = copy.deepcopy(current) if isinstance(current, list) else []
    ident: Callable[[Any], Any] = (
        (lambda x: x) if key is None else (lambda x: x.get(key) if isinstance(x, dict) else None)
    )
    live = [ident(c) for c in current]
    if key is None:
        return _ordered(
            current + [copy.deepcopy(x) for x in patch if x not in current], patch, live, ident
        )
    patched = []
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            continue
        idx = next(
            (i for i, c in enumerate(current) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        directive = item.get("$patch")
        if directive == "delete":
            if idx is not None:
                current.pop(idx)
            continue
        patched.append(item[key])
        if directive == "replace" or idx is None:
            new = {k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"}
            if idx is None:
                current.append(new)
            else:
                current[idx] = new
        else:
            current[idx] = strategic_merge(current[idx], item)
    return _ordered(current, patched, live, ident)


def _ordered(
    merged: list[Any], patched: list[Any], live: list[Any], ident: Callable[[Any], Any]
) -> list[Any]:
    """Order a merged list as the apiserver does.

    Items named in the patch keep the patch's order, the others their live order; the two are
    interleaved, a live-only item going first only when it stood before the patch item in the
    live list. So an item new in the patch comes before the live-only items still waiting:
    env ``[X]`` patched with ``[Y]`` is ``[Y, X]``; containers ``[a, b]`` patched with ``[a]``
    stay ``[a, b]``.
    """
    from_patch = sorted(
        (x for x in merged if ident(x) in patched), key=lambda x: patched.index(ident(x))
    )
    live_only = [x for x in merged if ident(x) not in patched]
    out = []
    while from_patch or live_only:
        take_live = not from_patch or (
            bool(live_only)
            and ident(from_patch[0]) in live
            and live.index(ident(live_only[0])) < live.index(ident(from_patch[0]))
        )
        out.append(live_only.pop(0) if take_live else from_patch.pop(0))
    return out
