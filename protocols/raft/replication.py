"""Log replication: both ends of figure 2's AppendEntries RPC, and the commit rule.

Theory of operation
-------------------
Leader side.  Entries are appended to the leader's log (and persisted) by
``_append_own``; they go out on the next ``_flush``, which the leader asks
for by setting a deadline of *now*: every proposal that arrives in the same
instant becomes one more entry of the same AppendEntries.  Each follower has
a ``Progress`` (``progress.py``) deciding what to send: one probe at a time
until the logs are known to agree, then a stream of up to ``max_inflight``
messages of at most ``max_entries_per_message`` entries each.  Every
``heartbeat_interval`` the leader sends each follower an empty AppendEntries
at ``prev_log_index = match`` (which cannot be rejected and carries
``leader_commit``) or, while probing, resends its probe.  An idle leader
therefore sends exactly one message per follower per heartbeat, and a
command costs one AppendEntries and one response per follower (fewer when
batched); followers learn the new commit index from the next message.

Reads (``reads.py``): every AppendEntries carries the leader's latest
``read_round`` and every response echoes it, so confirming leadership for
ReadIndex and leases needs no extra message type; in lease mode every
heartbeat starts a new round.

The commit rule (section 5.4.2): the leader commits the highest index a
quorum has matched *only if that entry is of its current term*; earlier
entries commit indirectly with it.  This is what makes figure 8 safe.

Follower side (figure 2, AppendEntries receiver): reject a stale term; reject
when the log has no entry at ``prev_log_index`` with ``prev_log_term`` and say
why (the fast-backtracking hint); otherwise delete a conflicting suffix --
only on a real term conflict, never because a stale or duplicate message is
shorter than the log -- append what is new, and advance ``commit_index`` to
``min(leader_commit, prev_log_index + len(entries))`` (never backwards).

Invariants: a conflicting entry is never at or below ``commit_index``
(Leader Completeness); a leader never truncates its own log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.commands import Request, request_key
from consensus.log import Log
from consensus.quorum import QuorumSystem
from consensus.replica import NodeId, Outputs
from protocols.raft.messages import AppendEntries, AppendEntriesResponse, Entry
from protocols.raft.options import RaftOptions
from protocols.raft.progress import Progress, ProgressState
from protocols.raft.reads import Reads
from protocols.raft.records import LogAppend, LogTruncate, SnapshotTaken
from protocols.raft.roles import Role

__all__ = ["Replication"]


class Replication(Reads):
    """The AppendEntries half of ``RaftReplica`` (state is owned by ``core``)."""

    options: RaftOptions
    peers: tuple[NodeId, ...]
    #: Every server this leader replicates to: voters and learners, not itself.
    _replicas: tuple[NodeId, ...]
    quorum: QuorumSystem
    term: int
    log: Log[Entry]
    commit_index: int
    role: Role
    leader_id: NodeId | None
    _now: float
    _last_leader_contact: float | None
    _progress: dict[NodeId, Progress]
    _heartbeat_deadline: float | None
    _check_quorum_deadline: float | None
    _flush_at: float | None
    _synced: int
    _pending: dict[int, tuple[int, Request]]
    _pending_ids: dict[tuple[int, int], int]
    #: Leadership transfer under way (``transfer``): its target, or None.
    _transfer_target: NodeId | None
    #: The snapshot replacing the compacted log prefix, if any (see ``snapshots``).
    _snapshot: SnapshotTaken | None

    def _become_follower(self, term: int, leader: NodeId | None, out: Outputs) -> None:
        raise NotImplementedError

    def _reset_election_timer(self) -> None:
        raise NotImplementedError

    def _reject_overwritten(self, request: Request, out: Outputs) -> None:
        raise NotImplementedError

    def _send_snapshot(self, peer: NodeId, progress: Progress, out: Outputs) -> None:
        raise NotImplementedError

    def _snapshot_heartbeat(self, peer: NodeId, progress: Progress, out: Outputs) -> None:
        raise NotImplementedError

    def _note_configs(self, first: int, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def _truncate_configs(self, after: int) -> None:
        raise NotImplementedError

    def _prune_progress(self) -> None:
        raise NotImplementedError

    def _transfer_progress(self, peer: NodeId, out: Outputs) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------- log

    def _term_at(self, index: int) -> int:
        if index == self.log.snapshot_index:
            return self.log.snapshot_term
        return self.log[index].term

    def _first_index_of_term(self, term: int, hi: int) -> int:
        """The first index <= ``hi`` whose term is ``term`` (terms never decrease)."""
        lo = self.log.first_index
        while lo < hi:
            mid = (lo + hi) // 2
            if self._term_at(mid) < term:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _last_index_up_to_term(self, term: int, hi: int) -> int:
        """The last index <= ``hi`` whose term is <= ``term`` (snapshot index if none)."""
        lo = self.log.snapshot_index
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._term_at(mid) <= term:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # ---------------------------------------------------------------- leader

    def _append_own(self, payload: Any, out: Outputs) -> int:
        """Leader: append a new entry of the current term; it goes out on the next flush."""
        assert self.role is Role.LEADER
        entry = Entry(term=self.term, payload=payload)
        index = self.log.append(entry)
        out.persist.append(LogAppend(index=index, entries=(entry,)))
        self._flush_at = self._now
        if not self.peers:
            self._maybe_commit()
        return index

    def _flush(self, out: Outputs) -> None:
        self._flush_at = None
        if self._read_round_due:
            # Every message from here on carries the new round; answers to it prove
            # we still led after the waiting reads arrived.
            self._read_round_due = False
            self._new_round()
            for peer, progress in self._progress.items():
                self._send_heartbeat(peer, progress, out)
        # Every tracked server: the members, and removed ones until they hold C_new.
        for peer in self._progress:
            self._send_entries(peer, out)

    def _send_entries(self, peer: NodeId, out: Outputs) -> None:
        progress, last = self._progress[peer], self.log.last_index
        while progress.next <= last and self._send_append(peer, out, allow_empty=False):
            pass

    def _send_append(self, peer: NodeId, out: Outputs, allow_empty: bool) -> bool:
        """Send ``peer`` the entries from its ``next`` index, if flow control allows."""
        progress = self._progress[peer]
        if progress.is_paused():
            return False
        lo = progress.next
        if lo <= self.log.snapshot_index:
            # The entries it needs are compacted away: send the snapshot instead.
            self._send_snapshot(peer, progress, out)
            return True
        hi = min(self.log.last_index + 1, lo + self.options.max_entries_per_message)
        entries = tuple(self.log.entries(lo, hi)) if lo < hi else ()
        if not entries and not allow_empty:
            return False
        prev = lo - 1
        message = AppendEntries(
            term=self.term,
            prev_log_index=prev,
            prev_log_term=self._term_at(prev),
            entries=entries,
            leader_commit=self.commit_index,
            read_round=self._read_round,
        )
        # Eager: it promises nothing about our own disk (see ``synced``).
        out.send_eager(peer, message)
        progress.sent(prev + len(entries))
        return True

    def _leader_tick(self, out: Outputs) -> None:
        now = self._now
        if self._check_quorum_deadline is not None and now >= self._check_quorum_deadline:
            if not self._check_quorum(out):
                return
        if self._flush_at is not None and now >= self._flush_at:
            self._flush(out)
        if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
            self._heartbeat_deadline = now + self.options.heartbeat_interval
            if len(self._progress) > len(self._replicas):
                self._prune_progress()  # removed servers (membership)
            if self.options.read_mode == "lease":
                self._new_round()  # its answers renew the lease
            self._heartbeat(out)

    def _heartbeat(self, out: Outputs) -> None:
        for peer, progress in self._progress.items():
            if progress.state is ProgressState.REPLICATE and progress.stalled():
                # Nothing acknowledged for a whole interval: assume a loss, re-probe.
                self.counters["replication_stalls"] += 1
                progress.become_probe()
            progress.mark_heartbeat()
            if progress.state is ProgressState.SNAPSHOT:
                self._snapshot_heartbeat(peer, progress, out)
            elif progress.state is ProgressState.PROBE:
                progress.probe_sent = False  # resend a probe that may have been lost
                if self._send_append(peer, out, allow_empty=True):
                    continue
            self._send_heartbeat(peer, progress, out)

    def _send_heartbeat(self, peer: NodeId, progress: Progress, out: Outputs) -> None:
        # At prev_log_index = match, which the follower holds: never rejected.  Below
        # our snapshot we no longer know match's term; index 0 is as safe (but cannot
        # advance the follower's commit index).
        match = progress.match if progress.match >= self.log.snapshot_index else 0
        heartbeat = AppendEntries(
            term=self.term,
            prev_log_index=match,
            prev_log_term=self._term_at(match) if match else 0,
            leader_commit=self.commit_index,
            read_round=self._read_round,
        )
        out.send_eager(peer, heartbeat)

    def _check_quorum(self, out: Outputs) -> bool:
        """CheckQuorum (thesis 6.2): step down unless a quorum was heard from recently."""
        active = {self.node_id}
        for peer, progress in self._progress.items():
            if progress.recent_active:
                active.add(peer)
            progress.recent_active = False
        if not self.quorum.is_phase2_quorum(active):
            self.counters["check_quorum_step_downs"] += 1
            self._become_follower(self.term, None, out)
            return False
        self._check_quorum_deadline = self._now + self.options.election_timeout_max
        return True

    def _responding_follower(self, src: NodeId, term: int) -> Progress | None:
        """The progress of a follower answering this leader's current term, marked
        active; None (and counted stale) for any other response."""
        progress = self._progress.get(src)
        if self.role is not Role.LEADER or term != self.term or progress is None:
            self.counters["stale_messages"] += 1
            return None
        progress.recent_active = True
        return progress

    def _on_append_entries_response(
        self, src: NodeId, m: AppendEntriesResponse, out: Outputs
    ) -> None:
        """Figure 2, leaders: on success update match/next; on failure back off and retry."""
        progress = self._responding_follower(src, m.term)
        if progress is None:
            return
        if m.read_round > progress.acked_round:
            progress.acked_round = m.read_round
            if self._reads or self._round_sent:
                self._round_acked(out)
        if m.success:
            advanced = progress.maybe_update(m.index)
            if progress.state is ProgressState.PROBE and progress.match == m.index:
                # The probe found where the logs agree: stream from here on.
                progress.become_replicate()
            if advanced:
                self._maybe_commit()
                if self._transfer_target is not None:
                    self._transfer_progress(src, out)
            self._send_entries(src, out)
            return
        self.counters["rejections_received"] += 1
        if progress.maybe_decrease(m.index, self._hint_next(m)):
            self._send_append(src, out, allow_empty=True)
        else:
            self.counters["stale_messages"] += 1

    def _hint_next(self, m: AppendEntriesResponse) -> int:
        """Where to probe next, from the follower's conflict hint (section 5.3)."""
        if m.conflict_term > 0:
            upper = min(m.index, self.log.last_index)
            index = self._last_index_up_to_term(m.conflict_term, upper)
            if index > self.log.snapshot_index and self._term_at(index) == m.conflict_term:
                return index + 1  # we hold that term: resume right after our last entry of it
        return max(m.conflict_index, 1)

    def _maybe_commit(self) -> None:
        """Figure 2: commit N if a quorum matched N and log[N].term == currentTerm."""
        match = {peer: progress.match for peer, progress in self._progress.items()}
        # Our own copy counts once it is durable (we replicate before our write ends).
        match[self.node_id] = min(self.log.last_index, self._synced)
        index = self.quorum.committed(match)
        if index > self.commit_index and self._term_at(index) == self.term:
            self.commit_index = index

    # -------------------------------------------------------------- follower

    def _follow(self, leader: NodeId, term: int, out: Outputs) -> None:
        """``leader`` of the current ``term`` spoke (AppendEntries or InstallSnapshot):
        follow it and restart the election timer (figure 2, followers)."""
        assert self.role is not Role.LEADER, f"two leaders in term {self.term}"
        if self.role is not Role.FOLLOWER:
            self._become_follower(term, leader, out)
        self.leader_id = leader
        self._last_leader_contact = self._now
        self._reset_election_timer()

    def _on_append_entries(self, src: NodeId, m: AppendEntries, out: Outputs) -> None:
        """Figure 2, AppendEntries receiver."""
        if m.term < self.term:
            self.counters["stale_appends_rejected"] += 1
            stale = AppendEntriesResponse(term=self.term, success=False, index=m.prev_log_index)
            out.send(src, stale)
            return
        self._follow(src, m.term, out)
        log = self.log
        prev = m.prev_log_index
        if prev > log.last_index:
            self._reject_append(src, m, 0, log.last_index + 1, out)
            return
        if prev >= log.snapshot_index and self._term_at(prev) != m.prev_log_term:
            conflict_term = self._term_at(prev)
            first = self._first_index_of_term(conflict_term, prev)
            self._reject_append(src, m, conflict_term, first, out)
            return
        self._append_from(prev + 1, m.entries, out)
        last_new = prev + len(m.entries)
        if m.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(m.leader_commit, last_new))
        response = AppendEntriesResponse(
            term=self.term, success=True, index=last_new, read_round=m.read_round
        )
        out.send(src, response)

    def _reject_append(
        self, src: NodeId, m: AppendEntries, conflict_term: int, conflict_index: int, out: Outputs
    ) -> None:
        self.counters["appends_rejected"] += 1
        response = AppendEntriesResponse(
            term=self.term,
            success=False,
            index=m.prev_log_index,
            conflict_term=conflict_term,
            conflict_index=conflict_index,
            read_round=m.read_round,
        )
        out.send(src, response)

    def _append_from(self, index: int, entries: Sequence[Entry], out: Outputs) -> None:
        """Figure 2 steps 3-4: drop a conflicting suffix, append entries not yet held."""
        log = self.log
        new: Sequence[Entry] = ()
        for offset, entry in enumerate(entries):
            at = index + offset
            if at <= log.snapshot_index:
                continue  # compacted entries are committed, hence match
            if at > log.last_index:
                new = entries[offset:]
                break
            if log[at].term != entry.term:
                assert at > self.commit_index, f"conflict at committed index {at}"
                log.truncate_after(at - 1)
                self._synced = min(self._synced, at - 1)  # what replaces them is not durable yet
                out.persist.append(LogTruncate(after=at - 1))
                self.counters["truncations"] += 1
                self._drop_pending_after(at - 1, out)
                self._truncate_configs(at - 1)  # may revert the configuration
                new = entries[offset:]
                break
        if new:
            first = log.last_index + 1
            assert new[0].term >= self._term_at(first - 1), "log terms must not decrease"
            log.extend(new)
            out.persist.append(LogAppend(index=first, entries=tuple(new)))
            self._note_configs(first, new)  # a configuration entry is in force at once

    def _drop_pending_after(self, index: int, out: Outputs) -> None:
        """Our own proposals after ``index`` were overwritten: tell their clients."""
        for at in [i for i in self._pending if i > index]:
            _, request = self._pending.pop(at)
            del self._pending_ids[request_key(request)]
            self._reject_overwritten(request, out)
