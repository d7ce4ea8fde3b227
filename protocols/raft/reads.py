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

Follower reads (``follower_reads``; ReadIndex forwarding, batched as etcd
does): a follower or learner collects the reads that arrive while it handles
one batch of inputs and, at the flush right after them (``_flush_at``, as a
leader's entries), sends its leader one ``ReadIndex`` listing all their
``(client_id, seq)`` pairs.  The leader confirms the whole batch as one
pending read (one round, or at once within its lease) and answers with one
``ReadIndexResponse`` listing the same pairs and the read index; the
follower emits ``ReadReady(index)`` for each and serves the reads from its
own state machine once applied.  A read is named by its pair: a late answer
to an earlier attempt of the same read (even from before a restart) is still
a valid index for it, since it was confirmed by a round that started after
that attempt was sent, hence after the read was first invoked.  So a
response serves exactly the pairs it lists that are still pending here, and
never any other read.  A follower that changes role or term rejects the
reads it forwarded or collected (their clients retry); a leader that steps
down answers every forwarded batch it held with a refusal.

Invariants: ``_reads`` is ordered by round; a read is answered at most
once; a follower's ``_read_batch`` is empty unless ``_flush_at`` is set; a
leader serves a lease read only while ``now < _lease_until``, and
``_lease_until`` only grows within a term and configuration.
"""

from __future__ import annotations

from collections import deque

from consensus.commands import Request
from consensus.log import Log
from consensus.quorum import QuorumSystem
from consensus.replica import NodeId, Outputs, ReadReady, Rejection, Replica
from protocols.raft.messages import Entry, ReadIndex, ReadIndexResponse, ReadPairs
from protocols.raft.options import RaftOptions
from protocols.raft.progress import Progress
from protocols.raft.roles import Role

__all__ = ["PendingRead", "Reads"]

#: Reads waiting for their round: (round needed, read index, reads, origin);
#: origin is None for one read at this leader, or the follower that forwarded
#: the batch ``reads``.
PendingRead = tuple[int, int, ReadPairs, NodeId | None]
_NEVER = float("-inf")


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
    # Follower: reads forwarded to the leader or about to be, by (client_id, seq);
    # those collected since the last flush, to go in the next ReadIndex.
    _forwarded: dict[tuple[int, int], Request]
    _read_batch: dict[tuple[int, int], None]

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
        self._read_batch = {}

    # ------------------------------------------------------------------ entry

    def _start_read(self, request: Request, out: Outputs) -> None:
        """A client read arrived here: serve, forward or reject it."""
        key = (request.client_id, request.seq)
        if self.role is Role.LEADER:
            self.counters["reads"] += 1
            self._leader_read((key,), None, out)
        elif self.options.follower_reads and self.leader_id is not None:
            # Forwarded with the other reads of this batch of inputs, at the flush.
            self.counters["follower_reads"] += 1
            self._forwarded[key] = request
            self._read_batch[key] = None
            self._flush_at = self._now
        else:
            out.rejected.append(self._rejection(request, "not_leader"))

    def _flush_read_batch(self, out: Outputs) -> None:
        """Follower: one ReadIndex for the reads collected since the last flush."""
        self._flush_at = None
        forwarded = self._forwarded
        # A late answer to an earlier attempt may have served a read meanwhile.
        reads = tuple(key for key in self._read_batch if key in forwarded)
        self._read_batch = {}
        if not reads:
            return
        if self.leader_id is None:  # forgot its leader (not a member any more)
            for key in reads:
                out.rejected.append(self._rejection(forwarded.pop(key), "not_leader"))
            return
        self.counters["read_index_batches"] += 1
        out.send(self.leader_id, ReadIndex(term=self.term, reads=reads))

    def _leader_read(self, reads: ReadPairs, origin: NodeId | None, out: Outputs) -> None:
        # Until our Noop commits, our commit index may lag entries earlier leaders
        # committed; every one of them precedes the Noop (Leader Completeness).
        index = max(self.commit_index, self._term_start)
        if self.quorum.is_phase2_quorum((self.node_id,)) or self._in_read_lease():
            if self.options.read_mode == "lease":
                self.counters["lease_reads"] += len(reads)
            self._answer_read(index, reads, origin, out)
            return
        if self.options.read_mode == "lease":
            self.counters["lease_fallbacks"] += len(reads)
        self._reads.append((self._read_round + 1, index, reads, origin))
        self._read_round_due = True
        self._flush_at = self._now

    def _answer_read(
        self, index: int, reads: ReadPairs, origin: NodeId | None, out: Outputs
    ) -> None:
        if origin is None:
            for client_id, seq in reads:
                out.reads.append(ReadReady(client_id=client_id, seq=seq, index=index))
            return
        out.send(origin, ReadIndexResponse(term=self.term, reads=reads, index=index, success=True))

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
        """Leader: a follower's batch of reads; confirm it as one read of our own."""
        if self.role is not Role.LEADER:
            self.counters["stale_messages"] += 1
            out.send(src, ReadIndexResponse(term=self.term, reads=m.reads, index=0, success=False))
            return
        self.counters["read_index_received"] += 1
        self.counters["reads_for_followers"] += len(m.reads)
        # Only the pairs travel; the commands stay at the follower.
        self._leader_read(m.reads, src, out)

    def _on_read_index_response(self, src: NodeId, m: ReadIndexResponse, out: Outputs) -> None:
        """Follower: serve (or reject) the reads it lists that are still pending
        here; it says nothing about any other read."""
        forwarded = self._forwarded
        matched = False
        for key in m.reads:
            request = forwarded.pop(key, None)
            if request is None:
                continue  # answered already, or forwarded before a role or term change
            matched = True
            if m.success:
                out.reads.append(ReadReady(client_id=key[0], seq=key[1], index=m.index))
            else:
                out.rejected.append(self._rejection(request, "not_leader"))
        if not matched:
            self.counters["stale_messages"] += 1

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
        that forwarded batches to us get one refusal per batch."""
        reads, forwarded = taken
        hint = self.leader_id
        for _, _, pairs, origin in reads:
            if origin is None:
                for client_id, seq in pairs:
                    out.rejected.append(
                        Rejection(
                            client_id=client_id, seq=seq, leader_hint=hint, reason="not_leader"
                        )
                    )
            else:
                refusal = ReadIndexResponse(term=self.term, reads=pairs, index=0, success=False)
                out.send(origin, refusal)
        for request in forwarded.values():
            out.rejected.append(self._rejection(request, "not_leader"))
