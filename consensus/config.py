"""Run configuration: TOML files loaded into validated attrs objects.

Theory of operation
-------------------
A config is a tree of frozen attrs classes, built from plain data (a parsed
TOML table) by ``consensus.schema.structure``, strictly: an unknown key, a
value of the wrong type or out of range raises ``ConfigError`` naming the
dotted key, the bad value and what is allowed.  (``ConfigError``, the
validators and ``structure`` live in ``consensus.schema`` and are re-exported
here.)

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

from pathlib import Path
from typing import Any

import attrs

from consensus.costs import CostConfig, CostRow
from consensus.registry import ProtocolSpec, UnknownProtocolError, get_protocol
from consensus.schema import (
    ConfigError,
    in_range,
    load_toml,
    non_negative,
    one_of,
    positive,
    probability,
    structure,
)
from consensus.statemachine import KVStore

__all__ = [
    "ClientConfig",
    "ClusterConfig",
    "ConfigError",
    "CostConfig",
    "CostRow",
    "Delay",
    "MessageRule",
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


def _names(value: Any) -> tuple[str, ...]:
    # Message types by class name: a class, a name, or a list of either.
    if isinstance(value, (str, type)):
        value = (value,)
    return tuple(v if isinstance(v, str) else v.__name__ for v in value)


def _node_ids(value: Any) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


@attrs.frozen(kw_only=True)
class MessageRule:
    """Extra faults for some messages only: by type and by direction.

    A message matches when its class name is in ``types``, its sender in
    ``src`` and its receiver in ``dst`` (each empty: any).  A matching message
    is dropped with probability ``loss``, delivered twice with probability
    ``duplicate``, and delayed by a draw from ``delay`` on top of the link's
    own delay.  Every draw comes from the network's seeded generator.
    Several rules may match one message; each applies.  ``types`` accepts
    classes too (``types=[AppendEntriesResponse]`` holds back Raft's replies
    only); they are kept by name, as a config file writes them::

        [[network.rules]]
        types = ["AppendEntriesResponse"]
        delay = { kind = "uniform", low = 0.05, high = 0.2 }
    """

    types: tuple[str, ...] = attrs.field(default=(), converter=_names)
    src: tuple[int, ...] = attrs.field(default=(), converter=_node_ids)
    dst: tuple[int, ...] = attrs.field(default=(), converter=_node_ids)
    loss: float = attrs.field(default=0.0, validator=probability)
    duplicate: float = attrs.field(default=0.0, validator=probability)
    delay: Delay | None = None


@attrs.frozen(kw_only=True)
class NetworkConfig:
    """The simulated network: delays and faults, every draw from the seeded RNG.

    ``loss``: probability a message is dropped.  ``duplicate``: probability it
    is delivered twice.  ``reorder``: probability it is held back by an extra
    uniform delay in [0, ``reorder_delay``), so later messages overtake it.
    ``client_delay``: one-way delay between a client and the node it talks to.
    ``rules``: faults for some message types and directions only
    (``MessageRule``), on top of the above.
    ``fifo``: links deliver in order, as TCP connections do: a message never
    arrives before the one sent before it on the same directed link (its
    arrival is the later of its own drawn arrival and the previous one's).
    Only ``reorder`` and a rule's ``delay`` (faults) let messages overtake,
    and a duplicate's second copy travels on its own.  ``false``: every
    message draws its delay independently (the simulator before FIFO links).
    ``kind``: ``"sim"`` (this simulated network) or ``"tcp"`` (real node
    processes on loopback, run by the benchmark harness, ``bench.tcprun``;
    the fault and delay settings above then do not apply).
    """

    kind: str = attrs.field(default="sim", validator=one_of("sim", "tcp"))
    delay: Delay = attrs.Factory(lambda: Delay.uniform(0.0005, 0.0015))
    loss: float = attrs.field(default=0.0, validator=probability)
    duplicate: float = attrs.field(default=0.0, validator=probability)
    reorder: float = attrs.field(default=0.0, validator=probability)
    reorder_delay: float = attrs.field(default=0.01, validator=non_negative)
    client_delay: float = attrs.field(default=0.0, validator=non_negative)
    rules: tuple[MessageRule, ...] = ()
    fifo: bool = True


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
    messages travel as Python objects (``"objects"``, fastest) or are encoded
    and decoded by the codec (``"bytes"``).  Bytes sent per message type
    (``Simulator.message_bytes``) are counted with ``"bytes"``, and with
    ``"objects"`` only when ``count_bytes`` is set: then every message is
    encoded once to be measured (the same sizes, at about the cost of the
    encoding) but still travels as an object.
    ``snapshot_every``: take a state-machine snapshot and let the protocol
    compact its log every that many applied entries (0: never).
    ``members``: the initial voting configuration, a subset of the node ids
    ``0 .. nodes-1`` (empty: all of them); the other nodes start as spares a
    membership change can add (protocols with ``ProtocolSpec.membership``).
    ``clock_drift``: per node, how fast its clock runs against real time
    (``0.01``: 1% fast, ``-0.01``: 1% slow; missing nodes: 0), so time-based
    mechanisms such as leases meet drifting clocks (``consensus.clock``).
    ``costs``: what a node pays in CPU, disk and link time for its work
    (``consensus.costs``; all zero, the default: inputs are handled
    instantly).  With costs on, a busy node queues what arrives and handles
    it as one batch of at most ``max_batch`` inputs when it is free, as the
    real runtime does, and ``pack_proposals`` > 1 packs the client requests
    of a batch into log entries of up to that many requests
    (``ReplicaHost.accept_many``; 0: one entry per request).  Both only
    matter with costs on: with costs off nothing ever waits to be batched.
    ``max_sessions``, ``session_ttl``: client session expiry in every node's
    key-value store (0: never; ``consensus.statemachine``): keep at most that
    many sessions, least recently used dropped first, and drop a session whose
    last request is ``session_ttl`` applied entries old; a request of an
    expired session is answered ``session_expired``.
    """

    protocol: str = "raft"
    nodes: int = attrs.field(default=3, validator=in_range(1, 99))
    seed: int = 0
    options: Any = attrs.Factory(dict)
    network: NetworkConfig = attrs.Factory(NetworkConfig)
    storage: StorageConfig = attrs.Factory(StorageConfig)
    client: ClientConfig = attrs.Factory(ClientConfig)
    wire: str = attrs.field(default="objects", validator=one_of("objects", "bytes"))
    count_bytes: bool = False
    snapshot_every: int = attrs.field(default=0, validator=non_negative)
    members: tuple[int, ...] = ()
    clock_drift: tuple[float, ...] = ()
    costs: CostConfig = attrs.Factory(CostConfig)
    max_batch: int = attrs.field(default=1024, validator=in_range(1))
    pack_proposals: int = attrs.field(default=0, validator=non_negative)
    max_sessions: int = attrs.field(default=0, validator=non_negative)
    session_ttl: int = attrs.field(default=0, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        outside = [m for m in self.members if not 0 <= m < self.nodes]
        if outside:
            raise ConfigError(
                f"members: {outside[0]} is not a node id; nodes are 0..{self.nodes - 1}"
            )
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"members: duplicates in {list(self.members)}")
        if len(self.clock_drift) > self.nodes:
            raise ConfigError(f"clock_drift: {len(self.clock_drift)} rates for {self.nodes} nodes")
        slow = [d for d in self.clock_drift if not d > -1]
        if slow:
            raise ConfigError(
                f"clock_drift: a drift must be > -1 (a clock that runs), got {slow[0]}"
            )
        delay = self.network.delay
        if delay.kind == "matrix" and len(delay.matrix) < self.nodes:
            raise ConfigError(
                f"network.delay.matrix: has {len(delay.matrix)} rows, need one per node"
                f" ({self.nodes})"
            )

    @property
    def initial_members(self) -> tuple[int, ...]:
        return tuple(sorted(self.members)) if self.members else tuple(range(self.nodes))

    def protocol_spec(self) -> ProtocolSpec:
        try:
            return get_protocol(self.protocol)
        except UnknownProtocolError as exc:
            raise ConfigError(f"protocol: {exc}") from None

    def state_machine(self) -> KVStore | None:
        """A key-value store with this config's session expiry; ``None`` (the
        host's default store) when sessions never expire."""
        if self.max_sessions or self.session_ttl:
            return KVStore(max_sessions=self.max_sessions, session_ttl=self.session_ttl)
        return None

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
