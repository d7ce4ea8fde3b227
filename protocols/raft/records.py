"""Raft's durable records, and their replay on recovery.

Theory of operation
-------------------
Figure 2's persistent state is ``currentTerm``, ``votedFor`` and ``log[]``.
The replica writes it as an append-only sequence of records (see
``consensus.storage``):

* ``HardState(term, voted_for)``: whenever either changes; the last one wins.
* ``LogAppend(index, entries)``: entries written at ``index``,
  ``index + 1``, ...; always contiguous with the log before it.
* ``LogTruncate(after)``: a conflicting suffix after ``after`` was dropped.
* ``SnapshotTaken(index, term, data, config)``: the state machine's snapshot
  covering the log up to ``index`` (whose entry had ``term``), and the
  configuration in force there (``None`` in records older than membership
  changes: the initial configuration).  It is written by a
  compaction, which replaces every stored record with ``HardState``,
  ``SnapshotTaken`` and a ``LogAppend`` of the entries after ``index``.

The commit index is volatile and never written: a restarted replica re-learns
it from the leader (or, as a leader, from a quorum of acknowledgements).

``replay`` rebuilds the state from records in the order they were persisted.
Invariant checked while replaying: every ``LogAppend`` starts right after the
last index rebuilt so far.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from consensus.log import Log
from protocols.raft.messages import Configuration, Entry

__all__ = [
    "DurableState",
    "HardState",
    "LogAppend",
    "LogTruncate",
    "SnapshotTaken",
    "compacted",
    "replay",
]


@attrs.frozen(kw_only=True)
class HardState:
    """``currentTerm`` and ``votedFor`` (``None``: no vote in this term)."""

    term: int
    voted_for: int | None


@attrs.frozen(kw_only=True)
class LogAppend:
    """``entries`` were appended, the first at ``index``."""

    index: int
    entries: tuple[Entry, ...]


@attrs.frozen(kw_only=True)
class LogTruncate:
    """Every entry after ``after`` was removed."""

    after: int


@attrs.frozen(kw_only=True)
class SnapshotTaken:
    """A state-machine snapshot replacing the log up to ``index``."""

    index: int
    term: int
    data: bytes
    #: The configuration in force at ``index`` (the latest config entry up to it).
    config: Configuration | None = None


@attrs.define
class DurableState:
    """What recovery rebuilds: figure 2's persistent state, and the latest snapshot."""

    hard: HardState = HardState(term=0, voted_for=None)
    log: Log[Entry] = attrs.Factory(Log)
    snapshot: SnapshotTaken | None = None


def replay(records: Iterable[Any]) -> DurableState:
    """Rebuild term, vote and log from records, oldest first."""
    state = DurableState()
    for record in records:
        log = state.log
        if isinstance(record, HardState):
            state.hard = record
        elif isinstance(record, LogAppend):
            if record.index != log.last_index + 1:
                raise ValueError(
                    f"LogAppend at {record.index} does not follow last index {log.last_index}"
                )
            log.extend(record.entries)
        elif isinstance(record, LogTruncate):
            log.truncate_after(record.after)
        elif isinstance(record, SnapshotTaken):
            state.snapshot = record
            state.log = compacted(log, record.index, record.term)
        else:
            raise TypeError(f"not a Raft record: {record!r}")
    return state


def compacted(log: Log[Entry], index: int, term: int) -> Log[Entry]:
    """``log`` with a snapshot at (``index``, ``term``) in place of its prefix.

    Entries after ``index`` survive only if the log holds ``index`` with that
    term (figure 13, step 6); otherwise the whole log is replaced (step 7).
    """
    if index in log and log[index].term == term:
        log.compact(index, term)
        return log
    if (index, term) == (log.snapshot_index, log.snapshot_term):
        return log
    return Log(snapshot_index=index, snapshot_term=term)
