"""Typed options from free-form manifest maps, with errors that name the field and the value.

Each prober declares its ``with:`` block as a frozen dataclass whose fields are made with
:func:`option`; :func:`parse_options` checks a YAML mapping against it and :func:`describe`
lists the options for ``kubeprober probers``. Keys are the camelCase of the field names, as
in every Kubernetes manifest. Validation happens at load time, so bad config fails on load.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from kubeprober.probers.durations import parse_duration

T = TypeVar("T")


class SpecError(ValueError):
    """A manifest value that cannot be used; ``path`` is like ``spec.checks[2].with.port``.

    One SpecError may stand for several (see :meth:`combine`): ``errors`` lists them, ``str()``
    joins them with "; ", and ``path`` and ``message`` are the first one's.
    """

    def __init__(self, path: str, message: str) -> None:
        # One line, whatever the manifest's keys hold ("\n" in a key is shown as \n).
        super().__init__(_one_line(f"{path}: {message}" if path else message))
        self.path = path
        self.message = message
        self.errors: tuple[SpecError, ...] = (self,)

    @classmethod
    def combine(cls, errors: Iterable[SpecError]) -> SpecError:
        """Return one error for all of ``errors`` (at least one), so none goes unreported."""
        flat = [leaf for error in errors for leaf in error.errors]
        if len(flat) == 1:
            return flat[0]
        combined = cls(flat[0].path, flat[0].message)
        combined.args = ("; ".join(str(e) for e in flat),)
        combined.errors = tuple(flat)
        return combined


class SpecErrors:
    """Collects SpecErrors so a manifest's every problem is reported at once, not the first."""

    def __init__(self) -> None:
        self.found: list[SpecError] = []

    def attempt(self, parse: Callable[..., T], *args: Any, default: T, **kwargs: Any) -> T:
        """Return ``parse(*args, **kwargs)``, or note its SpecError and return ``default``."""
        try:
            return parse(*args, **kwargs)
        except SpecError as exc:
            self.found.append(exc)
            return default

    def add(self, path: str, message: str) -> None:
        """Note one problem."""
        self.found.append(SpecError(path, message))

    def check(self) -> None:
        """Raise every problem noted so far as one SpecError."""
        if self.found:
            raise SpecError.combine(self.found)


class Duration(float):
    """Seconds, written Go-style in manifests (``30s``, ``1h30m``) or as a plain number."""


def option(
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    key: str | None = None,
) -> Any:
    """Declare one option: its one-line ``doc``, default and bounds (inclusive)."""
    meta = {"doc": doc, "min": minimum, "max": maximum, "key": key}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def camel(name: str) -> str:
    """``warn_days`` -> ``warnDays``: manifest keys follow Kubernetes naming."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: object) -> str:
    """Render a bad value for an error message, JSON-style (strings quoted)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_options(cls: type[T], data: object, path: str) -> T:
    """Build dataclass ``cls`` from mapping ``data``; raise SpecError naming ``path``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected a map, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.metadata.get("key") or camel(f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    errors = SpecErrors()
    known = ", ".join(fields) or "none"
    for unknown in (k for k in data if k not in fields):
        errors.add(_join(path, str(unknown)), f"unknown option (known: {known})")
    values: dict[str, Any] = {}
    for key, f in fields.items():
        if key in data:
            values[f.name] = errors.attempt(
                _convert, hints[f.name], data[key], _join(path, key), f.metadata, default=None
            )
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.add(_join(path, key), "required")
    errors.check()  # cross-field checks below assume every field converted
    try:
        return cls(**values)
    except ValueError as exc:  # a __post_init__ cross-field check
        if isinstance(exc, SpecError):
            raise SpecError(_join(path, exc.path), exc.message) from None
        raise SpecError(path, str(exc)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: object, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path, meta)
    if tp is Any or tp is object:
        return value
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise SpecError(path, f"expected one of {choices}, got {shown(value)}")
        return value
    if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
        raise TypeError(f"option type {tp!r} at {path}: use tuple[X, ...]")
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise SpecError(path, f"expected a list, got {shown(value)}")
        errors = SpecErrors()
        items = tuple(
            errors.attempt(_convert, args[0], v, f"{path}[{i}]", {}, default=None)
            for i, v in enumerate(value)
        )
        errors.check()
        return items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SpecError(path, f"expected a map, got {shown(value)}")
        return {str(k): _convert(args[1], v, _join(path, str(k)), {}) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return parse_options(tp, value, path)  # type: ignore[arg-type]
    if tp is Duration:
        return Duration(_duration(value, path, meta))
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {shown(value)}")
        return value
    if tp is int or tp is float:
        return _number(tp, value, path, meta)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {shown(value)}")
        return value
    raise TypeError(f"option type {tp!r} at {path} is not supported")


def _number(tp: type, value: object, path: str, meta: Mapping[str, Any]) -> float:
    lo, hi = meta.get("min"), meta.get("max")
    kind = "integer" if tp is int else "number"
    if lo is not None and hi is not None:
        want = f"{kind} {lo:g}-{hi:g}"
    elif lo is not None:
        want = f"{kind} >= {lo:g}"
    elif hi is not None:
        want = f"{kind} <= {hi:g}"
    else:
        want = kind
    ok_type = int if tp is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise SpecError(path, f"expected {want}, got {shown(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SpecError(path, f"expected {want}, got {shown(value)}")
    return value


def _duration(value: object, path: str, meta: Mapping[str, Any]) -> float:
    if isinstance(value, bool):
        seconds = -1.0
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = -1.0
    else:
        seconds = -1.0
    lo, hi = meta.get("min"), meta.get("max")
    if seconds < 0 or (lo is not None and seconds < lo) or (hi is not None and seconds > hi):
        bound = f" of at least {lo:g}s" if lo is not None else ""
        raise SpecError(path, f"expected a duration like 30s or 1m30s{bound}, got {shown(value)}")
    return seconds


@dataclass(frozen=True)
class OptionDoc:
    """One line of ``kubeprober probers``: key, type, default and what it does."""

    key: str
    type: str
    default: str
    doc: str


def describe(cls: type, prefix: str = "") -> list[OptionDoc]:
    """List the options of ``cls``, nested dataclasses flattened as ``steps[].url``."""
    hints = typing.get_type_hints(cls)
    out: list[OptionDoc] = []
    for f in dataclasses.fields(cls):
        key = prefix + (f.metadata.get("key") or camel(f.name))
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = shown(f.default) if f.default is not None else "-"
        elif f.default_factory is not dataclasses.MISSING:
            default = shown(f.default_factory())
        else:
            default = "required"
        out.append(OptionDoc(key, _type_name(tp), default, f.metadata.get("doc", "")))
        inner = _dataclass_in(tp)
        if inner is not None:
            suffix = "[]." if typing.get_origin(tp) in (list, tuple) else "."
            out.extend(describe(inner, key + suffix))
    return out


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in args if a is not type(None))
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "object"
    if tp is Duration:
        return "duration"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(tp, "any")
