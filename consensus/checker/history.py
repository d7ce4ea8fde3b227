"""The recorded history of client operations.

Every client operation a run issues is recorded once, from invocation to its
final outcome, with the virtual (or real) times at both ends.  Tests check
safety on it (the linearizability checker reads it) and benchmarks turn it
into a DataFrame, one row per operation.

Outcomes follow Jepsen's convention:

* ``"ok"``: the operation took effect once and ``result`` is its result.
* ``"fail"``: the operation certainly did not take effect.
* ``"info"``: unknown (timed out, or the run ended first): it may or may not
  have taken effect, at any point after ``invoke``.  ``complete`` is ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

import attrs

from consensus.commands import Append, ChangeMembership, CompareAndSet, Delete, Get, Put

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["History", "Operation", "OK", "FAIL", "INFO", "command_fields"]

OK, FAIL, INFO = "ok", "fail", "info"

_KINDS: dict[type, str] = {
    Get: "get",
    Put: "put",
    Append: "append",
    CompareAndSet: "cas",
    Delete: "delete",
    ChangeMembership: "membership",
}


def command_fields(command: Any) -> tuple[str, str, str | None, str | None]:
    """(kind, key, value, expected) of a key-value command, for tables."""
    kind = _KINDS[type(command)]
    if isinstance(command, CompareAndSet):
        return kind, command.key, command.new, command.expected
    if isinstance(command, ChangeMembership):
        return kind, "", ",".join(map(str, command.members)), None
    return kind, command.key, getattr(command, "value", None), None


@attrs.define(slots=True, eq=False)
class Operation:
    """One client operation, mutable only while it is outstanding."""

    op_id: int
    client: int
    seq: int
    command: Any
    node: int | None
    invoke: float
    complete: float | None = None
    status: str | None = None
    result: Any = None
    retries: int = 0

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def latency(self) -> float | None:
        if self.complete is None:
            return None
        return self.complete - self.invoke

    def key(self) -> str:
        return str(getattr(self.command, "key", ""))

    @property
    def is_kv(self) -> bool:
        """A key-value operation (what the linearizability checker models)."""
        return not isinstance(self.command, ChangeMembership)

    def as_tuple(self) -> tuple[Any, ...]:
        """Everything observable about the operation, for exact comparisons."""
        return (
            self.op_id,
            self.client,
            self.seq,
            self.command,
            self.node,
            self.invoke,
            self.complete,
            self.status,
            self.result,
            self.retries,
        )


class History:
    """Operations in invocation order."""

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        self.operations: list[Operation] = list(operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def __getitem__(self, i: int) -> Operation:
        return self.operations[i]

    def record(self, op: Operation) -> Operation:
        self.operations.append(op)
        return op

    def completed(self) -> list[Operation]:
        return [op for op in self.operations if op.status == OK]

    def fingerprint(self) -> list[tuple[Any, ...]]:
        """A plain-value copy of the history; equal for identical runs."""
        return [op.as_tuple() for op in self.operations]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per operation: client, node, op, key, value, times, status, result."""
        import pandas as pd

        rows = []
        for op in self.operations:
            kind, key, value, expected = command_fields(op.command)
            rows.append(
                {
                    "op_id": op.op_id,
                    "client": op.client,
                    "seq": op.seq,
                    "node": op.node,
                    "op": kind,
                    "key": key,
                    "value": value,
                    "expected": expected,
                    "invoke": op.invoke,
                    "complete": op.complete,
                    "latency": op.latency,
                    "status": op.status,
                    "result": None if op.result is None else str(op.result),
                    "retries": op.retries,
                }
            )
        columns = [
            "op_id", "client", "seq", "node", "op", "key", "value", "expected",
            "invoke", "complete", "latency", "status", "result", "retries",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)
