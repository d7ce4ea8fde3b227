"""``paxos``: a log of independent single-decree Paxos instances, no leader.

Any node proposes in the lowest slot it believes free (prepare + accept: two
round trips); duelling proposers back off randomly; holes are filled with
``Noop``; instances every node is done with are forgotten.  See ``README.md``
for the message flow and ``core`` for the theory of operation.
"""

from consensus.registry import ProtocolSpec
from protocols.paxos.core import Paxos
from protocols.paxos.messages import Accept, Accepted, Decided, Done, Nack, Prepare, Promise
from protocols.paxos.options import PaxosOptions
from protocols.paxos.records import DecisionRecord, SnapshotRecord
from protocols.paxos_common.acceptor import AcceptRecord, ForgetRecord, PromiseRecord, PValue
from protocols.paxos_common.ballot import Ballot

__all__ = [
    "Accept",
    "AcceptRecord",
    "Accepted",
    "Ballot",
    "Decided",
    "DecisionRecord",
    "Done",
    "ForgetRecord",
    "Nack",
    "PROTOCOL",
    "PValue",
    "Paxos",
    "PaxosOptions",
    "Prepare",
    "Promise",
    "PromiseRecord",
    "SnapshotRecord",
]

PROTOCOL = ProtocolSpec(
    name="paxos",
    create=Paxos,
    summary="single-decree Paxos per slot: no leader, prepare + accept per command",
    options=PaxosOptions,
    # Order fixes wire tags: only ever append.  Ballot and PValue travel inside messages.
    messages=(Ballot, PValue, Prepare, Promise, Nack, Accept, Accepted, Decided, Done),
    records=(PromiseRecord, AcceptRecord, ForgetRecord, DecisionRecord, SnapshotRecord),
)
