"""Raft (Ongaro & Ousterhout, 2014) with PreVote, CheckQuorum and joint-consensus
membership changes, as a sans-I/O plugin.

See ``README.md`` in this folder for the message flow and the paper sections
followed, and ``core`` for the theory of operation.
"""

from __future__ import annotations

from consensus.registry import ProtocolSpec
from protocols.raft.core import RaftReplica, create
from protocols.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
)
from protocols.raft.options import RaftOptions
from protocols.raft.records import HardState, LogAppend, LogTruncate, SnapshotTaken
from protocols.raft.roles import Role

__all__ = [
    "PROTOCOL",
    "AppendEntries",
    "AppendEntriesResponse",
    "Configuration",
    "Entry",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "LogAppend",
    "LogTruncate",
    "RaftOptions",
    "RaftReplica",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SnapshotTaken",
    "create",
]

PROTOCOL = ProtocolSpec(
    name="raft",
    create=create,
    summary=(
        "Raft (figure 2) with PreVote, CheckQuorum, ReadIndex, snapshots,"
        " pipelined and batched AppendEntries, joint-consensus membership changes"
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
    ),
    records=(HardState, LogAppend, LogTruncate, SnapshotTaken),
    membership=True,
)
