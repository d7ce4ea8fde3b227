"""``multipaxos``: Multi-Paxos with a distinguished leader elected by ballots.

Phase 1 runs once per leader for every slot from its first unchosen one; each
client command then costs one phase-2 round trip to a majority.  A
disruption guard keeps nodes that cannot hear the leader from deposing it,
reads may be served by the leader (``read_mode``: confirmed rounds or
leases), and membership changes go through the log (``alpha`` slots later).  See
``README.md`` for the message flow and ``core`` for the theory of operation.
"""

from consensus.registry import ProtocolSpec
from protocols.multipaxos.configs import Change, Configs, ConfigState
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
    PrePrepare,
    PrePromise,
    Promise,
)
from protocols.multipaxos.options import READ_MODES, MultiPaxosOptions
from protocols.multipaxos.records import SnapshotRecord
from protocols.paxos_common.acceptor import AcceptRecord, ForgetRecord, PromiseRecord, PValue
from protocols.paxos_common.ballot import Ballot

__all__ = [
    "Accept",
    "AcceptRecord",
    "Accepted",
    "Ballot",
    "CatchUp",
    "Change",
    "ConfigState",
    "Configs",
    "ForgetRecord",
    "Heartbeat",
    "HeartbeatAck",
    "Learn",
    "MultiPaxos",
    "MultiPaxosOptions",
    "Nack",
    "PROTOCOL",
    "PValue",
    "PrePrepare",
    "PrePromise",
    "Prepare",
    "Promise",
    "PromiseRecord",
    "READ_MODES",
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
        Change,
        ConfigState,
        PrePrepare,
        PrePromise,
    ),
    records=(PromiseRecord, AcceptRecord, ForgetRecord, SnapshotRecord),
    membership=True,
)
