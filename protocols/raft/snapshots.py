"""Log compaction and InstallSnapshot (Raft paper section 7, figure 13).

Theory of operation
-------------------
The host snapshots its state machine every so often and calls
``compact(index, data)`` with the index the snapshot covers (never beyond the
commit index).  The replica drops its log up to ``index``, remembering that
entry's term, and rewrites its storage as ``HardState``, ``SnapshotTaken``
and a ``LogAppend`` of the remaining tail (``Outputs.compact`` replaces every
stored record atomically).

A leader whose follower needs an entry it has compacted (``next <=
snapshot_index``) sends ``InstallSnapshot`` with the whole snapshot, and
waits (``Progress`` state ``SNAPSHOT``) for the answer before probing from
the snapshot onwards; it resends after a few silent heartbeats.

A follower installs a snapshot newer than its commit index: it keeps the log
entries after it if its log holds the snapshot's last entry with the same
term (figure 13, step 6), and otherwise discards the whole log (step 7); it
sets its commit index to the snapshot's and asks the host to restore the
state machine (``Outputs.restore``).  A snapshot at or below the commit
index is answered without change: everything committed is already there.

Snapshots carry the configuration in force at their last index (the
membership change record, section 6): ``SnapshotTaken.config`` and
``InstallSnapshot.config`` become the base of ``_configs`` (``membership``).

Invariants: ``log.snapshot_index <= commit_index``; ``_snapshot`` describes
exactly the compacted prefix (its index and term are the log's).
"""

from __future__ import annotations

from consensus.commands import request_key
from consensus.replica import NodeId, Outputs, StateSnapshot
from protocols.raft.messages import Configuration, InstallSnapshot, InstallSnapshotResponse
from protocols.raft.progress import SNAPSHOT_RETRY_HEARTBEATS, Progress, ProgressState
from protocols.raft.records import HardState, LogAppend, SnapshotTaken, compacted
from protocols.raft.replication import Replication

__all__ = ["Snapshots"]


class Snapshots(Replication):
    """The compaction and InstallSnapshot part of ``RaftReplica``."""

    voted_for: NodeId | None
    _saved_hard: HardState
    _emitted: int

    def _compact_configs(self, index: int) -> Configuration | None:
        raise NotImplementedError

    def _reset_configs(self, index: int, base: Configuration | None) -> None:
        raise NotImplementedError

    def _compact(self, index: int, data: bytes, out: Outputs) -> None:
        if index <= self.log.snapshot_index:
            return
        assert index <= self.commit_index, "only committed entries may be compacted"
        term = self._term_at(index)
        self.log.compact(index, term)
        config = self._compact_configs(index)
        self._snapshot = SnapshotTaken(index=index, term=term, data=data, config=config)
        self._rewrite_storage(out)
        self.counters["compactions"] += 1

    def _rewrite_storage(self, out: Outputs) -> None:
        """Replace every stored record by the current state, snapshot first."""
        assert self._snapshot is not None
        hard = HardState(term=self.term, voted_for=self.voted_for)
        self._saved_hard = hard
        records: list[object] = [hard, self._snapshot]
        first = self.log.first_index
        tail = self.log.entries(first)
        if tail:
            records.append(LogAppend(index=first, entries=tuple(tail)))
        out.compact = records
        out.persist.clear()  # superseded: the records above describe everything

    # ---------------------------------------------------------------- leader

    def _send_snapshot(self, peer: NodeId, progress: Progress, out: Outputs) -> None:
        snapshot = self._snapshot
        assert snapshot is not None and snapshot.index == self.log.snapshot_index
        message = InstallSnapshot(
            term=self.term,
            last_included_index=snapshot.index,
            last_included_term=snapshot.term,
            data=snapshot.data,
            config=snapshot.config,
        )
        out.send(peer, message)
        progress.become_snapshot(snapshot.index)
        self.counters["snapshots_sent"] += 1

    def _snapshot_heartbeat(self, peer: NodeId, progress: Progress, out: Outputs) -> None:
        """A heartbeat tick for a follower waiting for its snapshot: resend if silent."""
        assert progress.state is ProgressState.SNAPSHOT
        progress.snapshot_wait += 1
        if progress.snapshot_wait >= SNAPSHOT_RETRY_HEARTBEATS:
            progress.become_probe()
            self._send_append(peer, out, allow_empty=True)

    def _on_install_snapshot_response(
        self, src: NodeId, m: InstallSnapshotResponse, out: Outputs
    ) -> None:
        progress = self._responding_follower(src, m.term)
        if progress is None:
            return
        if progress.maybe_update(m.index):
            self._maybe_commit()
        if progress.state is ProgressState.SNAPSHOT:
            progress.become_probe()
            self._send_append(src, out, allow_empty=True)

    # -------------------------------------------------------------- follower

    def _on_install_snapshot(self, src: NodeId, m: InstallSnapshot, out: Outputs) -> None:
        """Figure 13, InstallSnapshot receiver (one chunk: offset 0, done)."""
        if m.term < self.term:
            self.counters["stale_messages"] += 1
            out.send(src, InstallSnapshotResponse(term=self.term, index=0))
            return
        self._follow(src, m.term, out)
        index = m.last_included_index
        if index <= self.commit_index:
            # Everything it covers is committed here already: logs match up to commit.
            out.send(src, InstallSnapshotResponse(term=self.term, index=self.commit_index))
            return
        self.log = compacted(self.log, index, m.last_included_term)
        self._synced = min(self._synced, self.log.last_index)
        # Our own proposals are gone unless the log survived past them.
        for at in [i for i in self._pending if i <= index or i > self.log.last_index]:
            _, request = self._pending.pop(at)
            del self._pending_ids[request_key(request)]
            self._reject_overwritten(request, out)
        self.commit_index = self._emitted = index
        self._snapshot = SnapshotTaken(
            index=index, term=m.last_included_term, data=m.data, config=m.config
        )
        self._reset_configs(index, m.config)  # the snapshot's, then any the kept log holds
        self._rewrite_storage(out)
        out.restore = StateSnapshot(index=index, data=m.data)
        out.send(src, InstallSnapshotResponse(term=self.term, index=index))
        self.counters["snapshots_installed"] += 1
