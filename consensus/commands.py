"""Client commands, requests and the payloads a replicated log carries.

Theory of operation
-------------------
A client builds a *command* (``Get``, ``Put``, ``Append``, ``CompareAndSet``,
``Delete``) and wraps it in a ``Request`` stamped with its client id and a
per-client sequence number.  The pair ``(client_id, seq)`` names the request
everywhere: in the log, in the state machine's session table (so a retried
request is applied once), and in the recorded history.

A log slot holds a *payload*: a ``Request``, a ``Noop`` (a leader's first
entry, or a hole filled by Paxos), a ``Batch`` of requests (protocols that
batch many requests into one slot), or a protocol's own configuration entry.
A host that batches proposals (``ReplicaHost(pack_proposals=...)``) proposes
a ``Request`` whose command is a ``PackedBatch`` of client requests.
The state machine applies requests and ignores every other payload.

These are plain frozen values: no logic, no wire format (see ``codec``).
"""

from __future__ import annotations

from typing import Union

import attrs

__all__ = [
    "Append",
    "Batch",
    "ChangeMembership",
    "Command",
    "CompareAndSet",
    "Delete",
    "Get",
    "Noop",
    "PackedBatch",
    "Payload",
    "Put",
    "Request",
    "READ_ONLY",
    "RequestKey",
    "request_key",
    "requests_in",
]


@attrs.frozen(kw_only=True)
class Get:
    """Read a key; the result is its value, or ``None`` when absent."""

    key: str


@attrs.frozen(kw_only=True)
class Put:
    """Write a key; the result is ``None``."""

    key: str
    value: str


@attrs.frozen(kw_only=True)
class Append:
    """Append to a key's value (absent counts as ``""``); the result is ``None``."""

    key: str
    value: str


@attrs.frozen(kw_only=True)
class CompareAndSet:
    """Set ``key`` to ``new`` if its value equals ``expected`` (``None``: absent).

    The result is ``True`` when the swap happened, ``False`` otherwise.
    """

    key: str
    expected: str | None
    new: str


@attrs.frozen(kw_only=True)
class Delete:
    """Remove a key; the result is ``True`` if it existed."""

    key: str


@attrs.frozen(kw_only=True)
class ChangeMembership:
    """Change the cluster's voting members to ``members`` (protocols with
    ``ProtocolSpec.membership``); the result is the new member tuple.
    Not a key-value operation: linearizability checks ignore it."""

    members: tuple[int, ...]


@attrs.frozen(kw_only=True)
class PackedBatch:
    """Client requests a host proposed together as one log entry (batching).

    ``data`` is the requests, encoded once by the state machine's codec
    (``consensus.statemachine.pack``); the replicated log, the write-ahead log
    and the network carry them as opaque bytes, and each state machine
    unpacks them when it applies the entry.  It travels as the command of a
    ``Request`` from the host's own session, so a protocol proposes, orders
    and rejects it like any request; the requests inside keep their own
    client sessions (exactly once, each).  ``count``: requests inside."""

    data: bytes
    count: int


Command = Union[Get, Put, Append, CompareAndSet, Delete, ChangeMembership, PackedBatch]  # noqa: UP007

#: Command types that never change the state machine.
READ_ONLY: tuple[type, ...] = (Get,)


@attrs.frozen(kw_only=True)
class Request:
    """One client command, named by ``(client_id, seq)``.

    Invariant: a client has at most one request outstanding, and its ``seq``
    grows by one per new command; a retry reuses the same ``seq``.
    """

    client_id: int
    seq: int
    command: Command


@attrs.frozen(kw_only=True)
class Noop:
    """An entry with no effect on the state machine."""


@attrs.frozen(kw_only=True)
class Batch:
    """Several requests decided together in one log slot, applied in order."""

    requests: tuple[Request, ...]


Payload = Union[Request, Noop, Batch]  # noqa: UP007 (a runtime alias)


RequestKey = tuple[int, int]


def request_key(request: Request) -> RequestKey:
    """``(client_id, seq)``: the identity of a request and of all its retries."""
    return (request.client_id, request.seq)


def requests_in(payload: object) -> tuple[Request, ...]:
    """The client requests a log payload carries, in apply order."""
    if isinstance(payload, Request):
        return (payload,)
    if isinstance(payload, Batch):
        return payload.requests
    return ()
