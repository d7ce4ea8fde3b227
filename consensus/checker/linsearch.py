"""The linearizability search: one key's history against a register model.

Theory of operation
-------------------
A history is linearizable when every operation can be given one instant
inside its ``[invoke, complete]`` interval such that running the operations
one at a time in that order, against a plain register per key, yields the
results the clients saw.  Checking it is NP-complete in general; histories
from tests are small enough per key for a pruned search.

*Partitioning (P-compositionality).*  A register per key is independent of
every other key, so the history is linearizable iff each key's sub-history
is.  ``check`` splits by key and searches each one separately.

*Search (Wing & Gong, with Lowe's just-in-time linearization and the
memoization Porcupine uses).*  The call and return events of one key are
sorted by time into a doubly linked list.  The search walks it from the
head: at a call it tries to linearize that operation now (apply it to the
model; the result must match), lifts both its events out of the list, and
restarts from the head; at a return whose operation is not linearized yet
it is stuck and backtracks to the last choice.  A set of (linearized ops as
a bitset int, register value) already visited prunes repeated work: the
future only depends on that pair.

*Time convention.*  Intervals are closed.  At equal times calls sort before
returns, so an operation that completes at ``t`` does not precede one
invoked at ``t``: operations touching at one instant are concurrent.

*Outcomes.*  ``"fail"`` operations did not happen and are dropped.
``"info"`` operations (and unfinished ones, ``status is None``) may take
effect at any instant after ``invoke``, or never, with an unknown result: a
pending ``Get`` constrains nothing and is dropped; a pending write has no
return event and the search succeeds once every ``"ok"`` operation is
linearized.  Two prunings keep pending writes cheap, both exact because a
pending write may always be left out: it is never linearized where it has no
effect, nor immediately before a ``Put`` (which would erase it unseen).

The witness shrinker is ``consensus.checker.witness``; the public API is
``consensus.checker.linearizability``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import attrs

from consensus.checker.history import FAIL, OK, Operation
from consensus.commands import Append, CompareAndSet, Delete, Get, Put

_GET, _PUT, _APPEND, _CAS, _DELETE = range(5)
_KIND_OF: dict[type, int] = {
    Get: _GET,
    Put: _PUT,
    Append: _APPEND,
    CompareAndSet: _CAS,
    Delete: _DELETE,
}
_ILLEGAL: Any = object()  # a model step whose result does not match
_UNKNOWN: Any = object()  # an unknown register value (prefix cut only)

SHRINK_BUDGET = 500_000  # search steps spent shrinking one violation, at most


@attrs.frozen(kw_only=True)
class _Op:
    """One operation of one key, in the search's terms."""

    kind: int
    value: str | None  # Put/Append value, CompareAndSet new value
    expected: str | None  # CompareAndSet only
    result: Any
    invoke: float
    complete: float  # math.inf when pending
    pending: bool
    source: Operation
    optional: bool = False  # no return event: may run after its invocation, or not here

    def as_pending(self, invoke: float | None = None) -> _Op:
        """The same write, allowed to take effect any time after ``invoke``, or never."""
        at = self.invoke if invoke is None else invoke
        return attrs.evolve(self, invoke=at, complete=math.inf, pending=True, result=None)

    def as_optional(self, invoke: float) -> _Op:
        """The same op (same result), enumerated as maybe running in a window."""
        return attrs.evolve(self, invoke=invoke, complete=math.inf, optional=True)


def _prepare(op: Operation) -> _Op | None:
    """The search's view of ``op``, or None if it cannot constrain anything."""
    kind = _KIND_OF.get(type(op.command))
    if kind is None:
        raise TypeError(f"not a key-value command: {op.command!r}")
    if op.status == FAIL:
        return None
    pending = op.status != OK  # "info", or never finished
    if pending and kind == _GET:
        return None
    cmd = op.command
    complete = math.inf if pending or op.complete is None else op.complete
    if complete < op.invoke:
        raise ValueError(f"operation {op.op_id} completes before it is invoked")
    return _Op(
        kind=kind,
        value=cmd.new if kind == _CAS else getattr(cmd, "value", None),
        expected=cmd.expected if kind == _CAS else None,
        result=None if pending else op.result,
        invoke=op.invoke,
        complete=complete,
        pending=pending,
        source=op,
    )


def _step(op: _Op, state: Any) -> Any:
    """The register value after ``op`` runs at ``state``, or ``_ILLEGAL``.

    A pending op has no result to match, but is illegal where it would have no
    effect (leaving it out is equivalent and keeps the search small).
    """
    kind = op.kind
    unknown = state is _UNKNOWN
    if kind == _GET:
        return op.result if unknown or state == op.result else _ILLEGAL
    if kind in (_PUT, _APPEND) and op.result is not None:
        return _ILLEGAL  # they answer None
    if kind == _PUT:
        return _ILLEGAL if op.pending and state == op.value else op.value
    if kind == _APPEND:
        if unknown:
            return _UNKNOWN
        new = ("" if state is None else state) + (op.value or "")
        return _ILLEGAL if op.pending and new == state else new
    if kind == _CAS:
        if unknown:
            return op.value if op.pending or op.result is True else _UNKNOWN
        if state == op.expected:
            if op.pending:
                return _ILLEGAL if state == op.value else op.value
            return op.value if op.result is True else _ILLEGAL
        return _ILLEGAL if op.pending or op.result is not False else state
    if unknown:  # Delete
        return None
    existed = state is not None
    if op.pending:
        return None if existed else _ILLEGAL
    return None if op.result is existed else _ILLEGAL


