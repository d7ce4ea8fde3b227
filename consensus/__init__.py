"""consensus: one replicated-log abstraction for comparing consensus protocols.

What lives where (each package imports only the ones above it in this list):

* ``consensus`` itself: the abstraction a plugin author needs: the replica
  contract (``replica``), ``ReplicaHost`` (``host``), commands, the KV state
  machine, log, quorums, codec, storage and write-ahead log, config and its
  schema, the plugin registry;
* ``consensus.checker``: histories and the linearizability checker;
* ``consensus.sim``: the deterministic simulator and its network model;
* ``consensus.runtime``: Trio: ``open_cluster``, ``NodeRunner`` over
  transports, and real clusters over TCP (server, client, launcher,
  ``python -m consensus``);
* ``consensus.testing``: the conformance kit for plugin authors (rules,
  chaos runs, the ``--consensus-plugin`` pytest plugin); not imported here.

The public surface, re-exported here; everything else is internal:

* commands and requests: ``Get``, ``Put``, ``Append``, ``CompareAndSet``,
  ``Delete``, ``Request``, ``Noop``, ``Batch``;
* the plugin contract: ``Replica``, ``ReplicaContext``, ``Outputs``,
  ``Committed``, ``Rejection``, ``ReadReady``, ``Answer``, ``StateSnapshot``,
  ``ProtocolSpec``, ``register``, ``get_protocol``, ``available_protocols``;
* shared machinery for plugins: ``Log``, ``Majority``, ``JointQuorum``,
  ``FlexibleQuorum``, ``KVStore``;
* configuration: ``ClusterConfig``, ``NetworkConfig``, ``Delay``,
  ``MessageRule``, ``StorageConfig``, ``ClientConfig``, ``load_cluster_config``,
  ``ConfigError``;
* wire and storage: ``Codec``, ``CodecError``, ``MemoryStorage``,
  ``DurableStorage``, ``WriteAheadLog``;
* running: ``Simulator`` (deterministic, synchronous; ``propose`` answers a
  ``ProposeResult``), ``open_cluster`` (Trio), ``History``, ``Operation``;
* real clusters: ``connect`` / ``connect_sync`` (the client library),
  ``ClusterFile``, ``load_cluster_file``, ``LocalCluster``, ``Client``,
  ``SyncClient``;
* safety: ``check`` (linearizability of a history).
"""

from consensus.checker.history import History, Operation
from consensus.checker.linearizability import CheckResult, check
from consensus.codec import Codec, CodecError
from consensus.commands import (
    Append,
    Batch,
    ChangeMembership,
    CompareAndSet,
    Delete,
    Get,
    Noop,
    Put,
    Request,
)
from consensus.config import (
    ClientConfig,
    ClusterConfig,
    ConfigError,
    Delay,
    MessageRule,
    NetworkConfig,
    StorageConfig,
    load_cluster_config,
)
from consensus.host import ProposeResult
from consensus.log import Log
from consensus.quorum import FlexibleQuorum, JointQuorum, Majority
from consensus.registry import ProtocolSpec, available_protocols, get_protocol, register
from consensus.replica import (
    Answer,
    Committed,
    Outputs,
    ReadReady,
    Rejection,
    Replica,
    ReplicaContext,
    StateSnapshot,
)
from consensus.runtime import (
    Client,
    ClusterFile,
    LocalCluster,
    SyncClient,
    connect,
    connect_sync,
    load_cluster_file,
)
from consensus.runtime.cluster import Cluster, OperationFailed, open_cluster
from consensus.sim.simulator import Simulator
from consensus.statemachine import KVStore
from consensus.storage import MemoryStorage
from consensus.wal import DurableStorage, WriteAheadLog

__all__ = [
    "Append",
    "Client",
    "ClusterFile",
    "LocalCluster",
    "SyncClient",
    "connect",
    "connect_sync",
    "load_cluster_file",
    "Answer",
    "Batch",
    "ChangeMembership",
    "CheckResult",
    "Codec",
    "CodecError",
    "DurableStorage",
    "MemoryStorage",
    "WriteAheadLog",
    "check",
    "ClientConfig",
    "Cluster",
    "ClusterConfig",
    "Committed",
    "CompareAndSet",
    "ConfigError",
    "Delay",
    "Delete",
    "FlexibleQuorum",
    "Get",
    "History",
    "JointQuorum",
    "KVStore",
    "Log",
    "Majority",
    "MessageRule",
    "NetworkConfig",
    "Noop",
    "Operation",
    "OperationFailed",
    "Outputs",
    "ProposeResult",
    "ProtocolSpec",
    "Put",
    "ReadReady",
    "Rejection",
    "Replica",
    "ReplicaContext",
    "Request",
    "Simulator",
    "StateSnapshot",
    "StorageConfig",
    "available_protocols",
    "get_protocol",
    "load_cluster_config",
    "open_cluster",
    "register",
]
