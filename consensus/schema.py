"""Strict structuring of plain data (parsed TOML) into attrs classes.

Theory of operation
-------------------
``structure(cls, mapping)`` builds attrs class ``cls`` from plain data,
strictly: an unknown key, a value of the wrong type or out of range raises
``ConfigError`` naming the dotted key, the bad value and what is allowed.
Nothing is silently defaulted except keys that are absent.  The validators
(``in_range``, ``one_of``, ...) raise the same error from attrs fields.

This module sits below everything that reads configuration (the plugin
contract, the registry, cluster configs, a plugin's options, the harness),
and imports nothing of the project's.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Union

import attrs

__all__ = [
    "ConfigError",
    "in_range",
    "load_toml",
    "non_negative",
    "one_of",
    "positive",
    "probability",
    "structure",
]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path or 'config'}: {message}")


# -- validators ---------------------------------------------------------------


def in_range(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False):
    """An attrs validator: ``lo <= value <= hi`` (``lo < value`` with ``open_lo``),
    raising ``ConfigError`` that names the field, the bounds and the value."""

    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        bad = (
            (lo is not None and (value <= lo if open_lo else value < lo))
            or (hi is not None and value > hi)
            or (isinstance(value, float) and math.isnan(value))
        )
        if bad:
            lo_s = "" if lo is None else (f"> {lo}" if open_lo else f">= {lo}")
            hi_s = "" if hi is None else f"<= {hi}"
            allowed = " and ".join(s for s in (lo_s, hi_s) if s)
            raise ConfigError(f"{attribute.name}: must be {allowed}, got {value!r}")

    return check


def one_of(*choices: str):
    """An attrs validator: the value is one of ``choices`` (named in the error)."""

    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{attribute.name}: must be one of {allowed}, got {value!r}")

    return check


non_negative = in_range(0)
positive = in_range(0, open_lo=True)
probability = in_range(0, 1)


# -- structuring ----------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Convert plain TOML data ``value`` to type ``tp``, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if attrs.has(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _fail(path, f"expected a table ({_type_name(tp)}), got {value!r}")
        return structure(tp, value, path=path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else _fail(path, f"invalid value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(path, f"expected {len(args)} items, got {len(value)}")
            items = [
                _convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            ]
        else:
            inner = args[0] if args else Any
            items = [_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, f"expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {value!r}")
        return value
    raise _fail(path, f"unsupported config type {tp!r}")


def structure(cls: type, data: dict[str, Any], *, path: str = "") -> Any:
    """Build attrs class ``cls`` from ``data``; unknown keys and bad values raise."""
    fields = attrs.fields_dict(cls)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(f for f in fields if not f.startswith("_")))
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown key; allowed keys: {allowed}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        kwargs[name] = _convert(hints.get(name, Any), value, sub)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _fail(path, str(exc)) from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
