"""Linearizable reads without the log: ReadIndex, leases, and follower reads.

Theory of operation
-------------------
A read is linearizable if it reflects every write acknowledged before it
arrived.  Every such write is committed, so it sits at or below the leader's
commit index, or, for a new leader whose commit index still lags, below its
own first entry (the ``Noop`` at ``_term_start``: Leader Completeness).  The
*read index* is therefore ``max(commit_index, _term_start)``; the host
serves the read (``ReadReady``) once its state machine applied that index.
What remains is to be sure the node that chose the index still leads, so
that no other leader committed writes it does not know.  Three ways
(``RaftOptions.read_mode``, see ``options`` for the lease's derivation):

* ``read_index`` (thesis 6.4): every AppendEntries carries the leader's
  latest ``read_round`` and every response echoes it.  A read waits until a
  quorum has answered a round that started after it arrived; reads arriving
  in the same instant share one round (one heartbeat per follower).
* ``lease`` (thesis 6.4.1): the leader starts a new round with every
  heartbeat and remembers when it sent it; once a quorum answered round
  ``r``, it holds a lease until ``sent(r) + lease_duration``.  A read inside
  the lease is served at once; outside it, it waits for a round as above.
  Never after this leader sent ``TimeoutNow`` in its term, and not on
  rounds sent before the configuration last changed.
* ``log``: ``supports_reads`` is False; the host proposes reads as entries.

Follower reads (``follower_reads``; ReadIndex forwarding, as etcd): a
follower or learner that gets a read sends ``ReadIndex(client_id, seq)`` to
its leader, which confirms leadership as for its own reads and answers
``ReadIndexResponse(index)``; the follower then emits ``ReadReady(index)``
and serves the read from its own state machine once applied.  The read is
named by its ``(client_id, seq)``: a late answer to an earlier attempt of
the same read (even from before a restart) is still a valid index for it,
since it was confirmed after the read was first invoked.  A follower that
changes role or term rejects the reads it forwarded (their clients retry);
a leader that steps down answers the forwarded reads it held with a refusal.

Invariants: ``_reads`` is ordered by round; a read is answered at most
once; a leader serves a lease read only while ``now < _lease_until``, and
``_lease_until`` only grows within a term and configuration.
"""

from __future__ import annotations

from collections import deque

from consensus.commands import Get, Request
from consensus.log import Log
from consensus.quorum import QuorumSystem
from consensus.replica import NodeId, Outputs, ReadReady, Rejection, Replica
from protocols.raft.messages import Entry, ReadIndex, ReadIndexResponse
from protocols.raft.options import RaftOptions
from protocols.raft.progress import Progress
from protocols.raft.roles import Role

__all__ = ["PendingRead", "Reads"]

#: A read waiting for its round: (round needed, read index, request, origin);
#: origin is None for a read at this leader, or the follower that forwarded it.
PendingRead = tuple[int, int, Request, NodeId | None]
_NEVER = float("-inf")
#: The command of a forwarded read's stand-in request at the leader (never run).
_NO_COMMAND = Get(key="")


