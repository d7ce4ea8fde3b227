"""The Raft replica: figure 2 of the Raft paper, plus PreVote and CheckQuorum.

Theory of operation
-------------------
One ``RaftReplica`` is one server.  It is driven by the host through the
sans-I/O ``Replica`` interface and never blocks, sleeps or reads a clock.

Roles (one ``_become_*`` method each resets every role field in one place):

    follower --timeout--> pre-candidate --quorum would grant--> candidate
        ^                      |                                     |
        |<---- higher term / leader's AppendEntries / lost ----------|
        |                                                   quorum of votes
        +<---------------- higher term / CheckQuorum fails ---- leader

* Followers answer RPCs.  An election timeout drawn from ``ctx.rng`` in
  ``[election_timeout_min, election_timeout_max)`` starts an election unless
  the current leader's AppendEntries, or granting a vote, reset it.
* PreVote (thesis 9.6): a pre-candidate asks "would you vote for me in
  ``term + 1``?" without changing its own or anyone's term; only if a quorum
  would, it becomes a candidate, increments its term and asks for real.  A
  node partitioned into a minority therefore never inflates its term.
* Candidates vote for themselves and ask every peer (section 5.2).
* A leader appends a ``Noop`` of its term at once, then replicates with
  ``AppendEntries`` (``replication.py``), heartbeats every
  ``heartbeat_interval``, and commits entries of its own term by quorum.
* CheckQuorum (thesis 6.2): a leader that heard from no quorum for
  ``election_timeout_max`` steps down; a node that heard from its leader
  within ``election_timeout_min`` (or is the leader) ignores vote requests of
  higher terms (leader stickiness), so a rejoining node cannot depose a
  healthy leader.
* Reads (``read``) use ReadIndex (thesis 6.4), a lease (6.4.1), or the log,
  and followers may serve them (``reads.py``); log compaction and
  InstallSnapshot live in ``snapshots.py``.
* Membership changes (joint consensus and single-server changes, learners;
  section 6, thesis chapter 4) live in ``membership.py``: ``quorum`` and
  ``peers`` follow the latest configuration entry in the log, and a server
  outside its voters never campaigns.
* Leadership transfer (thesis 3.10, ``TimeoutNow``) lives in ``transfer.py``;
  a candidate it starts skips PreVote and its vote requests pass leader
  stickiness.
* Admin requests (``TransferLeadership``, ``ChangeLearners``) are stepped
  into a node by its operator and forwarded to the leader; they carry no
  term and are handled before the term rules.

Durability: term, vote and log changes are written as records
(``records.py``) in the same ``Outputs`` as the messages that depend on them;
the host persists before it sends, so a vote or an acknowledgement never
leaves before the state it promises is durable.  ``HardState`` is written
once per input, first, if term or vote changed.

Invariants (the cheap ones are asserted):
  commit_index <= log.last_index; emitted <= commit_index
  voted_for, once set, does not change within a term
  at most one leader per term (election safety, section 5.2)
  log terms never decrease along the log
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from consensus.commands import ChangeMembership, Noop, Request, request_key
from consensus.quorum import Majority, QuorumSystem
from consensus.replica import (
    Committed,
    NodeId,
    Outputs,
    Rejection,
    ReplicaContext,
    StateSnapshot,
)
from protocols.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ChangeLearners,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    TransferLeadership,
)
from protocols.raft.options import RaftOptions
from protocols.raft.progress import Progress
from protocols.raft.records import HardState, replay
from protocols.raft.roles import Role
from protocols.raft.transfer import Transfer

__all__ = ["RaftReplica", "Role", "create"]


class RaftReplica(Transfer):
    """A Raft server; build it with ``create(ctx, records)``."""

    supports_reads = True

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx)
        self.options = options = ctx.options_as(RaftOptions)
        # With read_mode = "log", Gets go through the log like writes.
        self.supports_reads = options.read_mode != "log"
        # These follow the configuration in force (``membership``): the other
        # voters, every server we would replicate to as leader (voters and
        # learners), and a Majority, or a JointQuorum during a change.
        self.peers: tuple[NodeId, ...] = ctx.peers
        self._replicas: tuple[NodeId, ...] = ctx.peers
        self.quorum: QuorumSystem = Majority(ctx.members)

        durable = replay(records)
        # Persistent state (figure 2).  Invariant: voted_for is None or was voted in `term`.
        self.term: int = durable.hard.term
        self.voted_for: NodeId | None = durable.hard.voted_for
        self.log = durable.log
        self._saved_hard: HardState = durable.hard
        self._snapshot = durable.snapshot

        # Volatile state on all servers.  Invariant: emitted <= commit_index <= last_index.
        self.commit_index: int = self.log.snapshot_index
        # The last log index the host has confirmed durable here (``synced``): a
        # leader sends new entries before its own write is done (eagerly) and
        # counts its own copy only up to here.  Recovered records are durable.
        self._synced: int = self.log.last_index
        self._emitted: int = self.log.snapshot_index  # figure 2's lastApplied
        self._now: float = 0.0

        # Role state; every field below is reset by _reset_role_state().
        self.role: Role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self._last_leader_contact: float | None = None
        self._election_deadline: float | None = None
        self._votes: set[NodeId] = set()
        self._refusals: set[NodeId] = set()
        self._progress: dict[NodeId, Progress] = {}
        self._heartbeat_deadline: float | None = None
        self._check_quorum_deadline: float | None = None
        # A flush right after the current inputs (a deadline at now): a leader's
        # new entries and read round, a follower's batch of forwarded reads.
        self._flush_at: float | None = None

        # Proposals this node appended as leader and has not yet seen committed:
        # index -> (term of the entry, request).
        self._pending: dict[int, tuple[int, Request]] = {}
        self._pending_ids: dict[tuple[int, int], int] = {}
        self._reset_reads()
        self._reset_transfer()
        self._term_start = 0
        # Lease mode: a node that (re)starts refuses votes until then (its clock),
        # since it forgot when it last heard from a leader (see ``options``).
        self._no_votes_until: float | None = None

        self._handlers: dict[type, Callable[[NodeId, Any, Outputs], None]] = {
            RequestVote: self._on_request_vote,
            RequestVoteResponse: self._on_request_vote_response,
            AppendEntries: self._on_append_entries,
            AppendEntriesResponse: self._on_append_entries_response,
            InstallSnapshot: self._on_install_snapshot,
            InstallSnapshotResponse: self._on_install_snapshot_response,
            ReadIndex: self._on_read_index,
            ReadIndexResponse: self._on_read_index_response,
            TimeoutNow: self._on_timeout_now,
        }
        # Admin requests carry no term: handled before the term rules.
        self._admin: dict[type, Callable[[NodeId, Any, Outputs], None]] = {
            TransferLeadership: self._on_transfer_leadership,
            ChangeLearners: self._on_change_learners,
        }
        # The configuration: the snapshot's, then every configuration entry in the log.
        snapshot = self._snapshot
        if snapshot is None:
            self._reset_configs(0, None)
        else:
            self._reset_configs(snapshot.index, snapshot.config)

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> Outputs:
        self._now = now
        out = Outputs()
        if self._snapshot is not None:
            # The host's state machine is fresh: rebuild it from the recovered snapshot.
            out.restore = StateSnapshot(index=self._snapshot.index, data=self._snapshot.data)
        if self.options.read_mode == "lease":
            self._no_votes_until = now + self.options.election_timeout_min
        self._become_follower(self.term, None, out)
        return self._finish(out)

    def step(self, now: float, src: NodeId, message: Any) -> Outputs:
        self._now = now
        out = Outputs()
        handler = self._handlers.get(type(message))
        if handler is None:
            admin = self._admin.get(type(message))
            if admin is None:
                self.counters["dropped_unknown"] += 1
            else:
                admin(src, message, out)
        elif self._observe_term(src, message, out):
            handler(src, message, out)
        return self._finish(out)

    def tick(self, now: float) -> Outputs:
        self._now = now
        out = Outputs()
        if self.role is Role.LEADER:
            if self._transfer_deadline is not None and now >= self._transfer_deadline:
                self._abort_transfer()
            self._leader_tick(out)
            return self._finish(out)
        if self._election_deadline is not None and now >= self._election_deadline:
            self._hup(out)  # a role change rejects the reads not yet forwarded
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_read_batch(out)
        return self._finish(out)

    def next_deadline(self) -> float | None:
        if self.role is not Role.LEADER:
            # The election timer, and the flush of a batch of follower reads.
            election, flush = self._election_deadline, self._flush_at
            if flush is None or (election is not None and election < flush):
                return election
            return flush
        deadline = self._heartbeat_deadline  # always set while leading
        for other in (self._check_quorum_deadline, self._flush_at, self._transfer_deadline):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def propose(self, now: float, request: Request) -> Outputs:
        self._now = now
        out = Outputs()
        if self.role is not Role.LEADER:
            out.rejected.append(self._rejection(request, "not_leader"))
            return out
        if self._transfer_target is not None:
            # Thesis 3.10: no new entries while handing over.  No hint: the client
            # backs off, and by then the target leads (or we do again).
            self.counters["proposals_refused_transferring"] += 1
            out.rejected.append(Rejection.of(request, "transferring"))
            return out
        key = request_key(request)
        if key in self._pending_ids:
            # A retry of a proposal still in flight here: its entry answers both.
            self.counters["duplicate_proposals"] += 1
            out.place(request, self._pending_ids[key])
            return out
        if type(request.command) is ChangeMembership:
            self._propose_change(request, out)
            return self._finish(out)
        index = self._append_own(request, out)
        self._pending[index] = (self.term, request)
        self._pending_ids[key] = index
        out.place(request, index)
        return self._finish(out)

    def read(self, now: float, request: Request) -> Outputs:
        """A linearizable read (``read_mode``; at a follower with
        ``follower_reads``), answered with ``ReadReady``."""
        self._now = now
        out = Outputs()
        self._start_read(request, out)
        return self._finish(out)

    def compact(self, now: float, index: int, data: bytes) -> Outputs:
        """The host snapshotted its state machine at ``index``: drop the log prefix."""
        self._now = now
        out = Outputs()
        self._compact(index, data, out)
        return self._finish(out)

    def leader(self) -> NodeId | None:
        return self.leader_id

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "role": self.role.value,
            "term": self.term,
            "voted_for": self.voted_for,
            "leader": self.leader_id,
            "commit_index": self.commit_index,
            "last_index": self.log.last_index,
            "transfer_target": self._transfer_target,
            **self.config_status(),
        }

    # ------------------------------------------------------------- dispatch

    def _observe_term(self, src: NodeId, m: Any, out: Outputs) -> bool:
        """Figure 2, all servers: a higher term makes us a follower (with exceptions).

        Returns False when the message must be dropped unanswered.
        """
        if m.term <= self.term:
            return True
        if isinstance(m, RequestVote):
            if self._in_lease() and not m.transfer:
                # Leader stickiness: do not let a disruptive node bump our term.
                self.counters["votes_ignored_in_lease"] += 1
                return False
            if self._removed(src):
                # Thesis 4.2.3: a server our committed configuration excludes is a
                # removed one with a stale log (had it that entry, it would know it is
                # out and not campaign).  It cannot win, and must not bump our term.
                # (Were it re-added by a later entry we lack, the members holding that
                # entry can still elect a leader; dropping a message is always safe.)
                self.counters["votes_ignored_not_member"] += 1
                return False
            if m.prevote:
                return True  # answered without changing our term
        elif isinstance(m, RequestVoteResponse) and m.prevote and m.vote_granted:
            return True  # a granted pre-vote carries the proposed term, not a newer one
        leader = src if isinstance(m, (AppendEntries, InstallSnapshot)) else None
        self._become_follower(m.term, leader, out)
        return True

    def _in_lease(self) -> bool:
        if not self.options.check_quorum:
            return False
        if self.role is Role.LEADER:
            return True
        if self._no_votes_until is not None:
            if self._now < self._no_votes_until:
                return True
            self._no_votes_until = None
        contact = self._last_leader_contact
        return (
            self.leader_id is not None
            and contact is not None
            and self._now - contact < self.options.election_timeout_min
        )

    def synced(self, now: float) -> Outputs | None:
        """Everything persisted so far is durable: our own entries now count."""
        self._synced = self.log.last_index
        if self.role is not Role.LEADER:
            return None
        before = self.commit_index
        self._maybe_commit()
        if self.commit_index == before:
            return None
        self._now = now
        return self._finish(Outputs())

    def _finish(self, out: Outputs) -> Outputs:
        """Every input ends here: persist term/vote first, then emit new commits."""
        saved = self._saved_hard
        if self.term != saved.term or self.voted_for != saved.voted_for:
            self._saved_hard = HardState(term=self.term, voted_for=self.voted_for)
            out.persist.insert(0, self._saved_hard)
        if self._emitted < self.commit_index:
            assert self.commit_index <= self.log.last_index
            first = self._emitted + 1
            for offset, entry in enumerate(self.log.entries(first, self.commit_index + 1)):
                index = first + offset
                out.committed.append(Committed(index=index, payload=entry.payload))
                pending = self._pending.pop(index, None)
                if pending is not None:
                    term, request = pending
                    del self._pending_ids[request_key(request)]
                    if term != entry.term:
                        self._reject_overwritten(request, out)
            self._emitted = self.commit_index
        if not self._config_settled:
            self._settle_config(out)  # a configuration entry committed (membership)
        return out

    # ----------------------------------------------------------- role changes

    def _reset_role_state(self, role: Role, leader: NodeId | None) -> None:
        self.role = role
        self.leader_id = leader
        self._last_leader_contact = None
        self._votes = {self.node_id}
        self._refusals = set()
        self._progress = {}
        self._heartbeat_deadline = None
        self._check_quorum_deadline = None
        self._flush_at = None
        self._election_deadline = None
        self._reset_reads()
        self._reset_transfer()
        self._term_start = 0

    def _reset_election_timer(self) -> None:
        lo, hi = self.options.election_timeout_min, self.options.election_timeout_max
        self._election_deadline = self._now + lo + (hi - lo) * self.ctx.rng.random()

    def _become_follower(self, term: int, leader: NodeId | None, out: Outputs) -> None:
        assert term >= self.term
        unfinished = self._take_reads()
        if self.role is Role.LEADER:
            self.counters["step_downs"] += 1
        if term > self.term:
            self.term = term
            self.voted_for = None
        # Figure 2 resets the election timer only on the leader's AppendEntries or a
        # granted vote (their handlers do it), so a running timer keeps running: a
        # stream of higher-term vote requests cannot postpone our own election.
        deadline = self._election_deadline
        self._reset_role_state(Role.FOLLOWER, leader)
        if leader is not None:
            self._last_leader_contact = self._now
        if deadline is None or leader is not None:
            self._reset_election_timer()
        else:
            self._election_deadline = deadline
        self._refuse_reads(unfinished, out)

    def _become_precandidate(self, out: Outputs) -> None:
        unfinished = self._take_reads()
        self._reset_role_state(Role.PRECANDIDATE, None)
        self._refuse_reads(unfinished, out)
        self._reset_election_timer()
        self.counters["prevotes_started"] += 1
        if self._tally(out):
            return
        last_index, last_term = self._last_index_term()
        request = RequestVote(
            term=self.term + 1, last_log_index=last_index, last_log_term=last_term, prevote=True
        )
        out.broadcast(self.peers, request)

    def _become_candidate(self, out: Outputs, transfer: bool = False) -> None:
        """Section 5.2; ``transfer``: our leader asked us to (``TimeoutNow``)."""
        unfinished = self._take_reads()
        self.term += 1
        self.voted_for = self.node_id
        self._reset_role_state(Role.CANDIDATE, None)
        self._refuse_reads(unfinished, out)
        self._reset_election_timer()
        self.counters["elections_started"] += 1
        if self._tally(out):
            return
        last_index, last_term = self._last_index_term()
        request = RequestVote(
            term=self.term, last_log_index=last_index, last_log_term=last_term, transfer=transfer
        )
        out.broadcast(self.peers, request)

    def _become_leader(self, out: Outputs) -> None:
        assert self.role is Role.CANDIDATE and self.voted_for == self.node_id
        self._reset_role_state(Role.LEADER, self.node_id)
        self.counters["leader_changes"] += 1
        next_index = self.log.last_index + 1
        max_inflight = self.options.max_inflight
        self._progress = {p: Progress(next_index, max_inflight) for p in self._replicas}
        if self.options.check_quorum:
            self._check_quorum_deadline = self._now + self.options.election_timeout_max
        if self.options.read_mode == "lease":
            self._new_round()  # the answers to our first message start the lease
        # A Noop of our term lets earlier entries commit (section 5.4.2, figure 8);
        # its AppendEntries is the first heartbeat.
        self._term_start = self._append_own(Noop(), out)
        self._config_settled = False  # a joint configuration is ours to complete
        self._flush(out)
        self._heartbeat_deadline = self._now + self.options.heartbeat_interval

    # -------------------------------------------------------------- elections

    def _hup(self, out: Outputs) -> None:
        """The election timer fired: start a (pre-)election."""
        if not self._voter:
            # Not in our configuration (a spare, or removed): never campaign.  Sleep
            # until a leader's message rearms the timer; its hint is stale by now.
            self._election_deadline = None
            self.leader_id = None
            self.counters["elections_skipped_not_member"] += 1
            return
        if self.options.prevote:
            self._become_precandidate(out)
        else:
            self._become_candidate(out)

    def _last_index_term(self) -> tuple[int, int]:
        return self.log.last_index, self._term_at(self.log.last_index)

    def _tally(self, out: Outputs) -> bool:
        """Count (pre-)votes; advance or give up the election.  True if decided."""
        if self.quorum.is_phase1_quorum(self._votes):
            if self.role is Role.PRECANDIDATE:
                self._become_candidate(out)
            else:
                self._become_leader(out)
            return True
        if not self.quorum.is_phase1_quorum(self.quorum.members - self._refusals):
            # Lost: wait for a leader or the next timeout as a follower (etcd does the same).
            self._become_follower(self.term, None, out)
            return True
        return False

    def _on_request_vote(self, src: NodeId, m: RequestVote, out: Outputs) -> None:
        """Figure 2, RequestVote receiver (and the PreVote variant)."""
        if m.term < self.term:
            out.send(
                src, RequestVoteResponse(term=self.term, vote_granted=False, prevote=m.prevote)
            )
            return
        # Here m.term == self.term, or m.prevote and m.term > self.term.
        if m.prevote:
            can_vote = (
                m.term > self.term
                or self.voted_for == src
                or (self.voted_for is None and self.leader_id is None)
            )
        else:
            can_vote = self.voted_for is None or self.voted_for == src
        last_index, last_term = self._last_index_term()
        up_to_date = (m.last_log_term, m.last_log_index) >= (last_term, last_index)
        granted = can_vote and up_to_date
        if granted and not m.prevote:
            self.voted_for = src  # persisted by _finish before the response is sent
            self._reset_election_timer()
            self.counters["votes_granted"] += 1
        term = m.term if granted else self.term
        out.send(src, RequestVoteResponse(term=term, vote_granted=granted, prevote=m.prevote))

    def _on_request_vote_response(self, src: NodeId, m: RequestVoteResponse, out: Outputs) -> None:
        if m.prevote:
            # A grant carries the proposed term; a refusal the refuser's own term
            # (a higher one already made us a follower in _observe_term).
            expected = m.term == self.term + 1 if m.vote_granted else m.term <= self.term
            fresh = self.role is Role.PRECANDIDATE and expected
        else:
            fresh = self.role is Role.CANDIDATE and m.term == self.term
        if not fresh:
            self.counters["stale_messages"] += 1
            return
        if m.vote_granted:
            self._votes.add(src)
        else:
            self._refusals.add(src)
        self._tally(out)

    # ---------------------------------------------------------------- helpers

    def _rejection(self, request: Request, reason: str) -> Rejection:
        return Rejection.of(request, reason, self.leader_id)

    def _reject_overwritten(self, request: Request, out: Outputs) -> None:
        out.rejected.append(self._rejection(request, "overwritten"))


def create(ctx: ReplicaContext, records: Sequence[Any]) -> RaftReplica:
    """The ``ProtocolSpec`` factory: a replica rebuilt from its durable records."""
    return RaftReplica(ctx, records)
