"""Deliberately broken protocol variants: proof the safety checker can fail.

``raft-stale-reads`` is Raft whose leader answers a read at once from its
own state, without confirming it is still the leader (no ReadIndex round, no
lease).  A leader cut off from the majority keeps answering until CheckQuorum
deposes it, while the majority elects a new leader and accepts writes: its
answers go stale, and the linearizability checker reports them.

Never use it for anything but checking the checker.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from consensus.commands import Request
from consensus.replica import Outputs, ReadReady, ReplicaContext
from protocols.raft import PROTOCOL as RAFT
from protocols.raft.core import RaftReplica, Role

__all__ = ["STALE_READS"]


class StaleReadRaft(RaftReplica):
    def read(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if self.role is Role.LEADER:
            # The bug: no heartbeat round confirms that we still lead.
            out.reads.append(
                ReadReady(client_id=request.client_id, seq=request.seq, index=self.commit_index)
            )
        else:
            out.reject(request, "not_leader", self.leader())
        return out


def _create(ctx: ReplicaContext, records: Sequence[Any]) -> StaleReadRaft:
    return StaleReadRaft(ctx, records)


STALE_READS = attrs.evolve(
    RAFT,
    name="raft-stale-reads",
    create=_create,
    summary="BROKEN ON PURPOSE: Raft serving reads without confirming leadership",
)
