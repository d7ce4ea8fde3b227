"""A linearizability checker for recorded key-value histories.

Theory of operation
-------------------
A history is linearizable when every operation can be given one instant
inside its ``[invoke, complete]`` interval such that running the operations
one at a time in that order, against a plain register per key, yields the
results the clients saw.  ``check`` splits the history by key
(P-compositionality: registers are independent, so the history is
linearizable iff every key's sub-history is), searches each key with
``consensus.checker.linsearch`` (Wing & Gong / Lowe, memoized as in Porcupine), and
for a failing key shrinks a minimal witness with ``consensus.checker.witness``.

Outcomes: ``"fail"`` operations did not happen; ``"info"`` ones may take
effect at any instant after ``invoke``, or never.  Intervals are closed and
operations touching at one instant are concurrent.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import attrs

from consensus.checker.history import FAIL, INFO, OK, History, Operation
from consensus.checker.linsearch import SHRINK_BUDGET, _Op, _prepare, _search
from consensus.checker.witness import _Shrinker
from consensus.commands import Append, CompareAndSet, Get, Put

__all__ = ["CheckResult", "Violation", "check", "check_key", "describe_operation"]


@attrs.frozen(kw_only=True)
class Violation:
    """A key whose sub-history is not linearizable, with a small witness."""

    key: str
    operations: list[Operation]  # a small sub-history, itself not linearizable
    explanation: str

    def describe(self) -> str:
        """The witness as text, one operation per line in invocation order."""
        lines = [f"key {self.key!r} is not linearizable: {self.explanation}"]
        for op in sorted(self.operations, key=lambda o: (o.invoke, o.op_id)):
            lines.append("  " + describe_operation(op))
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class CheckResult:
    """The verdict on a history: ``ok`` is None when the search ran out of time."""

    ok: bool | None
    operations: int  # operations checked (all but "fail" ones)
    keys: int
    violations: list[Violation] = attrs.field(factory=list)
    unknown_keys: list[str] = attrs.field(factory=list)  # keys the timeout cut short


def _value(v: Any) -> str:
    if isinstance(v, str) and v and v.isprintable() and " " not in v and v != "None":
        return v
    return repr(v)


def _what(op: Operation) -> str:
    cmd = op.command
    if isinstance(cmd, Get):
        return f"get {cmd.key}"
    if isinstance(cmd, Put):
        return f"put {cmd.key}={_value(cmd.value)}"
    if isinstance(cmd, Append):
        return f"append {cmd.key}+={_value(cmd.value)}"
    if isinstance(cmd, CompareAndSet):
        return f"cas {cmd.key} {_value(cmd.expected)}->{_value(cmd.new)}"
    return f"delete {cmd.key}"


def _outcome(op: Operation) -> str:
    if op.status == OK:
        return "ok" if isinstance(op.command, (Put, Append)) else _value(op.result)
    if op.status == INFO:
        return "info (unknown)"
    return str(op.status)


def describe_operation(op: Operation) -> str:
    """``client 3  [1, 2.5]  put x=1 -> ok``: one operation as one line."""
    complete = "?" if op.complete is None else f"{op.complete:g}"
    return f"client {op.client}  [{op.invoke:g}, {complete}]  {_what(op)} -> {_outcome(op)}"


def _explain(ops: list[_Op], stuck: Operation | None) -> str:
    # Re-run the (small) witness to show how far any order gets; a witness
    # left large by the budget is only named by the op the search stuck on.
    out = _search(ops, record=True, max_steps=100_000)
    shown: list[Operation] = []
    if out.linearizable is False and out.blocked >= 0:
        stuck = ops[out.blocked].source
        shown = [ops[i].source for i in out.longest[-6:]]
    head = f"no order of these {len(ops)} operations fits their intervals and results"
    if stuck is None:
        return head
    tail = (
        f"'{_what(stuck)} -> {_outcome(stuck)}' (client {stuck.client}) cannot take effect "
        f"before it completes at {stuck.complete:g}"
    )
    if not shown:
        return f"{head}; every order gets stuck on {tail}"
    done = ", ".join(f"{_what(o)} -> {_outcome(o)}" for o in shown)
    if len(out.longest) > len(shown):
        done = f"..., {done}"
    return f"{head}; the furthest any order gets is [{done}], after which {tail}"


def check_key(
    ops: Iterable[Operation], *, timeout: float | None = None, shrink_budget: int = SHRINK_BUDGET
) -> CheckResult:
    """Check the operations of one key (ValueError if they span several)."""
    ops = list(ops)
    keys = {op.key() for op in ops}
    if len(keys) > 1:
        raise ValueError(f"check_key got operations on {len(keys)} keys")
    return check(ops, timeout=timeout, shrink_budget=shrink_budget)


def check(
    history_or_ops: History | Iterable[Operation],
    *,
    timeout: float | None = None,
    shrink_budget: int = SHRINK_BUDGET,
) -> CheckResult:
    """Whether the history is linearizable, key by key, with a witness per failing key.

    ``timeout`` (wall-clock seconds for the whole call) makes ``ok`` None
    when some key could not be decided and none was found failing.
    ``shrink_budget`` bounds the search steps spent shrinking each witness.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    by_key: dict[str, list[_Op]] = {}
    checked = 0
    for op in history_or_ops:
        prepared = _prepare(op)
        checked += op.status != FAIL
        ops = by_key.setdefault(op.key(), [])  # a key with only failed ops still counts
        if prepared is not None:
            ops.append(prepared)
    violations: list[Violation] = []
    unknown: list[str] = []
    for key in sorted(by_key):
        ops = by_key[key]
        out = _search(ops, deadline=deadline)
        if out.linearizable is None:
            unknown.append(key)
        elif out.linearizable is False:
            shrinker = _Shrinker(shrink_budget, deadline, baseline=out.steps)
            witness = shrinker.shrink(ops, out.frontier)
            witness.sort(key=lambda o: (o.invoke, o.source.op_id))
            violations.append(
                Violation(
                    key=key,
                    operations=[o.source for o in witness],
                    explanation=_explain(witness, ops[out.blocked].source),
                )
            )
    ok = False if violations else (None if unknown else True)
    return CheckResult(
        ok=ok, operations=checked, keys=len(by_key), violations=violations, unknown_keys=unknown
    )
