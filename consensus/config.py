"""Run configuration: TOML files loaded into validated attrs objects.

Theory of operation
-------------------
A config is a tree of frozen attrs classes.  ``structure(cls, mapping)``
builds one from plain data (a parsed TOML table), strictly: an unknown key,
a value of the wrong type or out of range raises ``ConfigError`` naming the
dotted key, the bad value and what is allowed.  Nothing is silently defaulted
except keys that are absent.

A cluster config names its protocol; ``options`` holds that protocol's own
options (checked against the plugin's options class when the cluster is
built, so a typo in ``[options]`` is caught before anything runs)::

    protocol = "raft"
    nodes = 3
    seed = 1

    [options]            # RaftOptions fields
    heartbeat_interval = 0.05

    [network]
    delay = { kind = "uniform", low = 0.001, high = 0.003 }
    loss = 0.01
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
    "ClientConfig",
    "ClusterConfig",
    "ConfigError",
    "Delay",
    "NetworkConfig",
    "StorageConfig",
    "load_cluster_config",
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


# -- config classes -------------------------------------------------------------

DELAY_KINDS = ("constant", "uniform", "normal", "matrix")


@attrs.frozen(kw_only=True)
class Delay:
    """One-way message delay in seconds.

    ``constant``: ``value``.  ``uniform``: between ``low`` and ``high``.
    ``normal``: ``mean`` and ``stddev``, clipped at ``low`` (default 0).
    ``matrix``: ``matrix[src][dst]`` seconds (a WAN latency matrix, one row per
    node), plus uniform ``jitter`` in [0, jitter).
    """

    kind: str = attrs.field(default="constant", validator=one_of(*DELAY_KINDS))
    value: float = attrs.field(default=0.001, validator=non_negative)
    low: float = attrs.field(default=0.0, validator=non_negative)
    high: float = attrs.field(default=0.0, validator=non_negative)
    mean: float = attrs.field(default=0.0, validator=non_negative)
    stddev: float = attrs.field(default=0.0, validator=non_negative)
    matrix: tuple[tuple[float, ...], ...] = ()
    jitter: float = attrs.field(default=0.0, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        if self.kind == "uniform" and self.high < self.low:
            raise ConfigError(f"high: must be >= low ({self.low}), got {self.high}")
        if self.kind == "matrix":
            if not self.matrix:
                raise ConfigError("matrix: a 'matrix' delay needs a non-empty matrix")
            n = len(self.matrix)
            for i, row in enumerate(self.matrix):
                if len(row) != n:
                    raise ConfigError(f"matrix: row {i} has {len(row)} entries, expected {n}")
                bad = [v for v in row if not v >= 0]  # also catches NaN
                if bad:
                    raise ConfigError(f"matrix: row {i}: delays must be >= 0, got {bad[0]!r}")

    @classmethod
    def constant(cls, value: float) -> Delay:
        return cls(kind="constant", value=value)

    @classmethod
    def uniform(cls, low: float, high: float) -> Delay:
        return cls(kind="uniform", low=low, high=high)

    @classmethod
    def normal(cls, mean: float, stddev: float, low: float = 0.0) -> Delay:
        return cls(kind="normal", mean=mean, stddev=stddev, low=low)

    @classmethod
    def latency_matrix(cls, matrix: Any, jitter: float = 0.0) -> Delay:
        return cls(
            kind="matrix",
            matrix=tuple(tuple(float(v) for v in row) for row in matrix),
            jitter=jitter,
        )

    def mean_delay(self, nodes: int) -> float:
        """The mean one-way delay, for sizing timeouts."""
        if self.kind == "constant":
            return self.value
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "normal":
            return max(self.mean, self.low)
        cells = [v for row in self.matrix[:nodes] for v in row[:nodes]]
        return sum(cells) / len(cells) + self.jitter / 2


@attrs.frozen(kw_only=True)
class NetworkConfig:
    """The simulated network: delays and faults, every draw from the seeded RNG.

    ``loss``: probability a message is dropped.  ``duplicate``: probability it
    is delivered twice.  ``reorder``: probability it is held back by an extra
    uniform delay in [0, ``reorder_delay``), so later messages overtake it.
    ``client_delay``: one-way delay between a client and the node it talks to.
    """

    delay: Delay = attrs.Factory(lambda: Delay.uniform(0.0005, 0.0015))
    loss: float = attrs.field(default=0.0, validator=probability)
    duplicate: float = attrs.field(default=0.0, validator=probability)
    reorder: float = attrs.field(default=0.0, validator=probability)
    reorder_delay: float = attrs.field(default=0.01, validator=non_negative)
    client_delay: float = attrs.field(default=0.0, validator=non_negative)


@attrs.frozen(kw_only=True)
class StorageConfig:
    """Where replicas persist: ``memory`` (survives simulated crashes) or ``wal``.

    With ``wal``, node ``i`` writes ``directory/node-i.wal`` with the given
    fsync policy (``always``, ``batch`` or ``never``).
    """

    kind: str = attrs.field(default="memory", validator=one_of("memory", "wal"))
    directory: str = "data"
    fsync: str = attrs.field(default="always", validator=one_of("always", "batch", "never"))


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Client behaviour: ``timeout`` before retrying at another node,
    ``backoff`` before retrying after a rejection without a usable leader
    hint, and how many attempts before the outcome is recorded as unknown."""

    timeout: float = attrs.field(default=0.5, validator=positive)
    backoff: float = attrs.field(default=0.02, validator=non_negative)
    max_attempts: int = attrs.field(default=50, validator=in_range(1))


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """A cluster: protocol, size, seed, protocol options, network and storage.

    ``options`` is a mapping of the protocol's option names to values, or the
    protocol's options object itself.  ``wire`` chooses whether simulated
    messages travel as Python objects (``"objects"``, fastest; sizes still
    counted) or are encoded and decoded by the codec (``"bytes"``).
    ``snapshot_every``: take a state-machine snapshot and let the protocol
    compact its log every that many applied entries (0: never).
    ``members``: the initial voting configuration, a subset of the node ids
    ``0 .. nodes-1`` (empty: all of them); the other nodes start as spares a
    membership change can add (protocols with ``ProtocolSpec.membership``).
    """

    protocol: str = "raft"
    nodes: int = attrs.field(default=3, validator=in_range(1, 99))
    seed: int = 0
    options: Any = attrs.Factory(dict)
    network: NetworkConfig = attrs.Factory(NetworkConfig)
    storage: StorageConfig = attrs.Factory(StorageConfig)
    client: ClientConfig = attrs.Factory(ClientConfig)
    wire: str = attrs.field(default="objects", validator=one_of("objects", "bytes"))
    snapshot_every: int = attrs.field(default=0, validator=non_negative)
    members: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        outside = [m for m in self.members if not 0 <= m < self.nodes]
        if outside:
            raise ConfigError(
                f"members: {outside[0]} is not a node id; nodes are 0..{self.nodes - 1}"
            )
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"members: duplicates in {list(self.members)}")
        delay = self.network.delay
        if delay.kind == "matrix" and len(delay.matrix) < self.nodes:
            raise ConfigError(
                f"network.delay.matrix: has {len(delay.matrix)} rows, need one per node"
                f" ({self.nodes})"
            )

    @property
    def initial_members(self) -> tuple[int, ...]:
        return tuple(sorted(self.members)) if self.members else tuple(range(self.nodes))

    def protocol_spec(self) -> Any:
        from consensus.registry import UnknownProtocolError, get_protocol

        try:
            return get_protocol(self.protocol)
        except UnknownProtocolError as exc:
            raise ConfigError(f"protocol: {exc}") from None

    def protocol_options(self, path: str = "options") -> Any:
        """The protocol's options object, validated against its options class.

        ``path`` names the options table in error messages."""
        spec = self.protocol_spec()
        if isinstance(self.options, spec.options):
            return self.options
        if not isinstance(self.options, dict):
            raise ConfigError(
                f"{path}: expected a table of {spec.name} options or a"
                f" {spec.options.__name__}, got {type(self.options).__name__}"
            )
        return structure(spec.options, self.options, path=path)


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
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
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


def load_cluster_config(source: str | Path | dict[str, Any] | ClusterConfig) -> ClusterConfig:
    """A ``ClusterConfig`` from a TOML path, a mapping or a config object.

    The protocol's options are checked here too, so every error surfaces
    before a run starts.
    """
    if isinstance(source, ClusterConfig):
        config = source
    else:
        data = source if isinstance(source, dict) else load_toml(source)
        config = structure(ClusterConfig, data)
    config.protocol_options()
    return config