class Reads(Replica):
    """The read half of ``RaftReplica`` (state is owned by ``core``)."""

    options: RaftOptions
    quorum: QuorumSystem
    term: int
    log: Log[Entry]
    commit_index: int
    role: Role
    leader_id: NodeId | None
    _now: float
    _progress: dict[NodeId, Progress]
    _flush_at: float | None
    _term_start: int
    # Leader: reads awaiting confirmation, in increasing round order; the latest
    # round started; whether a new round is wanted at the next flush.
    _reads: deque[PendingRead]
    _read_round: int
    _read_round_due: bool
    # Leader, lease mode: local send time of each round not yet confirmed; the
    # lease's end on our clock; the first round that may extend it (rounds sent
    # under an earlier configuration may not); no lease for the rest of the term
    # (we sent TimeoutNow).
    _round_sent: dict[int, float]
    _lease_until: float
    _lease_min_round: int
    _lease_lost: bool
    # Follower: reads forwarded to the leader, by (client_id, seq).
    _forwarded: dict[tuple[int, int], Request]

    def _rejection(self, request: Request, reason: str) -> Rejection:
        raise NotImplementedError

    def _reset_reads(self) -> None:
        self._reads = deque()
        self._read_round = 0
        self._read_round_due = False
        self._round_sent = {}
        self._lease_until = _NEVER
        self._lease_min_round = 0
        self._lease_lost = False
        self._forwarded = {}

    # ------------------------------------------------------------------ entry

    def _start_read(self, request: Request, out: Outputs) -> None:
        """A client read arrived here: serve, forward or reject it."""
        if self.role is Role.LEADER:
            self.counters["reads"] += 1
            self._leader_read(request, None, out)
        elif self.options.follower_reads and self.leader_id is not None:
            self.counters["follower_reads"] += 1
            key = (request.client_id, request.seq)
            self._forwarded[key] = request
            out.send(self.leader_id, ReadIndex(term=self.term, client_id=key[0], seq=key[1]))
        else:
            out.rejected.append(self._rejection(request, "not_leader"))

    def _leader_read(self, request: Request, origin: NodeId | None, out: Outputs) -> None:
        # Until our Noop commits, our commit index may lag entries earlier leaders
        # committed; every one of them precedes the Noop (Leader Completeness).
        index = max(self.commit_index, self._term_start)
        if self.quorum.is_phase2_quorum((self.node_id,)) or self._in_read_lease():
            if self.options.read_mode == "lease":
                self.counters["lease_reads"] += 1
            self._answer_read(index, request, origin, out)
            return
        if self.options.read_mode == "lease":
            self.counters["lease_fallbacks"] += 1
        self._reads.append((self._read_round + 1, index, request, origin))
        self._read_round_due = True
        self._flush_at = self._now

    def _answer_read(
        self, index: int, request: Request, origin: NodeId | None, out: Outputs
    ) -> None:
        if origin is None:
            out.reads.append(ReadReady(client_id=request.client_id, seq=request.seq, index=index))
            return
        answer = ReadIndexResponse(
            term=self.term, client_id=request.client_id, seq=request.seq, index=index, success=True
        )
        out.send(origin, answer)

    # ------------------------------------------------------------------ rounds

    def _new_round(self) -> None:
        """Leader: every message from here on carries a new round."""
        self._read_round += 1
        self.counters["read_rounds"] += 1
        if self.options.read_mode == "lease":
            self._round_sent[self._read_round] = self._now

    def _round_acked(self, out: Outputs) -> None:
        """A follower answered a newer round: serve what a quorum confirmed."""
        rounds = {peer: progress.acked_round for peer, progress in self._progress.items()}
        rounds[self.node_id] = self._read_round
        confirmed = self.quorum.committed(rounds)
        reads = self._reads
        while reads and reads[0][0] <= confirmed:
            _, index, request, origin = reads.popleft()
            self._answer_read(index, request, origin, out)
        sent = self._round_sent
        if sent and confirmed >= self._lease_min_round and confirmed in sent:
            until = sent[confirmed] + self.options.lease_duration
            if until > self._lease_until:
                self._lease_until = until
            for r in [r for r in sent if r <= confirmed]:
                del sent[r]

    def _in_read_lease(self) -> bool:
        return (
            self.options.read_mode == "lease"
            and not self._lease_lost
            and self._now < self._lease_until
        )

    def _drop_lease(self, for_term: bool = False) -> None:
        """Leader: forget the lease; rounds sent so far no longer renew it
        (the configuration changed), or none for the rest of the term."""
        self._lease_until = _NEVER
        self._lease_min_round = self._read_round + 1
        if for_term:
            self._lease_lost = True

    # ---------------------------------------------------------------- messages

    def _on_read_index(self, src: NodeId, m: ReadIndex, out: Outputs) -> None:
        """Leader: a follower's read; confirm it like our own."""
        request_id = (m.client_id, m.seq)
        if self.role is not Role.LEADER:
            self.counters["stale_messages"] += 1
            refusal = ReadIndexResponse(
                term=self.term, client_id=m.client_id, seq=m.seq, index=0, success=False
            )
            out.send(src, refusal)
            return
        self.counters["reads_for_followers"] += 1
        # Only (client_id, seq) travels; the command stays at the follower.
        stub = Request(client_id=request_id[0], seq=request_id[1], command=_NO_COMMAND)
        self._leader_read(stub, src, out)

    def _on_read_index_response(self, src: NodeId, m: ReadIndexResponse, out: Outputs) -> None:
        request = self._forwarded.pop((m.client_id, m.seq), None)
        if request is None:
            self.counters["stale_messages"] += 1
            return
        if m.success:
            out.reads.append(ReadReady(client_id=m.client_id, seq=m.seq, index=m.index))
        else:
            out.rejected.append(self._rejection(request, "not_leader"))

    def _take_reads(self) -> tuple[deque[PendingRead], dict[tuple[int, int], Request]]:
        """Before a role or term change resets them: the reads this node could
        not finish (``_refuse_reads`` answers them once the change is made, so
        that their rejections carry the new leader hint)."""
        return self._reads, self._forwarded

    def _refuse_reads(
        self, taken: tuple[deque[PendingRead], dict[tuple[int, int], Request]], out: Outputs
    ) -> None:
        """Reads a leader had not confirmed may be stale now, and a follower's
        forwarded reads may never be answered: their clients retry; followers
        that forwarded reads to us get a refusal."""
        reads, forwarded = taken
        for _, _, request, origin in reads:
            if origin is None:
                out.rejected.append(self._rejection(request, "not_leader"))
            else:
                refusal = ReadIndexResponse(
                    term=self.term,
                    client_id=request.client_id,
                    seq=request.seq,
                    index=0,
                    success=False,
                )
                out.send(origin, refusal)
        for request in forwarded.values():
            out.rejected.append(self._rejection(request, "not_leader"))
