"""The cluster file: what every node, client and launcher of a real cluster reads.

Theory of operation
-------------------
One TOML file describes one cluster, and every process of it reads the same
file: ``serve`` picks its own node by id, clients and ``status`` dial the
addresses, ``cluster`` starts one process per node.  Example::

    protocol = "raft"
    secret = "change me"          # or secret_file = "secret.txt", or $CONSENSUS_SECRET
    data_dir = "data/raft"        # node i keeps its write-ahead log in data_dir/node-i/
    fsync = "batch"               # batch | always | never

    [options]                     # the protocol's own options
    heartbeat_interval = 0.05

    [[nodes]]
    id = 0
    address = "127.0.0.1:7100"
    [[nodes]]
    id = 1
    address = "127.0.0.1:7101"
    [[nodes]]
    id = 2
    address = "127.0.0.1:7102"

Relative paths (``data_dir``, ``secret_file``, TLS files) are relative to
the cluster file's folder, so every process finds the same files whatever
its working directory.

``fsync``: ``batch`` (group commit: a node handles a batch of inputs, writes
every record they produced, fsyncs once, and only then sends their messages
and answers), ``always`` (one fsync per input: no batching, for comparison)
or ``never`` (the OS decides; unsafe under power loss, for benchmarks).
Either of the first two keeps the contract: nothing leaves before what it
promises is on disk.  ``wal_preallocate`` (bytes, default 16 MiB; 0: off):
each node's log file is extended that far ahead of its records, so a sync
is an ``fdatasync`` with no metadata to commit (``consensus.wal``).

``max_sessions``, ``session_ttl`` (default 0: never): client sessions
expire, as ``ClusterConfig``'s do (``consensus.statemachine``): at most
``max_sessions`` are kept, least recently used dropped first, and one whose
last request is ``session_ttl`` applied entries old is dropped; a request of
an expired session is answered ``session_expired`` (the client library
raises ``OperationFailed`` and opens a new session for its next command).

Every key is validated as config files are (``consensus.schema``): an
unknown key or a bad value is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from consensus.codec import DEFAULT_MAX_FRAME
from consensus.config import ClientConfig, ClusterConfig
from consensus.registry import ProtocolSpec
from consensus.schema import ConfigError, in_range, load_toml, one_of, positive, structure

__all__ = [
    "ClusterFile",
    "Limits",
    "NodeAddress",
    "TlsConfig",
    "load_cluster_file",
    "parse_address",
]

SECRET_ENV = "CONSENSUS_SECRET"


def parse_address(text: str, where: str = "address") -> tuple[str, int]:
    """``"host:port"`` as ``(host, port)``; a clear ``ConfigError`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: expected 'host:port', got {text!r}")
    host = host.strip("[]")  # [::1]:7000
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port must be 0..65535, got {port}")
    return host, port


def _valid_address(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    parse_address(value, attribute.name)


@attrs.frozen(kw_only=True)
class NodeAddress:
    """One node: its id and the ``host:port`` it listens on (peers and clients)."""

    id: int = attrs.field(validator=in_range(0, 98))
    address: str = attrs.field(validator=_valid_address)

    @property
    def host(self) -> str:
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]


@attrs.frozen(kw_only=True)
class TlsConfig:
    """TLS on every connection (``trio.SSLStream``): this node's certificate and
    key, and the CA that signed every node's certificate.  Nodes verify each
    other against ``ca``; ``server_name`` is the name certificates carry."""

    cert: str
    key: str
    ca: str
    server_name: str = "consensus"


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds that keep a node responsive under overload.

    ``max_frame``: largest frame accepted or sent (bytes).  ``peer_queue``:
    messages queued for one peer before new ones are dropped (and counted).
    ``client_queue``: replies queued for one client connection before the
    connection is closed as too slow.  ``max_pending``: client requests
    admitted at a node and not yet answered; beyond it new requests are
    answered ``busy`` at once.  ``max_batch``: inputs handled per loop
    iteration before messages go out (the group-commit batch).
    ``handshake_timeout``: seconds a new connection has to authenticate.
    """

    max_frame: int = attrs.field(default=DEFAULT_MAX_FRAME, validator=in_range(1024))
    peer_queue: int = attrs.field(default=20_000, validator=in_range(1))
    client_queue: int = attrs.field(default=100_000, validator=in_range(1))
    max_pending: int = attrs.field(default=20_000, validator=in_range(1))
    max_batch: int = attrs.field(default=1024, validator=in_range(1))
    pack_proposals: int = attrs.field(default=256, validator=in_range(0))
    handshake_timeout: float = attrs.field(default=5.0, validator=positive)


@attrs.frozen(kw_only=True)
class ClusterFile:
    """A real cluster, as read from its TOML file (see the module docstring)."""

    protocol: str = "raft"
    nodes: tuple[NodeAddress, ...] = ()
    options: dict[str, Any] = attrs.Factory(dict)
    secret: str = ""
    secret_file: str = ""
    data_dir: str = "data"
    fsync: str = attrs.field(default="batch", validator=one_of("batch", "always", "never"))
    wal_preallocate: int = attrs.field(default=16 << 20, validator=in_range(0))
    seed: int = 0
    snapshot_every: int = attrs.field(default=0, validator=in_range(0))
    max_sessions: int = attrs.field(default=0, validator=in_range(0))
    session_ttl: int = attrs.field(default=0, validator=in_range(0))
    client: ClientConfig = attrs.Factory(lambda: ClientConfig(timeout=2.0, backoff=0.02))
    limits: Limits = attrs.Factory(Limits)
    tls: TlsConfig | None = None
    log_level: str = attrs.field(
        default="info", validator=one_of("debug", "info", "warning", "error")
    )
    #: The folder relative paths are resolved against (the file's own folder).
    base: str = attrs.field(default=".", eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("nodes: list at least one node ([[nodes]] with id and address)")
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"nodes: duplicate node ids in {ids}")
        if sorted(ids) != list(range(len(ids))):
            raise ConfigError(f"nodes: ids must be 0..{len(ids) - 1}, got {sorted(ids)}")
        addresses = [n.address for n in self.nodes]
        if len(set(addresses)) != len(addresses):
            raise ConfigError(f"nodes: two nodes share an address in {addresses}")
        if self.secret and self.secret_file:
            raise ConfigError("secret: give either secret or secret_file, not both")
        # Validates protocol and options now, so a typo fails before anything starts.
        self.cluster_config()

    # -- derived --------------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(sorted(n.id for n in self.nodes))

    def node(self, node_id: int) -> NodeAddress:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"--node: no node {node_id} in the cluster file; ids are {self.node_ids}")

    def path(self, value: str) -> Path:
        """``value`` as a path, relative ones against the cluster file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base) / p

    def node_dir(self, node_id: int) -> Path:
        return self.path(self.data_dir) / f"node-{node_id}"

    def secret_bytes(self) -> bytes:
        """The cluster secret: ``secret``, else ``secret_file``, else ``$CONSENSUS_SECRET``."""
        if self.secret:
            return self.secret.encode()
        if self.secret_file:
            path = self.path(self.secret_file)
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"secret_file: cannot read {path}: {exc.strerror}") from None
            if not text:
                raise ConfigError(f"secret_file: {path} is empty")
            return text.encode()
        env = os.environ.get(SECRET_ENV, "")
        if env:
            return env.encode()
        raise ConfigError(
            f"secret: no cluster secret; set secret or secret_file in the cluster file,"
            f" or ${SECRET_ENV}"
        )

    def cluster_config(self) -> ClusterConfig:
        """The same cluster as a ``ClusterConfig`` (protocol, options, size, seed)."""
        try:
            config = ClusterConfig(
                protocol=self.protocol,
                nodes=len(self.nodes),
                seed=self.seed,
                options=dict(self.options),
                client=self.client,
                snapshot_every=self.snapshot_every,
                max_sessions=self.max_sessions,
                session_ttl=self.session_ttl,
            )
            config.protocol_options()
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(
                text if text.startswith(("protocol", "options")) else f"{text}"
            ) from None
        return config

    def spec(self) -> ProtocolSpec:
        return self.cluster_config().protocol_spec()

    def protocol_options(self) -> Any:
        return self.cluster_config().protocol_options()


def load_cluster_file(source: str | Path | dict[str, Any] | ClusterFile) -> ClusterFile:
    """A validated ``ClusterFile`` from a TOML path, a mapping or an object."""
    if isinstance(source, ClusterFile):
        return source
    if isinstance(source, dict):
        data = dict(source)
        data.setdefault("base", ".")
    else:
        path = Path(source)
        data = load_toml(path)
        if "base" in data:
            raise ConfigError(f"{path}: base: unknown key")
        data["base"] = str(path.resolve().parent)
    return structure(ClusterFile, data)
