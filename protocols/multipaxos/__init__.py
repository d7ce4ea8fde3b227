"""``multipaxos``: Multi-Paxos with a distinguished leader elected by ballots.

Phase 1 runs once per leader for every slot from its first unchosen one; each
client command then costs one phase-2 round trip to a majority.  See
``README.md`` for the message flow and ``core`` for the theory of operation.
"""

from consensus.registry import ProtocolSpec
from protocols.multipaxos.core import MultiPaxos
from protocols.multipaxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
    Prepare,
    Promise,
)
from protocols.multipaxos.options import MultiPaxosOptions
from protocols.multipaxos.records import SnapshotRecord
from protocols.paxos_common.acceptor import AcceptRecord, ForgetRecord, PromiseRecord, PValue
from protocols.paxos_common.ballot import Ballot

__all__ = [
    "Accept",
    "AcceptRecord",
    "Accepted",
    "Ballot",
    "CatchUp",
    "ForgetRecord",
    "Heartbeat",
    "HeartbeatAck",
    "Learn",
    "MultiPaxos",
    "MultiPaxosOptions",
    "Nack",
    "PROTOCOL",
    "PValue",
    "Prepare",
    "Promise",
    "PromiseRecord",
    "SnapshotRecord",
]

PROTOCOL = ProtocolSpec(
    name="multipaxos",
    create=MultiPaxos,
    summary="Multi-Paxos: ballot-elected leader, phase 1 once, one round trip per command",
    options=MultiPaxosOptions,
    # Order fixes wire tags: only ever append.  Ballot and PValue travel inside messages.
    messages=(
        Ballot,
        PValue,
        Prepare,
        Promise,
        Nack,
        Accept,
        Accepted,
        Heartbeat,
        HeartbeatAck,
        CatchUp,
        Learn,
    ),
    records=(PromiseRecord, AcceptRecord, ForgetRecord, SnapshotRecord),
)
