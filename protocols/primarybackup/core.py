"""Primary-backup replication with a failover monitor, as a sans-I/O plugin.

Theory of operation
-------------------
One node at a time is the *primary* of a ``View`` (epoch, primary, backups);
every node starts in view 1 with the lowest id as primary and every other
node as a backup.  Clients write at the primary; it appends each request to
its log (entries tagged with its epoch), persists it and streams its log to
every other node (``Replicate``, with the log-matching check of the entry
before: Raft's rule, so a follower's log is a prefix of the primary's up to
what it acknowledges).  The primary answers a write once it is *committed*:

* ``sync``: every backup of its view acknowledged it;
* ``semi-sync``: ``acks`` backups did (all of them if there are fewer);
* ``async``: at once, from its own disk.

Followers apply entries up to the commit index the primary sends them.
Reads go to the primary (``supports_reads``): ``local`` reads are answered
from its state once it has applied its whole log as of its promotion;
``confirmed`` reads first ask every backup of its view to confirm it is
still their primary (``ConfirmRead``), like Raft's ReadIndex.

Nobody elects anybody: with ``failover = "none"`` the first primary is
primary forever, and without it nothing is written.  Otherwise the monitor
(``monitor``, on the highest-numbered node) installs new views: it promotes
a backup when the primary stops answering its pings and adds returning
nodes back as backups.  Every node adopts the highest view it hears of from
the monitor's pings (and, fenced, from any message).  A node that adopts a
view where it is no longer primary steps down and follows.

Fencing (``failover = "monitor-fenced"``): every replication and read
message carries the sender's view (its epoch is the fencing token), every
node adopts a newer view from any message, and a node that knows a newer
epoch refuses an older one (``Refuse``, with its view, which deposes the
sender).  Without fencing (``"monitor"``), views come from the monitor
alone, as a Redis Sentinel reconfigures its servers: a follower accepts
entries from any node that acts as primary, whatever its epoch, and a
deposed primary the monitor cannot reach keeps acknowledging writes until
it can: split brain.

A follower whose log conflicts with its primary's (entries of another
epoch at the same index) truncates it, and if that removes entries it had
already applied, it *resyncs*: it rebuilds its state machine from the log it
keeps (``Outputs.restore``), as a Redis replica does a full resync.  This
never happens in a safe configuration; in the others it is where
acknowledged writes vanish.

Durable: log entries (``Stored``, ``Truncated``) and the adopted view
(``ViewChanged``), so a restarted node keeps its log and never goes back to
an older view.  Volatile: the commit index (learned again), the primary's
per-follower progress, read rounds.

Invariants: ``applied <= commit <= len(log)``; ``view.epoch`` only grows;
a primary never truncates its own log while it is primary.
"""

from __future__ import annotations

from typing import Any, Sequence

from consensus.commands import Request, requests_in
from consensus.replica import (
    Committed,
    Outputs,
    ReadReady,
    Rejection,
    Replica,
    ReplicaContext,
    StateSnapshot,
)
from consensus.statemachine import KVStore
from protocols.primarybackup.messages import (
    Ack,
    ConfirmRead,
    Entry,
    Nack,
    Ping,
    Pong,
    ReadConfirmed,
    Refuse,
    Replicate,
    Stored,
    Truncated,
    View,
    ViewChanged,
)
from protocols.primarybackup.monitor import Monitor
from protocols.primarybackup.options import PrimaryBackupOptions

__all__ = ["PrimaryBackup"]


