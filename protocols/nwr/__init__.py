"""``nwr``: leaderless quorum replication (Dynamo-style N, W, R), an unsafe baseline.

See ``README.md`` in this folder for the message flow, the options and why
no configuration is linearizable, and ``core`` for the theory of operation.
"""

from __future__ import annotations

from consensus.registry import ProtocolSpec
from protocols.nwr.coordinator import Coordinator, preference_list
from protocols.nwr.core import NwrReplica
from protocols.nwr.messages import (
    Handoff,
    HandoffAck,
    HintDone,
    Hinted,
    ReadReply,
    ReadRequest,
    Stored,
    WriteAck,
    WriteRequest,
)
from protocols.nwr.options import NwrOptions, unsafe
from protocols.nwr.store import Store

__all__ = [
    "PROTOCOL",
    "Coordinator",
    "NwrOptions",
    "NwrReplica",
    "Store",
    "preference_list",
    "unsafe",
]

PROTOCOL = ProtocolSpec(
    name="nwr",
    create=NwrReplica,
    summary=(
        "leaderless quorum replication (Dynamo): N replicas per key, W/R quorums,"
        " last writer wins, read repair, sloppy quorums: a baseline, not consensus"
    ),
    options=NwrOptions,
    # Order fixes wire tags: only ever append.
    messages=(ReadRequest, ReadReply, WriteRequest, WriteAck, Handoff, HandoffAck),
    records=(Stored, Hinted, HintDone),
    hazards=unsafe,
    lacks={
        "quorum": "a key's reads and writes need r and w of its n replicas, not a majority",
        "log": (
            "no log: each replica keeps the last write per key (last writer wins), nodes"
            " never apply one sequence, and a retried request is executed again"
        ),
        "linearizability": (
            "stale reads when W + R <= N or with sloppy quorums, new-then-old reads"
            " without blocking read repair, writes lost to clock skew, and never atomic"
            " read-modify-writes (compare-and-set, append)"
        ),
    },
)
