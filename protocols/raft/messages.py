"""Raft's wire messages, named as in figure 2 of the Raft paper.

Theory of operation
-------------------
Two RPCs, each a request and a response, carry the whole protocol:

* ``RequestVote`` / ``RequestVoteResponse``: elections (paper section 5.2),
  and, with ``prevote=True``, the PreVote round of Ongaro's thesis section
  9.6 that asks "would you vote for me in ``term``?" without anyone changing
  their term or vote.
* ``AppendEntries`` / ``AppendEntriesResponse``: log replication and
  heartbeats (sections 5.3, 5.5).  A response names the request it answers by
  ``index`` (the prefix the follower now matches on success, the rejected
  ``prev_log_index`` on failure) so the leader can discard stale responses,
  and a rejection carries the fast-backtracking hint of section 5.3
  (``conflict_term``/``conflict_index``).  ``read_round`` numbers the
  leader's ReadIndex confirmation rounds (thesis section 6.4).
* ``InstallSnapshot`` / ``InstallSnapshotResponse``: a follower that needs
  entries the leader has compacted away gets the state-machine snapshot
  instead (section 7, figure 13; sent whole, not in chunks), with the
  configuration in force at its last index.

* ``TimeoutNow``: leadership transfer (thesis 3.10): the leader tells an
  up-to-date voter to campaign at once; that candidate's ``RequestVote``
  carries ``transfer=True``, which voters answer even within a leader's
  lease (it is the leader's own wish).
* ``ReadIndex`` / ``ReadIndexResponse``: follower reads (ReadIndex
  forwarding, thesis 6.4): a follower asks the leader for one read index for
  a batch of client reads, each named by its ``(client_id, seq)``; the
  answer lists the same pairs.

Two *admin requests* are not sent by the protocol on its own: an operator
(a test, a fault schedule, the nemesis) steps one into any node, which
forwards it to its leader: ``TransferLeadership(target)`` and
``ChangeLearners(learners)``.  They carry no term; a node never answers them.

``Configuration`` is a value, not an RPC: the joint configuration entry
C_old,new of a membership change (paper section 6) is a log entry whose
payload is a ``Configuration`` with ``old`` set, and a snapshot carries the
configuration it covers (see ``membership``).

The sender's node id is not a field: the transport delivers ``src`` with
every message (figure 2's ``candidateId``/``leaderId``).  Messages are plain
frozen values with no logic and no wire format (see the codec).
"""

from __future__ import annotations

from typing import Any

import attrs

from consensus.commands import Request

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "ChangeLearners",
    "Configuration",
    "Entry",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "ReadIndex",
    "ReadIndexResponse",
    "ReadPairs",
    "RequestVote",
    "RequestVoteResponse",
    "TimeoutNow",
    "TransferLeadership",
]


@attrs.frozen(kw_only=True)
class Entry:
    """One log entry: the leader's term when it was created, and the payload.

    ``payload`` is a client ``Request`` (one whose command is a
    ``ChangeMembership`` is a configuration entry, C_new), a ``Noop`` (a new
    leader's first entry) or a joint ``Configuration`` (C_old,new).
    """

    term: int
    payload: Any


@attrs.frozen(kw_only=True)
class Configuration:
    """A cluster configuration: the voting members ``new``, or, while ``old``
    is not empty, the joint configuration C_old,new (paper section 6), and
    the non-voting ``learners`` (they receive the log, never vote, never
    count in a quorum; a voter of ``old`` being demoted may be one already).

    Member tuples are sorted and free of duplicates.  As a log entry
    payload: with ``old`` set, the joint entry, and ``request`` is the
    client's ``ChangeMembership`` request the leader appends as C_new once
    the joint entry commits; without ``old`` but with ``request``, the
    learner phase of that request (the servers it adds are ``learners``
    until they caught up); otherwise a plain configuration (learners added,
    removed or demoted to).
    """

    new: tuple[int, ...]
    old: tuple[int, ...] = ()
    request: Request | None = None
    learners: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class RequestVote:
    """Invoked by candidates to gather votes (figure 2, RequestVote RPC).

    With ``prevote`` set, ``term`` is the term the sender *would* campaign in
    (its current term + 1); receivers answer without changing any state.
    ``transfer``: the candidate campaigns because its leader sent it
    ``TimeoutNow``; voters set aside leader stickiness for it.
    """

    term: int
    last_log_index: int
    last_log_term: int
    prevote: bool = False
    transfer: bool = False


