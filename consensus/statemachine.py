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

Session expiry (off by default: every session is kept forever).  A store
built with ``max_sessions`` keeps at most that many sessions, dropping the
least recently used (by the index of the entry that last carried a request
of the session) once an applied entry pushes it past the limit; with
``session_ttl`` it drops a session whose last request was applied
``session_ttl`` or more entries ago.  Both are functions of the applied
sequence alone, so every replica expires the same sessions at the same
index: the decision is in the log, no clock involved.  With either set, a
request of a client that has no session and a ``seq`` above 1 (its session
expired, or its first request never applied) is not executed: its result is
``SESSION_EXPIRED``, which the host answers as a rejection with reason
``"session_expired"``, never a silent re-execution.  A client's first
request (``seq`` 1) always opens a session; a *retry* of it that arrives
after that session expired cannot be told from a new client and would run
again, so the limits must outlast any client's retries (a client that cannot
allow even that opens its session with a harmless request, such as a
``Get``).

Snapshots carry the data, the sessions, their order of use and
``applied_index``, so a node that restores one answers retries and expires
sessions exactly as the nodes that applied the log did.

Invariant: ``applied_index`` only grows, by one per applied entry; with
expiry on, ``_last_used`` has exactly the sessions' keys, least recent first.
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

__all__ = [
    "KVSnapshot",
    "KVStore",
    "SESSION_EXPIRED",
    "STALE",
    "StateMachine",
    "pack",
    "unpack",
]


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


class _SessionExpired:
    """The answer to a request whose client has no session any more (see above)."""

    _instance: _SessionExpired | None = None

    def __new__(cls) -> _SessionExpired:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SESSION_EXPIRED"


SESSION_EXPIRED: Any = _SessionExpired()


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
    #: With session expiry: (client_id, index of its last request), least recent first.
    last_used: tuple[tuple[int, int], ...] = ()


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
    """A string key-value store with get, put, append, compare-and-set, delete.

    ``max_sessions``, ``session_ttl``: session expiry (0: off; see the module
    docstring).  Every replica of a cluster must use the same values.
    """

    def __init__(self, max_sessions: int = 0, session_ttl: int = 0) -> None:
        if max_sessions < 0 or session_ttl < 0:
            raise ValueError("max_sessions and session_ttl must be >= 0")
        self.data: dict[str, str] = {}
        self.sessions: dict[int, tuple[int, Any]] = {}
        self.applied_index = 0
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self._expiring = bool(max_sessions or session_ttl)
        # client_id -> index of the entry that last carried its request, least recent
        # first (dicts keep insertion order: a use moves the client to the end).
        self._last_used: dict[int, int] = {}
        #: Sessions dropped so far.
        self.expired = 0

    def apply(self, index: int, payload: Any) -> list[tuple[Request, Any]]:
        if index != self.applied_index + 1:
            raise ValueError(f"apply out of order: index {index} after {self.applied_index}")
        self.applied_index = index
        results: list[tuple[Request, Any]] = []
        if isinstance(payload, Request):
            if type(payload.command) is PackedBatch:
                self._apply_packed(payload.command, results)
            else:
                results.append((payload, self._apply_request(payload)))
        elif isinstance(payload, Batch):
            for r in payload.requests:
                if type(r.command) is PackedBatch:  # a protocol's batch of host packs
                    self._apply_packed(r.command, results)
                else:
                    results.append((r, self._apply_request(r)))
        if self._expiring:
            self._expire()
        return results

    def apply_requests(self, index: int, requests: Any) -> list[tuple[Request, Any]]:
        """Apply, at ``index``, the entry that carried ``requests`` (a pack whose
        requests the host still holds): the same as applying the pack."""
        if index != self.applied_index + 1:
            raise ValueError(f"apply out of order: index {index} after {self.applied_index}")
        self.applied_index = index
        results = [(r, self._apply_request(r)) for r in requests]
        if self._expiring:
            self._expire()
        return results

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
        if self._expiring:
            if session is None and request.seq > 1:
                return SESSION_EXPIRED
            used = self._last_used
            used.pop(request.client_id, None)
            used[request.client_id] = self.applied_index
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

    def _expire(self) -> None:
        """Drop the sessions past the limits, least recently used first."""
        used, sessions = self._last_used, self.sessions
        if self.session_ttl:
            horizon = self.applied_index - self.session_ttl
            while used:
                client_id = next(iter(used))
                if used[client_id] > horizon:
                    break
                del used[client_id], sessions[client_id]
                self.expired += 1
        if self.max_sessions:
            while len(used) > self.max_sessions:
                client_id = next(iter(used))
                del used[client_id], sessions[client_id]
                self.expired += 1

    def answered(self, request: Request) -> tuple[bool, Any]:
        """``(True, answer)`` when applying ``request`` would not execute it (its
        result if it was the session's last, ``STALE`` if older, ``SESSION_EXPIRED``
        if its session is gone); ``(False, None)`` when it would."""
        session = self.sessions.get(request.client_id)
        if session is None:
            if self._expiring and request.seq > 1:
                return True, SESSION_EXPIRED
            return False, None
        last_seq, last_result = session
        if request.seq == last_seq:
            return True, last_result
        if request.seq < last_seq:
            return True, STALE
        return False, None

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
            applied_index=self.applied_index,
            data=dict(self.data),
            sessions=dict(self.sessions),
            last_used=tuple(self._last_used.items()),
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
        self._last_used = dict(snap.last_used)
        if self._expiring and len(self._last_used) != len(self.sessions):
            # A snapshot of a store without expiry: every session counts as used now.
            for client_id in self.sessions:
                self._last_used.setdefault(client_id, index)
        self.applied_index = index
