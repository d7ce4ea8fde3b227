"""Protocol plugins, each behind the one contract in ``consensus.replica``.

* ``raft``: Raft with PreVote, CheckQuorum, ReadIndex, snapshots and
  joint-consensus membership changes;
* ``multipaxos``: Multi-Paxos with a stable leader;
* ``paxos``: independent single-decree Paxos instances, one per log slot;
* ``sequencer``: a fixed-leader, no-failover baseline;
* ``primarybackup`` (``primary-backup``): primary-backup replication with a
  failover monitor, an unsafe baseline;
* ``nwr``: leaderless Dynamo-style N/W/R quorums, an unsafe baseline;
* ``paxos_common``: the acceptor and ballots both Paxos plugins share.

Each plugin package exports ``PROTOCOL`` (a ``consensus.ProtocolSpec``),
named in the ``consensus.protocols`` entry points.  Nothing here does I/O.
"""
