"""Building blocks shared by the Paxos plugins (``paxos`` and ``multipaxos``).

* ``ballot``: ``Ballot``, totally ordered (round, node) proposal numbers;
* ``acceptor``: the Paxos acceptor role per log slot (promises and accepts,
  persisted before they are acknowledged).
"""
