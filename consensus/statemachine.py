"""The state machine interface and the key-value store with client sessions.

Theory of operation
-------------------
The host applies committed log payloads in index order through
``StateMachine.apply(index, payload)``.  Only client ``Request`` payloads
(alone or in a ``Batch``) change state; ``Noop`` and protocol entries are
skipped but still advance ``applied_index``.

A ``Request`` whose command is a ``PackedBatch`` (a host batching
proposals) applies the requests packed inside, each with its own session.

Exactly once: the store keeps a session per client, ``client_id -> (seq,
result)`` of the last request applied.  A request whose ``seq`` equals the
session's is a retry of a request already applied: it is not applied again
and the earlier result is returned.  A request with a lower ``seq`` is a stale
duplicate (the client has moved on); it is skipped and answered with
``STALE``.  This relies on the client invariant of ``commands.Request``.

Snapshots carry the data, the sessions and ``applied_index``, so a node that
restores one answers retries exactly as the nodes that applied the log did.

Invariant: ``applied_index`` only grows, by one per applied entry.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from consensus.codec import Codec
from consensus.commands import (
    Append,
    Batch,
    ChangeMembership,
    CompareAndSet,
    Delete,
    Get,
    PackedBatch,
    Put,
    Request,
)

__all__ = ["KVSnapshot", "KVStore", "STALE", "StateMachine", "pack", "unpack"]


class _Stale:
    """The answer to a request older than the client's latest applied one."""

    _instance: _Stale | None = None

    def __new__(cls) -> _Stale:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "STALE"


STALE: Any = _Stale()


class StateMachine(Protocol):
    applied_index: int

    def apply(self, index: int, payload: Any) -> list[tuple[Request, Any]]:
        """Apply the payload committed at ``index``; return (request, result) pairs."""
        ...

    def query(self, command: Any) -> Any:
        """Answer a read-only command from the current state (linearizable reads)."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, index: int, data: bytes) -> None: ...


@attrs.frozen(kw_only=True)
class KVSnapshot:
    """What a KVStore snapshot holds, encoded by ``consensus.codec``."""

    applied_index: int
    data: dict[str, str]
    sessions: dict[int, tuple[int, Any]]


def _get(data: dict[str, str], command: Get) -> str | None:
    return data.get(command.key)


def _put(data: dict[str, str], command: Put) -> None:
    data[command.key] = command.value


def _append(data: dict[str, str], command: Append) -> None:
    data[command.key] = data.get(command.key, "") + command.value


def _compare_and_set(data: dict[str, str], command: CompareAndSet) -> bool:
    if data.get(command.key) == command.expected:
        data[command.key] = command.new
        return True
    return False


def _delete(data: dict[str, str], command: Delete) -> bool:
    return data.pop(command.key, None) is not None


def _change_membership(data: dict[str, str], command: ChangeMembership) -> tuple[int, ...]:
    # The protocol carried out the change; applying it answers the client.
    return tuple(command.members)


#: How each command type runs against the data: one lookup, not an isinstance chain.
_EXECUTE: dict[type, Any] = {
    Get: _get,
    Put: _put,
    Append: _append,
    CompareAndSet: _compare_and_set,
    Delete: _delete,
    ChangeMembership: _change_membership,
}

_snapshot_codec: Any = None


def _codec() -> Any:
    global _snapshot_codec
    if _snapshot_codec is None:
        _snapshot_codec = Codec([KVSnapshot])
    return _snapshot_codec


def pack(requests: Any) -> PackedBatch:
    """Client requests as one ``PackedBatch`` (encoded once, here)."""
    batch = Batch(requests=tuple(requests))
    return PackedBatch(data=_codec().encode(batch), count=len(batch.requests))


def unpack(packed: PackedBatch) -> tuple[Request, ...]:
    """The requests a ``PackedBatch`` carries, in the order they were packed."""
    batch = _codec().decode(packed.data)
    if not isinstance(batch, Batch) or len(batch.requests) != packed.count:
        raise ValueError(f"not a packed batch of {packed.count} requests")
    return batch.requests


class KVStore:
    """A string key-value store with get, put, append, compare-and-set, delete."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.sessions: dict[int, tuple[int, Any]] = {}
        self.applied_index = 0

    def apply(self, index: int, payload: Any) -> list[tuple[Request, Any]]:
        if index != self.applied_index + 1:
            raise ValueError(f"apply out of order: index {index} after {self.applied_index}")
        self.applied_index = index
        if isinstance(payload, Request):
            if type(payload.command) is PackedBatch:
                return self._apply_packed(payload.command, [])
            return [(payload, self._apply_request(payload))]
        if isinstance(payload, Batch):
            results: list[tuple[Request, Any]] = []
            for r in payload.requests:
                if type(r.command) is PackedBatch:  # a protocol's batch of host packs
                    self._apply_packed(r.command, results)
                else:
                    results.append((r, self._apply_request(r)))
            return results
        return []

    def apply_requests(self, index: int, requests: Any) -> list[tuple[Request, Any]]:
        """Apply, at ``index``, the entry that carried ``requests`` (a pack whose
        requests the host still holds): the same as applying the pack."""
        if index != self.applied_index + 1:
            raise ValueError(f"apply out of order: index {index} after {self.applied_index}")
        self.applied_index = index
        return [(r, self._apply_request(r)) for r in requests]

    def _apply_packed(
        self, packed: PackedBatch, results: list[tuple[Request, Any]]
    ) -> list[tuple[Request, Any]]:
        # A host's batch: each request inside has its own session; the batch's
        # own (the host's) is not a client and keeps none.
        for r in unpack(packed):
            results.append((r, self._apply_request(r)))
        return results

    def _apply_request(self, request: Request) -> Any:
        session = self.sessions.get(request.client_id)
        if session is not None:
            last_seq, last_result = session
            if request.seq == last_seq:
                return last_result
            if request.seq < last_seq:
                return STALE
        command = request.command
        # A Put, the most common command on every replica, skips the dispatch.
        if type(command) is Put:
            self.data[command.key] = command.value
            result = None
        else:
            result = self.execute(command)
        self.sessions[request.client_id] = (request.seq, result)
        return result

    def execute(self, command: Any) -> Any:
        """Run one command against the data (no session bookkeeping)."""
        op = _EXECUTE.get(type(command))
        if op is None:
            # A subclass of a command runs as its base command.
            ops = [_EXECUTE[c] for c in type(command).__mro__ if c in _EXECUTE]
            if not ops:
                raise TypeError(f"not a key-value command: {command!r}")
            op = ops[0]
        return op(self.data, command)

    def query(self, command: Any) -> Any:
        if not isinstance(command, Get):
            raise TypeError(f"only Get is read-only, got {type(command).__name__}")
        return self.data.get(command.key)

    def snapshot(self) -> bytes:
        snap = KVSnapshot(
            applied_index=self.applied_index, data=dict(self.data), sessions=dict(self.sessions)
        )
        return _codec().encode(snap)

    def restore(self, index: int, data: bytes) -> None:
        snap = _codec().decode(data)
        if not isinstance(snap, KVSnapshot):
            raise ValueError(f"not a KVStore snapshot: {type(snap).__name__}")
        if snap.applied_index != index:
            raise ValueError(f"snapshot covers index {snap.applied_index}, restored as {index}")
        self.data = dict(snap.data)
        self.sessions = dict(snap.sessions)
        self.applied_index = index
