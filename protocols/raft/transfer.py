"""Leadership transfer (Ongaro's thesis, section 3.10; etcd's ``MsgTimeoutNow``).

Theory of operation
-------------------
An operator asks for a planned handover by stepping the admin request
``TransferLeadership(target)`` into any node (a test, a fault schedule's
``transfer_leader``, the nemesis): a follower that receives it from itself
forwards it to the leader it knows, once (a forwarded copy is never
forwarded again, so stale leader hints cannot loop it).  The leader, for a
``target`` that is a voter of its configuration and not itself:

1. stops accepting proposals (rejected ``transferring``, without a leader
   hint: the client backs off and finds the new leader), so its last index
   stops moving; an earlier transfer to another target is abandoned;
2. brings the target up to date through normal replication (at once: the
   entries it lacks are flushed now);
3. as soon as the target has acknowledged the leader's last index (its
   acknowledgement leaves only once those entries are durable there), sends
   it ``TimeoutNow``; from then on, for the rest of its term, it serves no
   lease reads (the target's election passes leader stickiness, so the
   lease's premise is gone);
4. the target campaigns at once, without PreVote, with ``transfer=True`` on
   its ``RequestVote``: voters, the old leader included, answer it even
   within a leader's lease.  Its log is at least as up to date as anyone's,
   so it normally wins; the old leader steps down on the higher term.

If no new leader has taken over after ``transfer_timeout`` (one minimum
election timeout), the leader aborts: it takes proposals again and stays
leader (``transfers_aborted``).  A configuration that no longer makes the
target a voter aborts it too.  A node that is not a voter (a learner, a
removed server) ignores ``TimeoutNow``.

Flow::

    operator --TransferLeadership(T)--> L     (or via a follower, forwarded)
    L: refuse proposals; replicate to T
    L --AppendEntries--> T ; T --Response(index = L's last)--> L
    L --TimeoutNow(term)--> T                 (no lease reads for this term)
    T: term + 1, vote self --RequestVote(transfer)--> voters and L
    voters, L: grant (L steps down) --> T leads, appends its Noop
    (no leader after transfer_timeout: L aborts and takes proposals again)

Invariants: ``_transfer_target`` is None unless leading; while it is set the
log's last index grows only by configuration entries; ``TimeoutNow`` goes
only to a voter that matched the last index.
"""

from __future__ import annotations

from consensus.replica import NodeId, Outputs
from protocols.raft.membership import Membership
from protocols.raft.messages import TimeoutNow, TransferLeadership
from protocols.raft.roles import Role

__all__ = ["Transfer"]


class Transfer(Membership):
    """The leadership-transfer part of ``RaftReplica``."""

    #: When an unfinished transfer is aborted (leader only), and whether its
    #: target has been sent ``TimeoutNow``.
    _transfer_deadline: float | None
    _timeout_now_sent: bool

    def _become_candidate(self, out: Outputs, transfer: bool = False) -> None:
        raise NotImplementedError

    def _reset_transfer(self) -> None:
        self._transfer_target = None
        self._transfer_deadline = None
        self._timeout_now_sent = False

    # ------------------------------------------------------------------ leader

    def _on_transfer_leadership(self, src: NodeId, m: TransferLeadership, out: Outputs) -> None:
        if self.role is not Role.LEADER:
            if src == self.node_id and self.leader_id not in (None, self.node_id):
                assert self.leader_id is not None
                out.send(self.leader_id, m)  # forwarded once; the leader decides
                self.counters["transfers_forwarded"] += 1
            else:
                self.counters["transfers_ignored"] += 1
            return
        target = m.target
        if target == self.node_id or target == self._transfer_target:
            self.counters["transfers_ignored"] += 1
            return
        if target not in self.quorum.members or target not in self._progress:
            self.counters["transfers_refused"] += 1  # learners, strangers cannot lead
            return
        if self._transfer_target is not None:
            self._abort_transfer()
        self._transfer_target = target
        self._transfer_deadline = self._now + self.options.transfer_timeout
        self.counters["transfers_started"] += 1
        self._transfer_progress(target, out)
        if self._transfer_target == target and not self._timeout_now_sent:
            self._send_entries(target, out)  # what it lacks, now

    def _transfer_progress(self, peer: NodeId, out: Outputs) -> None:
        """``peer`` acknowledged entries: if it is the target and holds our whole
        log, tell it to campaign."""
        if peer != self._transfer_target:
            return
        if self._progress[peer].match == self.log.last_index:
            out.send(peer, TimeoutNow(term=self.term))
            self._timeout_now_sent = True
            self._drop_lease(for_term=True)
            self.counters["timeout_now_sent"] += 1

    def _abort_transfer(self) -> None:
        """The transfer did not complete in time (or its target stopped being a
        voter): take proposals again."""
        self.counters["transfers_aborted"] += 1
        self._transfer_target = None
        self._transfer_deadline = None

    def _apply_config(self) -> None:
        super()._apply_config()
        target = self._transfer_target
        if target is not None and target not in self.quorum.members:
            self._abort_transfer()

    # ---------------------------------------------------------------- follower

    def _on_timeout_now(self, src: NodeId, m: TimeoutNow, out: Outputs) -> None:
        """Our leader wants us to lead: campaign now, skipping PreVote."""
        if m.term != self.term or self.role is not Role.FOLLOWER:
            self.counters["stale_messages"] += 1
            return
        if not self._voter:
            self.counters["timeout_now_ignored"] += 1  # a learner never campaigns
            return
        self.counters["transfer_elections"] += 1
        self._become_candidate(out, transfer=True)
