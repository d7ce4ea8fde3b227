"""Cost rows, compiled for the simulator's hot path (costs on).

Theory of operation
-------------------
``consensus.costs`` keeps cost rows by name (``"raft.AppendEntries"``);
the simulator looks one up per message, record or send, so each is
compiled once per simulator into a tuple ``(base, per_byte, per_entry,
count)`` keyed by class, where ``count(value)`` is the entry count
``per_entry`` multiplies: a field's length or integer value, or the client
requests the value carries as objects (``"requests"``: in its entries,
payloads or accepted values, a ``Batch`` counting its requests, a packed
entry one, opaque).  ``commands_in`` counts what applying committed
entries costs: a packed entry of k requests is k commands.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

from consensus.commands import Batch, PackedBatch, Request
from consensus.costs import CostRow
from consensus.schema import ConfigError

__all__ = [
    "Row",
    "commands_in",
    "compile_rows",
    "entry_counter",
    "no_entries",
    "requests_carried",
]

#: ``(base, per_byte, per_entry, count)``: see the theory of operation.
Row = tuple[float, float, float, Callable[[Any], int]]


def no_entries(value: Any) -> int:
    return 0  # the entry counter of a row without a per-entry cost


def compile_rows(
    classes: tuple[type, ...], default: Row, lookup: Callable[[str], CostRow | None]
) -> dict[type, Row]:
    """Each class's cost row as a tuple, with its entry counter (see the module)."""
    rows: dict[type, Row] = {}
    for cls in classes:
        row = lookup(cls.__name__)
        if row is None:
            rows[cls] = default
        else:
            count = entry_counter(cls, row.entries) if row.per_entry else no_entries
            rows[cls] = (row.base, row.per_byte, row.per_entry, count)
    return rows


def entry_counter(cls: type, entries: str) -> Callable[[Any], int]:
    """What ``per_entry`` counts in a ``cls``: a field's length (or integer value),
    or with ``"requests"`` the client requests it carries as objects."""
    names = set(attrs.fields_dict(cls)) if attrs.has(cls) else set()
    if entries != "requests":
        if names and entries not in names:
            raise ConfigError(f"costs: {cls.__name__} has no field {entries!r} to count")

        def field(value: Any) -> int:
            found = getattr(value, entries)
            return found if type(found) is int else len(found)

        return field
    fields = [name for name in ("entries", "payloads", "accepted", "payload") if name in names]
    # The two commonest shapes, written out (this runs for every message and record).
    if fields == ["payload"]:

        def one(value: Any) -> int:
            payload = value.payload
            kind = type(payload)
            if kind is Request:
                return 1
            return len(payload.requests) if kind is Batch else 0

        return one
    if fields == ["entries"]:

        def entries_of(value: Any) -> int:
            n = 0
            for entry in value.entries:
                payload = entry.payload
                kind = type(payload)
                if kind is Request:
                    n += 1
                elif kind is Batch:
                    n += len(payload.requests)
            return n

        return entries_of

    def requests(value: Any) -> int:
        n = 0
        for name in fields:
            found = getattr(value, name)
            if type(found) is tuple:  # entries, payloads, pvalues
                for item in found:
                    n += _requests_of(getattr(item, "payload", item))
            elif found is not None:  # one payload, or one pvalue
                n += _requests_of(getattr(found, "payload", found))
        return n

    return requests


def requests_carried(value: Any) -> int:
    """The client requests a message (or a record) carries as objects."""
    return entry_counter(type(value), "requests")(value)


def _requests_of(payload: Any) -> int:
    kind = type(payload)
    if kind is Request:
        return 1
    if kind is Batch:
        return len(payload.requests)
    return 0


def commands_in(committed: list[Any]) -> int:
    """Client commands in committed entries (a packed entry of k requests counts k)."""
    n = 0
    for entry in committed:
        payload = entry.payload
        kind = type(payload)
        if kind is Request:
            command = payload.command
            n += command.count if type(command) is PackedBatch else 1
        elif kind is Batch:
            for request in payload.requests:
                command = request.command
                n += command.count if type(command) is PackedBatch else 1
    return n
