"""One node's replica data: the newest version of each key, and hints held for others.

Theory of operation
-------------------
A replica keeps, per key, one ``(value, version)``: the newest it has seen
(last writer wins).  ``write`` stores a version only if it is newer, and says
whether it did; an older one is dropped silently, which is exactly how a
write with an old timestamp disappears.  A fallback node of a sloppy quorum
keeps writes meant for another node apart, as *hints* (target -> key ->
newest hinted version), until the target acknowledges a handoff.

Everything is rebuilt from the durable records (``Stored``, ``Hinted``,
``HintDone``) on a restart; callers persist the record a change returns.
Invariant: ``data[key][1]`` only grows; a hint is dropped only once its
target holds that version or a newer one.
"""

from __future__ import annotations

from typing import Any, Iterable

from protocols.nwr.messages import HintDone, Hinted, Stored, Version

__all__ = ["Store", "newer"]


def newer(a: Version | None, b: Version | None) -> bool:
    """Whether version ``a`` is newer than ``b`` (``None``: never written, oldest)."""
    if a is None:
        return False
    return b is None or a > b


class Store:
    """The replica data and hints of one node."""

    def __init__(self, records: Iterable[Any] = ()) -> None:
        #: key -> (value, version); value None is a deletion.
        self.data: dict[str, tuple[str | None, Version]] = {}
        #: target -> key -> (value, version) held for it.
        self.hints: dict[int, dict[str, tuple[str | None, Version]]] = {}
        for record in records:
            if isinstance(record, Stored):
                self.write(record.key, record.value, record.version)
            elif isinstance(record, Hinted):
                self.hint(record.target, record.key, record.value, record.version)
            elif isinstance(record, HintDone):
                self.handed_off(record.target, record.key, record.version)

    def read(self, key: str) -> tuple[str | None, Version | None]:
        """This node's newest version of ``key``: its own, or one it holds for another."""
        value, version = self.data.get(key, (None, None))
        for held in self.hints.values():
            if key in held and newer(held[key][1], version):
                value, version = held[key]
        return value, version

    def write(self, key: str, value: str | None, version: Version) -> bool:
        """Store ``value`` at ``version`` if newer than what is held; True if stored."""
        if not newer(version, self.data.get(key, (None, None))[1]):
            return False
        self.data[key] = (value, version)
        return True

    def hint(self, target: int, key: str, value: str | None, version: Version) -> bool:
        """Hold a write for ``target``; True if it is newer than what is held for it."""
        held = self.hints.setdefault(target, {})
        if key in held and not newer(version, held[key][1]):
            return False
        held[key] = (value, version)
        return True

    def handed_off(self, target: int, key: str, version: Version) -> bool:
        """``target`` holds ``key`` at ``version``: drop the hint unless a newer one waits."""
        held = self.hints.get(target, {})
        if key not in held or newer(held[key][1], version):
            return False
        del held[key]
        if not held:
            del self.hints[target]
        return True