class PrimaryBackup(Replica):
    """One node of primary-backup: primary, backup or standby by its view, and on
    the highest-numbered node also the monitor (see the theory of operation)."""

    supports_reads = True

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any]) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(PrimaryBackupOptions)
        members = ctx.members
        self.fenced = self.options.failover == "monitor-fenced"
        self.others = ctx.peers
        self.view = View(epoch=1, primary=members[0], backups=tuple(members[1:]))
        self.log: list[Entry] = []
        for record in records:
            if isinstance(record, Stored) and record.index == len(self.log) + 1:
                self.log.append(Entry(epoch=record.epoch, payload=record.payload))
            elif isinstance(record, Truncated):
                del self.log[record.after :]
            elif isinstance(record, ViewChanged) and record.view.epoch > self.view.epoch:
                self.view = record.view
        # Invariant: applied <= commit <= len(log).
        self.commit = 0
        self.applied = 0
        # The primary's view of its followers (reset whenever it becomes primary).
        self.match: dict[int, int] = {}
        self.next: dict[int, int] = {}
        #: Reads wait until this index is applied: the whole log at promotion.
        self.read_floor = 0
        #: The log length when this primary adopted its view; the view is
        #: acknowledged once every backup holds that much.
        self.view_floor = 0
        self.acknowledged = 0
        # Confirmed reads: round -> (reads waiting, backups yet to confirm).
        self._rounds: dict[int, tuple[list[ReadReady], set[int]]] = {}
        self._round = 0
        self._round_opened = -1.0
        has_monitor = self.options.failover != "none" and self.node_id == max(members)
        self.monitor = (
            Monitor(
                members=members,
                promotion=self.options.promotion,
                timeout=self.options.failover_timeout,
                rng=ctx.rng,
            )
            if has_monitor
            else None
        )
        self._deadline: float | None = None

    # -- roles ---------------------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self.view.primary == self.node_id

    def leader(self) -> int | None:
        return self.view.primary

    def _adopt(self, view: View, now: float, out: Outputs) -> None:
        """Move to ``view`` if it is newer: the one place roles change."""
        if view.epoch <= self.view.epoch:
            return
        was_primary = self.is_primary
        self.view = view
        out.persist.append(ViewChanged(view=view))
        if self.is_primary and not was_primary:
            self._become_primary(now, out)
        elif was_primary and not self.is_primary:
            self._step_down(out)
        elif self.is_primary:
            # Still primary, with a new set of backups (a node rejoined).
            self.view_floor = len(self.log)
            rounds, self._rounds = self._rounds, {}
            for reads, _ in rounds.values():
                for ready in reads:  # asked again, of the new view's backups
                    self._read_round(now, ready, out)
            self._advance(out)

    def _become_primary(self, now: float, out: Outputs, restarted: bool = False) -> None:
        if not restarted:
            self.counters["leader_changes"] += 1
        last = len(self.log)
        self.match = {n: 0 for n in self.others}
        self.next = {n: last + 1 for n in self.others}
        self.read_floor = self.view_floor = last
        self.acknowledged = 0
        self._rounds = {}
        for node in self.others:
            self._replicate_to(node, out)
        self._advance(out)
        self._arm(now)

    def _step_down(self, out: Outputs) -> None:
        self.counters["step_downs"] += 1
        for reads, _ in self._rounds.values():
            for ready in reads:
                out.rejected.append(
                    Rejection(
                        client_id=ready.client_id,
                        seq=ready.seq,
                        leader_hint=self.view.primary,
                        reason="not_leader",
                    )
                )
        self._rounds = {}
        self.match, self.next = {}, {}
        self.acknowledged = 0

    # -- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        if self.monitor is not None:
            self.monitor.start(now)
        if self.is_primary:
            self._become_primary(now, out, restarted=True)
        self._arm(now)
        self._emit_committed(out)
        return out

    def _arm(self, now: float) -> None:
        if self.is_primary or self.monitor is not None:
            self._deadline = now + self.options.heartbeat
        else:
            self._deadline = None

    def next_deadline(self) -> float | None:
        return self._deadline

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        if self.is_primary:
            for node in self.others:
                self._replicate_to(node, out)
            for number, (_, waiting) in self._rounds.items():
                for node in waiting:
                    out.send(node, ConfirmRead(view=self.view, round=number))
        if self.monitor is not None:
            self._watch(now, out)
        self._arm(now)
        self._emit_committed(out)
        return out

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if not self.is_primary:
            out.reject(request, "not_leader", self.view.primary)
            return out
        entry = Entry(epoch=self.view.epoch, payload=request)
        self.log.append(entry)
        index = len(self.log)
        out.persist.append(Stored(index=index, epoch=entry.epoch, payload=request))
        out.place(request, index)
        for node in self.others:
            if self.next[node] == index:  # in step: stream it now; laggards at the heartbeat
                self._replicate_to(node, out)
        self._advance(out)
        self._emit_committed(out)
        return out

    def read(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if not self.is_primary:
            out.reject(request, "not_leader", self.view.primary)
            return out
        ready = ReadReady(
            client_id=request.client_id, seq=request.seq, index=max(self.commit, self.read_floor)
        )
        if self.options.reads == "local" or not self.view.backups:
            out.reads.append(ready)
        else:
            self._read_round(now, ready, out)
        return out

    def step(self, now: float, src: int, message: Any) -> Outputs:
        out = Outputs()
        if isinstance(message, Replicate):
            self._on_replicate(now, src, message, out)
        elif isinstance(message, Ack):
            self._on_ack(src, message, out)
        elif isinstance(message, Nack):
            self._on_nack(src, message, out)
        elif isinstance(message, Refuse):
            self._adopt(message.view, now, out)
        elif isinstance(message, ConfirmRead):
            self._on_confirm_read(now, src, message, out)
        elif isinstance(message, ReadConfirmed):
            self._on_read_confirmed(src, message, out)
        elif isinstance(message, Ping):
            self._on_ping(now, src, message, out)
        elif isinstance(message, Pong):
            if self.monitor is not None:
                self.monitor.pong(now, src, message)
        else:
            self.counters["dropped_unknown"] += 1
        self._emit_committed(out)
        return out

    # -- the follower's side -------------------------------------------------------------

    def _accepts(self, now: float, src: int, view: View, out: Outputs) -> bool:
        """Whether a follower takes orders from ``src``, which sent ``view``.

        Fenced, the epoch is checked on every message: a newer view is adopted
        (which may depose this node), an older one refused.  Unfenced, views
        come from the monitor alone: a follower takes entries from any node
        that sends them, and a node that believes it is primary ignores the
        others (as a Redis master ignores another master).
        """
        if self.fenced:
            self._adopt(view, now, out)
            if view.epoch < self.view.epoch:
                self.counters["refused_stale_primary"] += 1
                out.send(src, Refuse(view=self.view))
                return False
        if self.is_primary:
            self.counters["ignored_other_primary"] += 1
            return False
        return True

    def _on_replicate(self, now: float, src: int, m: Replicate, out: Outputs) -> None:
        if not self._accepts(now, src, m.view, out):
            return
        prev = m.first - 1
        log = self.log
        if prev > len(log) or (prev > 0 and log[prev - 1].epoch != m.prev_epoch):
            out.send(src, Nack(epoch=self.view.epoch, hint=self._hint(prev)))
            return
        index = prev
        for entry in m.entries:
            index += 1
            if index <= len(log):
                if log[index - 1].epoch == entry.epoch:
                    continue  # the same entry (one primary per epoch writes an index once)
                self._truncate(index - 1, out)
            log.append(entry)
            out.persist.append(Stored(index=index, epoch=entry.epoch, payload=entry.payload))
        if index == m.last and len(log) > index and log[index].epoch != m.view.epoch:
            # Entries past the end of the primary's log, of another epoch: the
            # primary does not have them (an earlier primary, perhaps this node,
            # wrote them).  Drop them, and resync if they were applied.  (Entries
            # of the sender's own epoch may be newer than this message: a
            # delayed or duplicated one.)
            self._truncate(index, out)
        out.send(src, Ack(epoch=self.view.epoch, last=index))
        # Only what this message proved to match the primary's log may be committed.
        commit = min(m.commit, index)
        if commit > self.commit:
            self.commit = commit

    def _hint(self, prev: int) -> int:
        """Where the primary should resend from after a mismatch at ``prev``."""
        log = self.log
        if prev > len(log):
            return len(log) + 1
        # Skip back over the whole run of entries of the mismatching epoch.
        epoch, hint = log[prev - 1].epoch, prev
        while hint > 1 and log[hint - 2].epoch == epoch:
            hint -= 1
        return hint

    def _truncate(self, keep: int, out: Outputs) -> None:
        """Drop every entry after ``keep``; resync if some were applied."""
        dropped = self.log[keep:]
        del self.log[keep:]
        out.persist.append(Truncated(after=keep))
        for entry in dropped:
            for request in requests_in(entry.payload):
                out.reject(request, "overwritten", self.view.primary)
        self.commit = min(self.commit, keep)
        if keep < self.applied:
            self.counters["resyncs"] += 1
            store = KVStore()
            for index, entry in enumerate(self.log, start=1):
                store.apply(index, entry.payload)
            out.restore = StateSnapshot(index=keep, data=store.snapshot())
            out.committed = [c for c in out.committed if c.index <= keep]
            self.applied = keep

    def _on_confirm_read(self, now: float, src: int, m: ConfirmRead, out: Outputs) -> None:
        if self._accepts(now, src, m.view, out):
            out.send(src, ReadConfirmed(epoch=self.view.epoch, round=m.round))

    def _on_ping(self, now: float, src: int, m: Ping, out: Outputs) -> None:
        self._adopt(m.view, now, out)
        out.send(src, self._report())

    def _report(self) -> Pong:
        return Pong(
            epoch=self.view.epoch,
            last_epoch=self.log[-1].epoch if self.log else 0,
            last_index=len(self.log),
            acknowledged=self.acknowledged if self.is_primary else 0,
        )

    # -- the primary's side ----------------------------------------------------------------

    def _replicate_to(self, node: int, out: Outputs) -> None:
        first = self.next[node]
        entries = tuple(self.log[first - 1 : first - 1 + self.options.max_batch])
        prev_epoch = self.log[first - 2].epoch if first > 1 else 0
        message = Replicate(
            view=self.view,
            first=first,
            prev_epoch=prev_epoch,
            entries=entries,
            commit=self.commit,
            last=len(self.log),
        )
        out.send(node, message)
        self.next[node] = first + len(entries)

    def _on_ack(self, src: int, m: Ack, out: Outputs) -> None:
        if not self.is_primary or src not in self.match:
            return
        if self.fenced and m.epoch != self.view.epoch:
            self.counters["stale_acks"] += 1
            return
        last = min(m.last, len(self.log))
        if last > self.match[src]:
            self.match[src] = last
        if self.next[src] <= last:
            self.next[src] = last + 1
        self._advance(out)

    def _on_nack(self, src: int, m: Nack, out: Outputs) -> None:
        if not self.is_primary or src not in self.match:
            return
        hint = max(1, min(m.hint, len(self.log) + 1))
        self.match[src] = min(self.match[src], hint - 1)
        self.next[src] = hint
        self._replicate_to(src, out)

    def _advance(self, out: Outputs) -> None:
        """Raise the commit index as the mode allows; note an acknowledged view."""
        backups = self.view.backups
        mode = self.options.mode
        need = 0 if mode == "async" else len(backups)
        if mode == "semi-sync":
            need = min(self.options.acks, len(backups))
        if need == 0:
            commit = len(self.log)
        else:
            commit = sorted((self.match.get(b, 0) for b in backups), reverse=True)[need - 1]
        if commit > self.commit:
            self.commit = commit
        if self.acknowledged != self.view.epoch and all(
            self.match.get(b, 0) >= self.view_floor for b in backups
        ):
            self.acknowledged = self.view.epoch

    def _read_round(self, now: float, ready: ReadReady, out: Outputs) -> None:
        # Reads arriving at the same instant share a round: its messages all leave
        # after every one of them arrived, which is what a confirmation needs.
        if self._round_opened != now or self._round not in self._rounds:
            self._round += 1
            self._round_opened = now
            self._rounds[self._round] = ([], set(self.view.backups))
            for node in self.view.backups:
                out.send(node, ConfirmRead(view=self.view, round=self._round))
        self._rounds[self._round][0].append(ready)

    def _on_read_confirmed(self, src: int, m: ReadConfirmed, out: Outputs) -> None:
        pending = self._rounds.get(m.round)
        if not self.is_primary or pending is None:
            return
        if self.fenced and m.epoch != self.view.epoch:
            return
        reads, waiting = pending
        waiting.discard(src)
        if not waiting:
            del self._rounds[m.round]
            out.reads.extend(reads)

    # -- the monitor ---------------------------------------------------------------------

    def _watch(self, now: float, out: Outputs) -> None:
        monitor = self.monitor
        assert monitor is not None
        monitor.pong(now, self.node_id, self._report())
        new = monitor.decide(now, self.view)
        if new is not None:
            self.counters["views_installed"] += 1
            self._adopt(new, now, out)
        out.broadcast(self.others, Ping(view=self.view))

    # -- applying ----------------------------------------------------------------------------

    def _emit_committed(self, out: Outputs) -> None:
        log, committed = self.log, out.committed
        for index in range(self.applied + 1, self.commit + 1):
            committed.append(Committed(index=index, payload=log[index - 1].payload))
        if self.commit > self.applied:
            self.applied = self.commit

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "role": "leader" if self.is_primary else "follower",  # the primary leads
            "epoch": self.view.epoch,
            "leader": self.view.primary,
            "backups": list(self.view.backups),
            "commit_index": self.commit,
            "last_index": len(self.log),
        }
