"""The Trio runtime: hosting replicas under Trio.

* ``cluster``: ``open_cluster``, a deterministic simulated cluster driven from
  Trio (virtual time under ``MockClock``, real time otherwise);
* ``node``: ``NodeRunner``, one replica in its own nursery over a
  ``Transport`` (``LocalNetwork`` in-process).
"""

from consensus.runtime.cluster import (
    Cluster,
    ClusterClient,
    NodeHandle,
    OperationFailed,
    open_cluster,
)
from consensus.runtime.node import LocalNetwork, NodeRunner, Transport

__all__ = [
    "Cluster",
    "ClusterClient",
    "LocalNetwork",
    "NodeHandle",
    "NodeRunner",
    "OperationFailed",
    "Transport",
    "open_cluster",
]
