"""Raft (Ongaro & Ousterhout, 2014) with PreVote, CheckQuorum, ReadIndex, lease
and follower reads, learners, single-server and joint-consensus membership
changes and leadership transfer, as a sans-I/O plugin.

See ``README.md`` in this folder for the message flow and the paper sections
followed, and ``core`` for the theory of operation.
"""

from __future__ import annotations

from consensus.registry import ProtocolSpec
from protocols.raft.core import RaftReplica, create
from protocols.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ChangeLearners,
    Configuration,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    TransferLeadership,
)
from protocols.raft.options import READ_MODES, RaftOptions
from protocols.raft.records import HardState, LogAppend, LogTruncate, SnapshotTaken
from protocols.raft.roles import Role

__all__ = [
    "PROTOCOL",
    "READ_MODES",
    "AppendEntries",
    "AppendEntriesResponse",
    "ChangeLearners",
    "Configuration",
    "Entry",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "LogAppend",
    "LogTruncate",
    "RaftOptions",
    "RaftReplica",
    "ReadIndex",
    "ReadIndexResponse",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SnapshotTaken",
    "TimeoutNow",
    "TransferLeadership",
    "create",
]

PROTOCOL = ProtocolSpec(
    name="raft",
    create=create,
    summary=(
        "Raft (figure 2) with PreVote, CheckQuorum, ReadIndex, lease and follower reads,"
        " snapshots, pipelined and batched AppendEntries, learners, single-server and"
        " joint-consensus membership changes, leadership transfer"
    ),
    options=RaftOptions,
    # Order fixes wire tags: only ever append.
    messages=(
        Entry,
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        InstallSnapshot,
        InstallSnapshotResponse,
        Configuration,
        TimeoutNow,
        ReadIndex,
        ReadIndexResponse,
        TransferLeadership,
        ChangeLearners,
    ),
    records=(HardState, LogAppend, LogTruncate, SnapshotTaken),
    membership=True,
)
