"""The learner side of Multi-Paxos: chosen slots, delivered in slot order.

Theory of operation
-------------------
Slots may be chosen out of order (a pipelined leader's later slot reaches a
majority first; a follower learns slot 9 from its own accepted value before it
catches up on slot 7).  ``ChosenLog`` records each chosen value and hands the
host ``Committed`` entries strictly in slot order, each exactly once, with no
gaps: ``drain`` stops at the first slot not yet known.

It keeps every chosen payload after the last snapshot, because it is what the
node answers ``CatchUp`` with (the leader re-sends the log to followers that
missed it).  A snapshot (``compact`` from the host, or ``install`` of one
received from a peer) replaces the prefix it covers.

Chosen state is volatile: after a restart the log starts empty at the last
snapshot and is relearned.

Invariants:
  snapshot_index <= applied
  every slot in (snapshot_index, applied] is in _chosen
  a slot is chosen with one value only (asserted: it is Paxos' safety property)
"""

from __future__ import annotations

from typing import Any

from consensus.replica import Committed

__all__ = ["ChosenLog"]


class ChosenLog:
    """Chosen values by slot, with an in-order delivery cursor and a snapshot prefix."""

    def __init__(self) -> None:
        self.snapshot_index = 0
        self.snapshot_data = b""
        #: The configurations as of the snapshot (``configs.ConfigState``; None: initial).
        self.snapshot_config: Any = None
        # Every slot <= applied has been handed to the host as Committed.
        self.applied = 0
        self._chosen: dict[int, Any] = {}
        self._max_slot = 0

    @property
    def commit_index(self) -> int:
        """The chosen prefix: every slot up to here is known chosen (and delivered)."""
        return self.applied

    @property
    def max_slot(self) -> int:
        """The highest slot known chosen (0 if none)."""
        return max(self._max_slot, self.snapshot_index)

    def is_chosen(self, slot: int) -> bool:
        return slot <= self.snapshot_index or slot in self._chosen

    def get(self, slot: int) -> Any:
        """The payload chosen in ``slot`` (KeyError if unknown or compacted)."""
        return self._chosen[slot]

    def __len__(self) -> int:
        return len(self._chosen)

    def choose(self, slot: int, payload: Any) -> bool:
        """Record that ``payload`` was chosen in ``slot``; ``True`` if this is news."""
        if slot <= self.snapshot_index:
            return False
        previous = self._chosen.get(slot, _MISSING)
        if previous is not _MISSING:
            assert previous == payload, f"slot {slot} chosen twice: {previous!r} and {payload!r}"
            return False
        self._chosen[slot] = payload
        if slot > self._max_slot:
            self._max_slot = slot
        return True

    def ready(self) -> bool:
        """True if ``drain`` would return something (the next slot is chosen)."""
        return self.applied + 1 in self._chosen

    def drain(self) -> list[Committed]:
        """Committed entries for the chosen slots right after ``applied``, in order."""
        out: list[Committed] = []
        chosen = self._chosen
        slot = self.applied + 1
        while slot in chosen:
            out.append(Committed(index=slot, payload=chosen[slot]))
            slot += 1
        self.applied = slot - 1
        return out

    def entries(self, from_slot: int, limit: int) -> list[Any]:
        """Up to ``limit`` chosen payloads of consecutive slots starting at ``from_slot``."""
        out: list[Any] = []
        chosen = self._chosen
        slot = from_slot
        while slot in chosen and len(out) < limit:
            out.append(chosen[slot])
            slot += 1
        return out

    def compact(self, index: int, data: bytes, config: Any = None) -> None:
        """The host snapshotted the state machine at ``index`` (already delivered)."""
        assert index <= self.applied, f"snapshot at {index} beyond applied {self.applied}"
        self._set_snapshot(index, data, config)

    def install(self, index: int, data: bytes, config: Any = None) -> bool:
        """Adopt a peer's snapshot if it is ahead of us; ``True`` if adopted.

        The host must restore it before applying anything after ``index``.
        """
        if index <= self.applied:
            return False
        self._set_snapshot(index, data, config)
        self.applied = index
        return True

    def _set_snapshot(self, index: int, data: bytes, config: Any) -> None:
        if index <= self.snapshot_index:
            return
        self.snapshot_index = index
        self.snapshot_data = data
        self.snapshot_config = config
        for slot in [s for s in self._chosen if s <= index]:
            del self._chosen[slot]


_MISSING: Any = object()
