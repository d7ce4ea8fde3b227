"""The deterministic simulator: a whole cluster on virtual time in one thread.

* ``simulator``: ``Simulator`` (one event heap ordered by virtual time and
  sequence number) and ``SimClient``;
* ``network``: ``NetworkModel``, the seeded delays, loss, duplication,
  reordering, partitions and cuts;
* ``clients``: the retry policy simulated clients share;
* ``servers``: the cost model at work (``consensus.costs``): each node a server
  with a queue, batches, CPU, fsync and link time; with ``clienthosts`` (client
  hosts, one machine's cores and disks), ``costrows`` (cost rows compiled per
  class) and ``nodestats`` (what each node did, per interval of virtual time);
* ``trace``: the message trace of ``Simulator(..., trace=True)`` (every
  message's send and arrival or drop, client operations, role changes).
"""

from consensus.sim.network import NetworkModel
from consensus.sim.simulator import SimClient, Simulator
from consensus.sim.trace import TRACE_COLUMNS, MessageTrace

__all__ = ["TRACE_COLUMNS", "MessageTrace", "NetworkModel", "SimClient", "Simulator"]