@attrs.frozen(kw_only=True)
class _Outcome:
    linearizable: bool | None  # None: out of steps or time
    steps: int
    frontier: float  # latest return event at which any branch got stuck
    blocked: int  # index of the op stuck on at the greatest depth, or -1
    longest: tuple[int, ...]  # that branch's linearized ops (only when recorded)


def _search(
    ops: list[_Op],
    *,
    max_steps: int | None = None,
    deadline: float | None = None,
    record: bool = False,
    initial: Any = None,
    finals: set[Any] | None = None,
) -> _Outcome:
    """Search for a linearization of one key's ops.

    With ``finals``, enumerate instead: from ``initial``, collect for every
    complete linearization (pending and optional ops may be left out) its
    final value and the bitset of pending and optional ops it used.
    """
    # Events sorted by (time, call-before-return): node k + 1 is events[k],
    # node 0 is the head sentinel, -1 ends the list.
    events = [(op.invoke, 0, i) for i, op in enumerate(ops)]
    events += [(op.complete, 1, i) for i, op in enumerate(ops) if not (op.pending or op.optional)]
    events.sort()
    m = len(events)
    nxt = list(range(1, m + 1)) + [-1]
    prv = list(range(-1, m))
    node_time = [-math.inf] + [e[0] for e in events]
    node_op = [-1] + [e[2] for e in events]
    is_call = [False] + [e[1] == 0 for e in events]
    ret_node = [-1] * len(ops)
    for k, (_, kind, i) in enumerate(events, 1):
        if kind == 1:
            ret_node[i] = k
    bits = [1 << i for i in range(len(ops))]
    pending_bits = sum(bits[i] for i, op in enumerate(ops) if op.pending)
    optional_bits = sum(bits[i] for i, op in enumerate(ops) if op.pending or op.optional)
    owed = [0 if op.pending or op.optional else 1 for op in ops]

    remaining = len(events) - len(ops)  # ok ops not linearized yet
    state = initial
    linearized = 0
    stack: list[tuple[int, Any]] = []  # (call node, state before it)
    # (ok ops linearized, value, last op pending) -> pending-op bitsets seen there.
    seen: dict[tuple[int, Any, bool], list[int]] = {}
    steps, frontier, blocked, depth = 0, -math.inf, -1, -1
    longest: tuple[int, ...] = ()
    node = nxt[0]
    next_check = 4096  # limits are checked every few thousand steps
    while remaining or finals is not None:
        steps += 1
        if steps >= next_check:
            next_check = steps + 4096
            if (max_steps is not None and steps > max_steps) or (
                deadline is not None and time.monotonic() > deadline
            ):
                return _Outcome(linearizable=None, steps=steps, frontier=frontier,
                                blocked=blocked, longest=longest)  # fmt: skip
        if node == -1:  # only when enumerating: every ok op is linearized
            assert finals is not None and remaining == 0
            finals.add((state, linearized & optional_bits))
        elif is_call[node]:
            i = node_op[node]
            op = ops[i]
            # After a pending op, a Put would erase it unseen: never try that.
            after_pending = bool(stack) and ops[node_op[stack[-1][0]]].pending
            new = _ILLEGAL if after_pending and op.kind == _PUT else _step(op, state)
            if new is not _ILLEGAL:
                now = linearized | bits[i]
                used = now & pending_bits
                key = (now ^ used, new, op.pending)
                # Dominance: reaching the same point having used a subset of
                # these pending ops left at least the same options.
                fresh = True
                tried = seen.get(key)
                if tried is None:
                    seen[key] = [used]
                else:
                    steps += len(tried)  # the budget counts this scan as work
                    if any(t & ~used == 0 for t in tried):
                        fresh = False
                    else:
                        tried.append(used)
                if fresh:
                    stack.append((node, state))
                    state, linearized = new, linearized | bits[i]
                    remaining -= owed[i]
                    _lift(nxt, prv, node, ret_node[i])
                    node = nxt[0]
                    continue
            node = nxt[node]
            continue
        else:  # a return event of an op not linearized yet: this branch is stuck
            frontier = max(frontier, node_time[node])
            if len(stack) > depth:
                depth, blocked = len(stack), node_op[node]
                if record:
                    longest = tuple(node_op[c] for c, _ in stack)
        if not stack:
            return _Outcome(linearizable=bool(finals), steps=steps, frontier=frontier,
                            blocked=blocked, longest=longest)  # fmt: skip
        node, state = stack.pop()
        i = node_op[node]
        linearized &= ~bits[i]
        remaining += owed[i]
        _unlift(nxt, prv, node, ret_node[i])
        node = nxt[node]
    longest = tuple(node_op[c] for c, _ in stack) if record else ()
    return _Outcome(linearizable=True, steps=steps, frontier=frontier, blocked=-1, longest=longest)


def _lift(nxt: list[int], prv: list[int], call: int, ret: int) -> None:
    # Dancing links: the lifted nodes keep their own pointers for _unlift.
    nxt[prv[call]] = nxt[call]
    if nxt[call] != -1:
        prv[nxt[call]] = prv[call]
    if ret != -1:
        nxt[prv[ret]] = nxt[ret]
        if nxt[ret] != -1:
            prv[nxt[ret]] = prv[ret]


def _unlift(nxt: list[int], prv: list[int], call: int, ret: int) -> None:
    if ret != -1:
        nxt[prv[ret]] = ret
        if nxt[ret] != -1:
            prv[nxt[ret]] = ret
    nxt[prv[call]] = call
    if nxt[call] != -1:
        prv[nxt[call]] = call


# --- shrinking a failing key to a small witness -------------------------------------------
