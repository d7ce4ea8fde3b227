"""The proposer of one single-decree Paxos instance (one log slot).

Theory of operation
-------------------
"Paxos Made Simple" section 2.2, for one slot:

1. pick a ballot above any seen for the slot; ``Prepare`` to all acceptors;
2. on promises from a majority, propose the value of the highest-ballot
   pvalue they reported, or, if none, this node's own value (``own``: a
   client request or ``Batch``; ``Noop`` when the node is only filling a
   hole); ``Accept`` to all;
3. on ``Accepted`` from a majority the value is chosen: tell every learner
   (``Decided``).

A ``Nack`` (some acceptor promised a higher ballot: another proposer is
working on the slot) ends the round; the proposer backs off for a random,
growing delay before trying again with a higher ballot, so two duelling
proposers stop preempting each other.  A round that simply goes quiet (lost
messages, crashed acceptors) is retried after ``retry_timeout``.

``Instance`` is plain state; ``protocols.paxos.core`` drives it.

Invariants:
  phase == PREPARING => value is None
  phase == ACCEPTING => value is the value chosen for this round by rule 2
  every node in promises/accepts answered *this* ballot
"""

from __future__ import annotations

from typing import Any

import attrs

from consensus.commands import Noop
from protocols.paxos_common.acceptor import PValue
from protocols.paxos_common.ballot import ZERO, Ballot

__all__ = ["ACCEPTING", "BACKOFF", "Instance", "PREPARING"]

BACKOFF, PREPARING, ACCEPTING = 0, 1, 2


@attrs.define
class Instance:
    """This node's proposer for ``slot``."""

    slot: int
    #: The value this node wants chosen (None: it only fills a hole).
    own: Any
    ballot: Ballot = ZERO
    #: The highest ballot seen for the slot (from Nacks), to outbid next round.
    seen: Ballot = ZERO
    phase: int = BACKOFF
    value: Any = None
    promises: set[int] = attrs.Factory(set)
    best: PValue | None = None
    accepts: set[int] = attrs.Factory(set)
    #: Rounds lost to a higher ballot so far (drives the backoff).
    duels: int = 0
    #: Backoff end (BACKOFF) or retry timeout (PREPARING/ACCEPTING).
    deadline: float = 0.0
    #: When each (ballot, phase) of this instance was sent: replies' round trips.
    sent_at: dict[tuple[Ballot, int], float] = attrs.Factory(dict)

    def new_round(self, ballot: Ballot, deadline: float) -> None:
        self.ballot = ballot
        self.phase = PREPARING
        self.value = None
        self.promises = set()
        self.best = None
        self.accepts = set()
        self.deadline = deadline

    def add_promise(self, node: int, accepted: PValue | None) -> None:
        self.promises.add(node)
        if accepted is not None and (self.best is None or accepted.ballot > self.best.ballot):
            self.best = accepted

    def choose_value(self) -> Any:
        """Rule P2c: the highest-ballot accepted value, else our own (or Noop)."""
        if self.best is not None:
            return self.best.payload
        return self.own if self.own is not None else Noop()