@attrs.frozen(kw_only=True)
class RequestVoteResponse:
    """``term``: the request's term when granted, else the receiver's current term."""

    term: int
    vote_granted: bool
    prevote: bool = False


@attrs.frozen(kw_only=True)
class AppendEntries:
    """Invoked by the leader to replicate entries; also a heartbeat when empty.

    ``entries[k]`` belongs at index ``prev_log_index + 1 + k``.
    """

    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...] = ()
    leader_commit: int = 0
    #: ReadIndex (thesis 6.4): the leader's latest leadership-confirmation round.
    read_round: int = 0


@attrs.frozen(kw_only=True)
class AppendEntriesResponse:
    """A follower's answer to one ``AppendEntries``.

    ``success``: ``index`` is the last index the follower now knows to match
    the leader's log (``prev_log_index + len(entries)``).
    Failure: ``index`` is the rejected ``prev_log_index``.  The hint: when the
    follower's log is too short, ``conflict_term`` is 0 and ``conflict_index``
    is its last index + 1; otherwise ``conflict_term`` is the term of its entry
    at ``prev_log_index`` and ``conflict_index`` the first index of that term.
    A rejection because ``term`` is stale has both hint fields 0.
    ``read_round`` echoes the request's: any answer in the leader's term
    confirms, for ReadIndex, that this follower still followed it then.
    """

    term: int
    success: bool
    index: int
    conflict_term: int = 0
    conflict_index: int = 0
    read_round: int = 0


@attrs.frozen(kw_only=True)
class InstallSnapshot:
    """Invoked by the leader to send a follower the snapshot that replaces the
    prefix it can no longer send as entries (figure 13, in one chunk)."""

    term: int
    last_included_index: int
    last_included_term: int
    data: bytes
    #: The configuration in force at ``last_included_index`` (section 6).
    config: Configuration | None = None


@attrs.frozen(kw_only=True)
class InstallSnapshotResponse:
    """``index``: the follower's log now matches the leader's up to here."""

    term: int
    index: int


@attrs.frozen(kw_only=True)
class TimeoutNow:
    """Leadership transfer (thesis 3.10): start an election now (no PreVote).

    Sent by the leader of ``term`` to a voter whose log it knows to match its
    own, last entry included."""

    term: int


#: Client reads named by ``(client_id, seq)``, as one ``ReadIndex`` carries them.
ReadPairs = tuple[tuple[int, int], ...]


@attrs.frozen(kw_only=True)
class ReadIndex:
    """A follower asks its leader for one read index for the client reads
    ``reads`` (each ``(client_id, seq)``; etcd coalesces reads the same way)."""

    term: int
    reads: ReadPairs


@attrs.frozen(kw_only=True)
class ReadIndexResponse:
    """The leader's answer to one ``ReadIndex``, listing the same ``reads``:
    with ``success``, each may be served once the follower applied ``index``;
    otherwise the receiver was not the leader (or stopped leading)."""

    term: int
    reads: ReadPairs
    index: int
    success: bool


@attrs.frozen(kw_only=True)
class TransferLeadership:
    """Admin request: hand leadership to voter ``target`` (see ``transfer``)."""

    target: int


@attrs.frozen(kw_only=True)
class ChangeLearners:
    """Admin request: make ``learners`` the set of non-voting members.

    A server named here that is a voter is demoted (the voters shrink: a
    single-server or joint change), one outside the configuration is added as
    a learner, a learner not named is removed."""

    learners: tuple[int, ...]
