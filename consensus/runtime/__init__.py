"""The Trio runtime: hosting replicas under Trio, and real clusters over TCP.

* ``cluster``: ``open_cluster``, a deterministic simulated cluster driven from
  Trio (virtual time under ``MockClock``, real time otherwise);
* ``node``: ``NodeRunner``, one replica in its own nursery over a
  ``Transport``, handling inputs in batches with group commit
  (``LocalNetwork`` is the in-process transport);
* ``wire``, ``tcp``, ``tls``: the handshake and client frames, framed TCP
  streams with HMAC authentication, peer links with reconnect and bounded
  queues, optional TLS;
* ``clusterfile``: the cluster file every process of a real cluster reads;
* ``server``: ``NodeServer``, one node of a real cluster (``python -m
  consensus serve``);
* ``client``: ``connect``/``connect_sync``, the client library (sessions,
  leader discovery, retries, pipelining);
* ``launcher``: ``LocalCluster``, every node as a local OS process;
* ``cli``: ``python -m consensus serve|cluster|client|status``.
"""

from consensus.runtime.client import Client, SyncClient, connect, connect_sync
from consensus.runtime.cluster import (
    Cluster,
    ClusterClient,
    NodeHandle,
    OperationFailed,
    open_cluster,
)
from consensus.runtime.clusterfile import ClusterFile, load_cluster_file
from consensus.runtime.launcher import LocalCluster
from consensus.runtime.node import LocalNetwork, NodeRunner, Transport
from consensus.runtime.server import NodeServer

__all__ = [
    "Client",
    "Cluster",
    "ClusterClient",
    "ClusterFile",
    "LocalCluster",
    "LocalNetwork",
    "NodeHandle",
    "NodeRunner",
    "NodeServer",
    "OperationFailed",
    "SyncClient",
    "Transport",
    "connect",
    "connect_sync",
    "load_cluster_file",
    "open_cluster",
]
