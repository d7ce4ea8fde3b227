"""Paxos ballots: totally ordered proposal numbers, unique per node.

Theory of operation
-------------------
Paxos needs proposal numbers that are totally ordered and that no two
proposers ever share ("Paxos Made Simple", section 2.2: "different proposers
choose their numbers from disjoint sets").  A ``Ballot`` is the pair
``(round, node)`` compared lexicographically: a node only ever issues ballots
carrying its own id, so two nodes can never issue the same ballot, and any
node can outbid any ballot it has seen with ``seen.next(me)``.

``ZERO`` sorts below every ballot a node can issue (rounds start at 1); it is
what an acceptor has promised before it has heard anything.

Ballots are plain frozen values shared by the ``multipaxos`` and ``paxos``
plugins (messages and durable records carry them), so the codec must know the
type: both plugins list ``Ballot`` in their ``ProtocolSpec.messages``.
"""

from __future__ import annotations

import attrs

__all__ = ["Ballot", "ZERO"]


@attrs.frozen(kw_only=True, order=False)
class Ballot:
    """A proposal number ``(round, node)``, ordered by round then node.

    Invariant: a node only creates ballots whose ``node`` is its own id, so a
    ballot names its proposer and is unique to it.
    """

    round: int
    node: int

    # Hand-written comparisons: ballots are compared on every message, and
    # attrs' generated ordering (building tuples through a generic helper) was
    # the largest single cost in simulator profiles.
    def __lt__(self, other: Ballot) -> bool:
        return self.round < other.round or (self.round == other.round and self.node < other.node)

    def __le__(self, other: Ballot) -> bool:
        return self.round < other.round or (self.round == other.round and self.node <= other.node)

    def __gt__(self, other: Ballot) -> bool:
        return self.round > other.round or (self.round == other.round and self.node > other.node)

    def __ge__(self, other: Ballot) -> bool:
        return self.round > other.round or (self.round == other.round and self.node >= other.node)

    def next(self, node: int) -> Ballot:
        """A ballot of ``node`` in the next round, so higher than this one."""
        return Ballot(round=self.round + 1, node=node)

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


#: Below every issued ballot (rounds start at 1): "promised nothing yet".
ZERO = Ballot(round=0, node=-1)
