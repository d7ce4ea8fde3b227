"""The replicated log: a sequence of entries indexed from 1, with a compacted prefix.

Theory of operation
-------------------
Entries are any values (Raft stores ``Entry(term, payload)``).  Index 0 is the
empty log's sentinel.  After a snapshot, the prefix up to ``snapshot_index``
is dropped; its last entry's metadata (``snapshot_term`` for Raft) is kept so
consistency checks at the boundary still work.

Invariants:
  snapshot_index <= last_index
  entry i is stored at self._entries[i - snapshot_index - 1]
"""

from __future__ import annotations

from typing import Generic, Iterable, TypeVar

__all__ = ["CompactedError", "Log"]

E = TypeVar("E")


class CompactedError(IndexError):
    """The requested index lies in the compacted prefix."""


class Log(Generic[E]):
    __slots__ = ("_entries", "snapshot_index", "snapshot_term")

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0) -> None:
        self._entries: list[E] = []
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def first_index(self) -> int:
        """Index of the first entry still held (``last_index + 1`` when none)."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    def __contains__(self, index: int) -> bool:
        return self.snapshot_index < index <= self.last_index

    def __getitem__(self, index: int) -> E:
        if index <= self.snapshot_index:
            raise CompactedError(f"index {index} is compacted (snapshot at {self.snapshot_index})")
        if index > self.last_index:
            raise IndexError(f"index {index} beyond last index {self.last_index}")
        return self._entries[index - self.snapshot_index - 1]

    def last(self) -> E | None:
        return self._entries[-1] if self._entries else None

    def entries(self, lo: int, hi: int | None = None) -> list[E]:
        """Entries with ``lo <= index < hi`` (``hi`` defaults past the end)."""
        if lo <= self.snapshot_index:
            raise CompactedError(f"index {lo} is compacted (snapshot at {self.snapshot_index})")
        start = lo - self.snapshot_index - 1
        stop = len(self._entries) if hi is None else max(start, hi - self.snapshot_index - 1)
        return self._entries[start:stop]

    def append(self, entry: E) -> int:
        self._entries.append(entry)
        return self.last_index

    def extend(self, entries: Iterable[E]) -> None:
        self._entries.extend(entries)

    def truncate_after(self, index: int) -> None:
        """Drop every entry after ``index`` (a conflicting suffix)."""
        if index < self.snapshot_index:
            raise CompactedError(f"cannot truncate inside the snapshot (at {self.snapshot_index})")
        del self._entries[index - self.snapshot_index :]

    def compact(self, index: int, term: int = 0) -> None:
        """Drop entries up to ``index``, remembering the last one's ``term``."""
        if index <= self.snapshot_index:
            return
        if index >= self.last_index:
            self._entries = []
        else:
            del self._entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term
