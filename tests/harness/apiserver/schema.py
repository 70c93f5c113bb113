"""Structural-schema pruning and a subset of OpenAPI validation for custom resources.

A real apiserver drops fields a CRD's schema does not declare (unless
``x-kubernetes-preserve-unknown-fields``) and rejects values of the wrong type; tests of our CRDs
must see the same, or a ``with:`` block that a real cluster would drop passes here unnoticed.
"""

from __future__ import annotations

import re
from typing import Any

_META_KEYS = {"apiVersion", "kind", "metadata"}


def prune(obj: dict[str, Any], schema: dict[str, Any] | None) -> list[str]:
    """Drop unknown fields in place; return the dotted paths that were dropped."""
    if not schema:
        return []
    dropped: list[str] = []
    for key in list(obj):
        if key in _META_KEYS:
            continue
        props = schema.get("properties") or {}
        if key in props:
            obj[key] = _prune_value(obj[key], props[key], key, dropped)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            dropped.append(key)
            del obj[key]
    return dropped


def _prune_value(value: Any, schema: dict[str, Any], path: str, dropped: list[str]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        embedded = schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if embedded and key in _META_KEYS:
                # Embedded objects keep apiVersion/kind/metadata like a top-level object.
                continue
            if props is not None and key in props:
                value[key] = _prune_value(value[key], props[key], f"{path}.{key}", dropped)
            elif isinstance(extra, dict):
                value[key] = _prune_value(value[key], extra, f"{path}.{key}", dropped)
            elif (props is not None or schema.get("type") == "object") and not preserve:
                if extra is True:
                    continue
                dropped.append(f"{path}.{key}")
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            _prune_value(v, schema["items"], f"{path}[{i}]", dropped) for i, v in enumerate(value)
        ]
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(obj: dict[str, Any], schema: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Return validation failures as (field, reason, message) tuples."""
    if not schema:
        return []
    errors: list[tuple[str, str, str]] = []
    body = {k: v for k, v in obj.items() if k not in _META_KEYS}
    _check(body, {**schema, "type": "object"}, "", errors)
    return errors


def _check(
    value: Any, schema: dict[str, Any], path: str, errors: list[tuple[str, str, str]]
) -> None:
    if value is None:
        if not schema.get("nullable"):
            errors.append(
                (
                    path,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "null": {path} in body must be of type '
                    f'{schema.get("type", "object")}: "null"',
                )
            )
        return
    typ = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(
                (
                    path,
                    "FieldValueTypeInvalid",
                    f"Invalid value: {value!r}: {path} in body must be of type integer or string",
                )
            )
        return
    if typ in _TYPES and (
        not isinstance(value, _TYPES[typ]) or (isinstance(value, bool) and typ != "boolean")
    ):
        got = type(value).__name__
        got = {
            "str": "string",
            "int": "integer",
            "float": "number",
            "dict": "object",
            "list": "array",
            "bool": "boolean",
        }.get(got, got)
        errors.append(
            (
                path,
                "FieldValueTypeInvalid",
                f'Invalid value: "{got}": {path} in body must be of type {typ}: "{got}"',
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{e}"' for e in schema["enum"])
        errors.append(
            (
                path,
                "FieldValueNotSupported",
                f'Unsupported value: "{value}": supported values: {allowed}',
            )
        )
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                (
                    path,
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": {path} in body should match '
                    f"'{schema['pattern']}'",
                )
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(
                (
                    path,
                    "FieldValueTooLong",
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                (
                    path,
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": {path} in body should be at least '
                    f"{schema['minLength']} chars long",
                )
            )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(
                (
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {value}: {path} in body should be greater than "
                    f"or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(
                (
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {value}: {path} in body should be less than "
                    f"or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, dict):
        for req in schema.get("required") or []:
            if req not in value:
                errors.append((_join(path, req), "FieldValueRequired", "Required value"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                _check(sub, props[key], _join(path, key), errors)
            elif isinstance(extra, dict):
                _check(sub, extra, _join(path, key), errors)
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                (
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                )
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                (
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {len(value)}: {path} in body should have at least "
                    f"{schema['minItems']} items",
                )
            )
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", errors)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
