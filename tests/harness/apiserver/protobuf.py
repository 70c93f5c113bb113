"""Decode the Kubernetes protobuf bodies kubectl's typed generators send, for a few kinds.

``kubectl create namespace|configmap|secret`` use client-go's typed clients, which send
protobuf. Only the fields of those kinds are mapped (field numbers from k8s.io/api
``generated.proto``); other kinds are refused with 415 so a test never sees a half-decoded
object. Answers are always JSON, which client-go accepts.
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"
Schema = dict[int, tuple[str, Any]]

OWNER_REF: Schema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    13: ("ownerReferences", ("list", OWNER_REF)),
    14: ("finalizers", "strings"),
}
KINDS: dict[str, Schema] = {
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", "strings")})},
    "ConfigMap": {
        1: ("metadata", OBJECT_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Split a message into (field number, wire type, raw value)."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ApiError(400, f"unsupported protobuf wire type {wire}")
        out.append((num, wire, value))
    return out


def _message(buf: bytes, schema: Schema) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for num, _, raw in _fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if typ in ("string", "int", "bool") and not raw:
            # gogo-protobuf writes zero values; JSON would omit them (omitempty).
            continue
        if typ == "string":
            obj[name] = raw.decode()
        elif typ in ("int", "bool"):
            obj[name] = bool(raw) if typ == "bool" else raw
        elif typ == "strings":
            obj.setdefault(name, []).append(raw.decode())
        elif typ in ("map", "bytesmap"):
            entry = {n: v for n, _, v in _fields(raw)}
            value = entry.get(2, b"")
            text = base64.b64encode(value).decode() if typ == "bytesmap" else value.decode()
            obj.setdefault(name, {})[entry.get(1, b"").decode()] = text
        elif isinstance(typ, tuple):
            obj.setdefault(name, []).append(_message(raw, typ[1]))
        else:
            obj[name] = _message(raw, typ)
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """Decode a protobuf-encoded object of a supported kind into its JSON form."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "protobuf body lacks the k8s envelope")
    unknown = {n: v for n, _, v in _fields(body[len(MAGIC) :])}
    type_meta = {n: v.decode() for n, _, v in _fields(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    if kind not in KINDS:
        raise ApiError(
            415,
            f"the test API server decodes protobuf only for {', '.join(sorted(KINDS))} "
            f"(got {kind!r}); send application/json",
        )
    obj = _message(unknown.get(2, b""), KINDS[kind])
    return {"apiVersion": api_version, "kind": kind, **obj}
