"""The state one Multi-Paxos node shares between its roles, and the helpers they share.

Theory of operation
-------------------
``MultiPaxos`` (``core``) is one class assembled from role mixins, each in
its own module, each layer seeing the ones below it:

    NodeState       this module: every field, ballots seen, the learner's
                    delivery (``_drain``: chosen slots in order, and the
                    membership changes among them), who to talk to
    Replication     ``replication``: the leader's phase 2, followers' learning
    Election        ``election``: the disruption guard, phase 1, role changes
    Reads           ``reads``: heartbeat rounds, leases, confirmed reads
    MultiPaxos      ``core``: the ``Replica`` interface and message dispatch

A lower layer that must call up (a preempted leader in ``Replication``
steps down, which ``Election`` owns) calls a method declared here and
defined above.

Durable state is the acceptor's (``protocols.paxos_common.acceptor``) and the
snapshot; everything here is volatile and rebuilt after a restart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from consensus.commands import Request, RequestKey
from consensus.quorum import Majority
from consensus.replica import NodeId, Outputs, Replica, ReplicaContext
from protocols.multipaxos.configs import Configs, ConfigState
from protocols.multipaxos.leader import InFlight, Phase1, PrePhase
from protocols.multipaxos.learner import ChosenLog
from protocols.multipaxos.options import MultiPaxosOptions
from protocols.multipaxos.records import SnapshotRecord
from protocols.paxos_common.acceptor import Acceptor
from protocols.paxos_common.ballot import ZERO, Ballot

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "NodeState"]

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"
_INF = math.inf


class NodeState(Replica):
    """Fields and shared helpers of one Multi-Paxos node (see the module docstring)."""

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(MultiPaxosOptions)
        opts = self.options
        self.supports_reads = opts.read_mode != "log"
        self.configs = Configs(ctx.members, opts.alpha)
        self._random = ctx.rng.random
        self.acceptor = Acceptor(per_slot=False)
        self.log = ChosenLog()
        self._recovered = bool(records)
        for record in records:
            if isinstance(record, SnapshotRecord):
                if self.log.install(record.index, record.data, record.config):
                    self._install_configs(record.index, record.config)
            elif not self.acceptor.replay(record):
                raise TypeError(f"not a multipaxos record: {record!r}")

        self.role = FOLLOWER
        #: This node's ballot as candidate or leader (ZERO if it never ran).
        self.ballot: Ballot = ZERO
        # The highest ballot seen in any message or promise.
        self._seen: Ballot = self.acceptor.promised_all
        self._leader: NodeId | None = None
        self._election_at = _INF
        # The disruption guard: when this node last heard a leader (Accept, Heartbeat).
        self._heard_leader_at = -_INF
        self._pre: PrePhase | None = None
        self._phase1: Phase1 | None = None
        # Leader only.  Invariant: every key is >= the slot after commit_index.
        self._inflight: dict[int, InFlight] = {}
        # Phase 1's re-proposals not yet proposed: past commit + alpha (slot order).
        self._backlog: deque[tuple[int, Any]] = deque()
        # Slots this leader accepted whose records are not known durable yet.
        self._awaiting_sync: list[int] = []
        self._next_slot = 1
        # The slot of this leader's membership change not yet chosen (0: none).
        self._change_slot = 0
        self._heartbeat_at = _INF
        self._retransmit_at = _INF
        self._quorum_check_at = _INF
        self._heard: dict[NodeId, float] = {}
        # Requests waiting for a slot (leader: pipeline full; candidate: not yet elected).
        self._queue: deque[Request] = deque()
        self._queued: set[RequestKey] = set()
        # Requests this node proposed, until their slot is known chosen.
        self._proposed: dict[RequestKey, int] = {}
        self._by_slot: dict[int, list[Request]] = {}
        # Followers ask for missing chosen values at most once per retransmit_timeout.
        self._catchup_at = 0.0
        # Reads (``reads``): this leader's heartbeat rounds and what they confirmed.
        self._round = 0
        self._round_sent: dict[int, float] = {}
        self._acked: dict[NodeId, int] = {}
        self._confirmed = 0
        # (round needed, request, index) of reads waiting for a confirmed round.
        self._reads: list[tuple[int, Request, int]] = []
        # Every slot a previous leader may have chosen is at or below it.
        self._read_floor = 0
        self._lease_until = -_INF
        self._lease_window: list[Majority] = []
        # (commit index, peers): who this node talks to, per chosen prefix.
        self._audience_at: tuple[int, tuple[NodeId, ...]] = (-1, ())
        self._window_at: tuple[int, list[Majority]] = (-1, [])

    # -- calls up the layers (see the module docstring) ------------------------------------

    def _become_follower(self, now: float, out: Outputs) -> None:
        raise NotImplementedError

    def _flush_queue(self, now: float, out: Outputs) -> None:
        raise NotImplementedError

    def _reads_lost(self, out: Outputs) -> None:
        """Pending reads can no longer be confirmed here (a leader stepped down)."""
        raise NotImplementedError

    # -- shared helpers -------------------------------------------------------------------

    def _reset_election(self, now: float) -> None:
        # Runs on every Accept and Heartbeat a follower gets: rng.uniform(lo, hi)
        # written out (lo + (hi - lo) * random(), the same draw, one call fewer).
        opts = self.options
        lo = opts.election_timeout_min
        self._election_at = now + (lo + (opts.election_timeout_max - lo) * self._random())

    def _set_leader(self, node: NodeId | None) -> None:
        if node is not None and node != self._leader:
            self.counters["leaders_seen"] += 1
            if node == self.node_id:
                self.counters["leader_changes"] += 1  # the shared meaning: I became leader
        self._leader = node

    def _observe(self, ballot: Ballot, now: float, out: Outputs) -> None:
        """Note a ballot seen in a message; a higher one preempts a candidate or leader."""
        # ``is`` first: in the steady state, the very ballot object seen last.
        if ballot is not self._seen and ballot > self._seen:
            self._seen = ballot
        if self.role != FOLLOWER and ballot > self.ballot:
            self.counters["preemptions"] += 1
            self._become_follower(now, out)

    def _guarding(self, now: float) -> bool:
        """The disruption guard holds: a leader, or a node that heard one within
        ``election_timeout_min``, promises no new ballot."""
        if not self.options.disruption_guard:
            return False
        return (
            self.role == LEADER or now < self._heard_leader_at + self.options.election_timeout_min
        )

    def _drain(self, out: Outputs) -> None:
        """Hand the host the chosen slots after ``applied``, in order, noting the
        membership changes among them (in slot order, so every node agrees)."""
        entries = self.log.drain()
        if not entries:
            return
        note = self.configs.note
        for entry in entries:
            payload = entry.payload
            if type(payload) is Request and note(entry.index, payload):
                self.counters["membership_changes"] += 1
        out.committed.extend(entries)

    def _window(self) -> list[Majority]:
        """The configurations of the next ``alpha`` slots after the chosen prefix."""
        commit = self.log.commit_index
        at, window = self._window_at
        if at != commit:
            window = self.configs.window(commit)
            self._window_at = (commit, window)
        return window

    def _audience(self) -> tuple[NodeId, ...]:
        """Every other node a leader talks to: the members of the configurations of
        slots from ``alpha`` before its chosen prefix to ``alpha`` after it (removed
        nodes keep hearing for a while, so they learn they are out)."""
        commit = self.log.commit_index
        at, peers = self._audience_at
        if at != commit:
            members: set[int] = set()
            for quorum in self.configs.between(max(1, commit + 1 - self.options.alpha), commit):
                members |= quorum.members
            for quorum in self._window():
                members |= quorum.members
            members.discard(self.node_id)
            peers = tuple(sorted(members))
            self._audience_at = (commit, peers)
        return peers

    def _is_member(self) -> bool:
        """This node votes in the configuration of the next slot to decide."""
        return self.node_id in self.configs.config_for(self.log.commit_index + 1).members

    def _install_configs(self, index: int, config: Any) -> None:
        self.configs.install(
            config if config is not None else ConfigState(index=index, members=self.ctx.members)
        )
        self._audience_at = (-1, ())
        self._window_at = (-1, [])
