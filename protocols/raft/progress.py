"""The leader's view of one follower: figure 2's nextIndex/matchIndex, plus flow control.

Theory of operation
-------------------
Figure 2 keeps two numbers per follower: ``next`` (the next entry to send)
and ``match`` (the highest entry known to be replicated there).  As in etcd's
``tracker.Progress`` a follower's progress is in one of two states:

* ``PROBE``: the leader does not know where the logs agree.  It sends one
  AppendEntries at a time (``probe_sent`` pauses further sends) and waits for
  the answer; a rejection moves ``next`` back using the follower's hint; a
  heartbeat tick resends the probe in case it was lost.
* ``REPLICATE``: the logs agree up to ``match``.  The leader streams entries,
  advancing ``next`` optimistically as it sends, with at most
  ``max_inflight`` AppendEntries unacknowledged (``inflight`` holds the last
  index of each).  A rejection, or no progress for a whole heartbeat interval
  with messages outstanding (a loss), falls back to ``PROBE`` from
  ``match + 1``.
* ``SNAPSHOT``: the entries the follower needs were compacted away; an
  ``InstallSnapshot`` of ``pending_snapshot`` is outstanding and nothing else
  is sent (but heartbeats) until it is acknowledged or, after
  ``SNAPSHOT_RETRY_HEARTBEATS`` heartbeats without an answer, resent.

Invariants: ``match < next``; in ``PROBE``, ``inflight`` is empty; the
``inflight`` indexes strictly increase and all lie in ``(match, next)``.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Progress", "ProgressState"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


#: Heartbeats without an answer after which an InstallSnapshot is sent again.
SNAPSHOT_RETRY_HEARTBEATS = 4


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "recent_active",
        "awaited",
        "acked_round",
        "pending_snapshot",
        "snapshot_wait",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE only: a probe is outstanding; send nothing more until answered.
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        #: Heard from this follower since the last CheckQuorum round.
        self.recent_active = False
        #: REPLICATE only: the oldest unacknowledged index when the previous
        #: heartbeat went out, 0 if none (loss detection).
        self.awaited = 0
        #: The highest ReadIndex round this follower answered in our term.
        self.acked_round = 0
        #: SNAPSHOT only: the index of the snapshot sent, and heartbeats since.
        self.pending_snapshot = 0
        self.snapshot_wait = 0

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match}, next={self.next},"
            f" inflight={list(self.inflight)})"
        )

    def is_paused(self) -> bool:
        """True when flow control forbids sending another AppendEntries with entries."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= self.max_inflight

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self._reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self._reset()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self._reset()
        self.pending_snapshot = index
        self.snapshot_wait = 0

    def _reset(self) -> None:
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.awaited = 0

    def mark_heartbeat(self) -> None:
        self.awaited = self.inflight[0] if self.inflight else 0

    def stalled(self) -> bool:
        """True if an entry already unacknowledged at the previous heartbeat still is."""
        return 0 < self.awaited and self.match < self.awaited

    def sent(self, last_index: int) -> None:
        """An AppendEntries whose entries end at ``last_index`` left for this follower."""
        if self.state is ProgressState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A success acknowledged ``index``; returns True if ``match`` advanced."""
        if index <= self.match:
            return False
        self.match = index
        if self.next <= index:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def maybe_decrease(self, rejected: int, hint_next: int) -> bool:
        """The follower rejected ``prev_log_index == rejected``; back ``next`` off.

        Returns False for a stale rejection (one that answers an earlier
        message than the leader now cares about), which must be ignored.
        """
        if self.state is ProgressState.SNAPSHOT:
            return False  # the snapshot's answer (or its retry) moves us on
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            # The logs agree up to match; restart from there, one probe at a time.
            self.become_probe()
            return True
        if rejected != self.next - 1:
            return False
        # hint_next <= rejected, so next strictly decreases; never below match + 1.
        self.next = max(min(rejected, hint_next), self.match + 1)
        self.probe_sent = False
        return True
