"""Durable storage for a replica's records: the interface and the in-memory kind.

Theory of operation
-------------------
A protocol persists its durable state as a sequence of *records*: frozen
attrs values of its own (``HardState(term, vote)``, ``Accepted(slot, ...)``,
``LogAppend(entries)``, a snapshot).  Storage only appends records and, for
compaction, atomically replaces all of them with a shorter sequence that
describes the same state.  On restart the host hands ``load()``'s records, in
order, to the protocol's factory, which replays them.

This keeps storage protocol-agnostic: Raft, Multi-Paxos and single-decree
Paxos share one write-ahead log (``consensus.wal``) and one in-memory store.

Contract: after ``append(records)`` and ``sync()`` return, a crash followed by
``load()`` yields every record appended so far, in order.  Records appended but
not synced may or may not survive (never partially: a torn record is dropped).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import attrs

__all__ = ["MemoryStorage", "Storage", "StorageStats"]


@attrs.define
class StorageStats:
    records_written: int = 0
    bytes_written: int = 0
    syncs: int = 0
    compactions: int = 0


class Storage(Protocol):
    stats: StorageStats

    def load(self) -> list[Any]:
        """Every durable record, oldest first."""
        ...

    def append(self, records: Sequence[Any]) -> None:
        """Append records (durable after the next ``sync``)."""
        ...

    def replace(self, records: Sequence[Any]) -> None:
        """Atomically replace all stored records (compaction)."""
        ...

    def sync(self) -> None:
        """Make everything appended so far durable (subject to fsync policy)."""
        ...

    def close(self) -> None: ...


@attrs.define
class MemoryStorage:
    """Records kept in a Python list; survives a simulated crash, not the process.

    Records are immutable values, so they are stored by reference.
    """

    records: list[Any] = attrs.Factory(list)
    stats: StorageStats = attrs.Factory(StorageStats)

    def load(self) -> list[Any]:
        return list(self.records)

    def append(self, records: Sequence[Any]) -> None:
        self.records.extend(records)
        self.stats.records_written += len(records)

    def replace(self, records: Sequence[Any]) -> None:
        self.records = list(records)
        self.stats.records_written += len(records)
        self.stats.compactions += 1

    def sync(self) -> None:
        self.stats.syncs += 1

    def close(self) -> None:
        pass
