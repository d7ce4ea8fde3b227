"""``chain-early-ack``: chain replication that answers at the head, BROKEN ON PURPOSE.

The head applies (and so answers) an update as soon as it stores it, before
the tail has it.  A client told its write succeeded can then read, at the
tail, a state without it: a stale read, which the conformance kit's
linearizability rules catch.  It is here to show that the kit can fail.
It has no entry point: importing this module registers it, so
``pytest --consensus-import=chain.broken --consensus-plugin=chain-early-ack``
tries it (and fails).
"""

from __future__ import annotations

import attrs

from chain import PROTOCOL
from chain.core import ChainReplica
from consensus import Outputs, Request, register

__all__ = ["EARLY_ACK"]


class EarlyAckChain(ChainReplica):
    def propose(self, now: float, request: Request) -> Outputs:
        out = super().propose(now, request)
        if self.is_head and not out.rejected:
            self._commit_to(len(self.log), out)  # the bug: committed before the tail has it
        return out


EARLY_ACK = register(
    attrs.evolve(
        PROTOCOL,
        name="chain-early-ack",
        create=EarlyAckChain,
        summary="BROKEN ON PURPOSE: chain replication acknowledging writes at the head",
    )
)
