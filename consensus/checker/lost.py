"""Acknowledged writes lost: a durability check from a history and the final states.

Theory of operation
-------------------
Linearizability finds a lost write only when a later read misses it.  This
check finds it directly, from what the clients were told and what the nodes
hold at the end of a run: an acknowledged write is *lost* when

* no node's final value for its key contains the value it wrote, and
* no other write on that key may have replaced it: none that could take
  effect after it (not completed before it was invoked) and that replaces a
  value: a ``Put``, a ``CompareAndSet`` that succeeded, a ``Delete`` that
  removed something, or any such write whose outcome is unknown (``info``).

A write here is an acknowledged (``ok``) ``Put``, ``Append``, or
``CompareAndSet`` that succeeded.  "Contains" is a substring test, because
appends concatenate values and a ``Put`` may be followed by appends.  Both
rules err on the side of silence: a value that is a substring of another
value, or a replacing write that could in principle have come after, hides a
loss rather than inventing one.  So every write reported is certainly gone
(given written values are unique, as the chaos and bench workloads make
them), and a run that reports none may still have lost one that a later
write would have replaced anyway.

The final states must be taken once the cluster has settled (every node up,
links healed, time for followers to catch up): a node that has not yet
applied a write it will apply is not evidence of loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from consensus.checker.history import INFO, OK, Operation
from consensus.commands import Append, CompareAndSet, Delete, Put

__all__ = ["lost_writes", "written_value"]


def written_value(op: Operation) -> str | None:
    """The value an acknowledged write left in its key, or None if ``op`` is not one."""
    if op.status != OK:
        return None
    command = op.command
    if isinstance(command, (Put, Append)):
        return command.value
    if isinstance(command, CompareAndSet) and op.result is True:
        return command.new
    return None


def _may_replace(op: Operation) -> bool:
    # Could this operation have replaced a key's value (removing an earlier write)?
    command = op.command
    if isinstance(command, Put):
        return op.status in (OK, INFO)
    if isinstance(command, (CompareAndSet, Delete)):
        return op.status == INFO or (op.status == OK and op.result is True)
    return False


def lost_writes(
    operations: Iterable[Operation], states: Mapping[int, Mapping[str, str]]
) -> list[Operation]:
    """The acknowledged writes no node holds and no later write replaced, in history order.

    ``states`` maps each node to its final key-value data (for example
    ``Simulator.host(n).sm.data`` once the run has settled).
    """
    ops = list(operations)
    replacing: dict[str, list[Operation]] = {}
    for op in ops:
        if _may_replace(op):
            replacing.setdefault(op.key(), []).append(op)
    lost = []
    for op in ops:
        value = written_value(op)
        if value is None:
            continue
        key = op.key()
        if any(value in (data.get(key) or "") for data in states.values()):
            continue
        later = (
            other
            for other in replacing.get(key, ())
            if other is not op and not (other.complete is not None and other.complete < op.invoke)
        )
        if next(later, None) is None:
            lost.append(op)
    return lost
