"""NWR's messages and durable records.

Theory of operation
-------------------
A coordinator (the node a client asked) talks to the replicas of one key:

* ``ReadRequest`` / ``ReadReply``: "what is your newest version of ``key``?";
* ``WriteRequest`` / ``WriteAck``: "store this version if it is newer than
  yours"; ``hint`` names the replica a fallback node stands in for (a
  sloppy quorum), which the fallback hands the write to later;
* ``Handoff`` / ``HandoffAck``: a fallback delivers a hinted write to its
  intended replica (hinted handoff), and forgets it once acknowledged.

``op`` names the coordinator's operation, so late or duplicated replies of
an earlier one are ignored; ``op = 0`` asks for no reply (a read repair sent
after the client has its answer).

A *version* is ``(clock, client_id, seq)``, compared as a tuple: last writer
wins.  ``clock`` is the coordinator's clock reading (``clock =
"timestamp"``) or a counter one above the highest version it read
(``"version"``); the client request's identity makes versions unique, and
lets a coordinator recognize a client's retry of a write that an earlier
attempt already made.  ``None`` is the version of a key never written.  A
value of ``None`` with a version is a deletion (a tombstone).

Durable records: ``Stored`` (this node's newest version of a key),
``Hinted`` (a write held for another replica) and ``HintDone`` (handed off).
"""

from __future__ import annotations

import attrs

__all__ = [
    "Handoff",
    "HandoffAck",
    "HintDone",
    "Hinted",
    "ReadReply",
    "ReadRequest",
    "Stored",
    "Version",
    "WriteAck",
    "WriteRequest",
]

#: ``(clock, client_id, seq)``: compared as a tuple, the largest is the newest.
Version = tuple[float, int, int]


@attrs.frozen(kw_only=True)
class ReadRequest:
    """Coordinator -> replica: your newest version of ``key``, for operation ``op``."""

    op: int
    key: str


@attrs.frozen(kw_only=True)
class ReadReply:
    """Replica -> coordinator: ``key`` is ``value`` at ``version`` here (None: never written)."""

    op: int
    key: str
    value: str | None
    version: Version | None


@attrs.frozen(kw_only=True)
class WriteRequest:
    """Coordinator -> replica: store ``value`` at ``version`` unless yours is newer.

    ``hint``: the replica this node stands in for (sloppy quorum), or None.
    """

    op: int
    key: str
    value: str | None
    version: Version
    hint: int | None


@attrs.frozen(kw_only=True)
class WriteAck:
    """Replica -> coordinator: operation ``op``'s write is durable here."""

    op: int


@attrs.frozen(kw_only=True)
class Handoff:
    """Fallback -> intended replica: a write it held for you."""

    key: str
    value: str | None
    version: Version


@attrs.frozen(kw_only=True)
class HandoffAck:
    """Intended replica -> fallback: I have ``key`` at ``version`` (or newer)."""

    key: str
    version: Version


@attrs.frozen(kw_only=True)
class Stored:
    """Durable record: this node holds ``key`` = ``value`` at ``version``."""

    key: str
    value: str | None
    version: Version


@attrs.frozen(kw_only=True)
class Hinted:
    """Durable record: a write held for node ``target`` (hinted handoff)."""

    target: int
    key: str
    value: str | None
    version: Version


@attrs.frozen(kw_only=True)
class HintDone:
    """Durable record: ``target`` acknowledged ``key`` at ``version``; the hint is gone."""

    target: int
    key: str
    version: Version
