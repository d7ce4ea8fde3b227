"""Synthetic key-value histories with a known verdict, for the checker.

``generate_linearizable_history`` simulates clients issuing operations
against one atomic register per key: every operation gets an interval
``[invoke, complete]`` and a linearization point inside it, and results
come from applying the operations in the order of those points.  The
history is therefore linearizable by construction.  Times sit on a
whole-number grid so that intervals often touch at one instant (the checker
treats touching intervals as concurrent, and so does the simulation: points
that coincide are ordered at random).

``corrupt`` copies a history and injects one certain violation.

Written values are unique tokens ``v<op_id>`` of one width (``v0042``): no
token is a prefix of another, and a concatenation of two or more tokens
never equals a single token, so once a token's value has been overwritten
the register never holds it again.  ``corrupt`` relies on this.
"""

from __future__ import annotations

import heapq
import random

import attrs

from consensus.checker.history import FAIL, INFO, OK, History, Operation
from consensus.commands import Append, CompareAndSet, Delete, Get, Put
from consensus.statemachine import KVStore

__all__ = ["DEFAULT_MIX", "corrupt", "generate_linearizable_history"]

#: Relative weights of the command kinds.
DEFAULT_MIX: dict[str, float] = {"get": 35, "put": 25, "append": 15, "cas": 15, "delete": 10}


@attrs.define
class _Slot:
    client: int
    seq: int
    key: str
    invoke: float
    complete: float | None
    point: float  # linearization point
    status: str
    applies: bool  # whether the op takes effect (at ``point``)


def generate_linearizable_history(
    rng: random.Random,
    *,
    ops: int,
    keys: int,
    clients: int,
    pending_fraction: float = 0.01,
    fail_fraction: float = 0.0,
    mix: dict[str, float] | None = None,
    max_latency: int = 12,
    max_think: int = 4,
) -> History:
    """A linearizable history of ``ops`` operations by concurrent ``clients``.

    A fraction of operations end ``"info"`` (half of those take effect, at any
    later point); a client that saw ``"info"`` carries on under a new client
    id, as Jepsen's processes do.  ``"fail"`` operations take no effect.
    """
    assert ops >= 0 and keys >= 1 and clients >= 1
    key_names = [f"k{i}" for i in range(keys)]
    slots = _schedule(rng, ops, key_names, clients, pending_fraction, fail_fraction,
                      max_latency, max_think)  # fmt: skip
    slots.sort(key=lambda s: (s.invoke, s.client))
    # Decide commands and results in linearization order; op ids follow invocation.
    width = len(str(max(len(slots) - 1, 0)))
    order = sorted(range(len(slots)), key=lambda i: (slots[i].point, rng.random()))
    weights = mix or DEFAULT_MIX
    kinds, kind_weights = list(weights), list(weights.values())
    store = KVStore()  # the reference model: the replicated state machine itself
    data = store.data
    written: dict[str, list[str]] = {k: [] for k in key_names}
    operations: list[Operation | None] = [None] * len(slots)
    for i in order:
        slot = slots[i]
        kind = rng.choices(kinds, kind_weights)[0]
        token = f"v{i:0{width}d}"
        command: Get | Put | Append | CompareAndSet | Delete
        if kind == "get":
            command = Get(key=slot.key)
        elif kind == "put":
            command = Put(key=slot.key, value=token)
        elif kind == "append":
            command = Append(key=slot.key, value=token)
        elif kind == "cas":
            current = data.get(slot.key)
            history = written[slot.key]
            expected = current if rng.random() < 0.6 or not history else rng.choice(history)
            command = CompareAndSet(key=slot.key, expected=expected, new=token)
        else:
            command = Delete(key=slot.key)
        result = None
        if slot.applies:
            before = data.get(slot.key)
            result = store.execute(command)
            after = data.get(slot.key)
            if after is not None and after != before:
                written[slot.key].append(after)
        operations[i] = Operation(
            op_id=i,
            client=slot.client,
            seq=slot.seq,
            command=command,
            node=None,
            invoke=slot.invoke,
            complete=slot.complete,
            status=slot.status,
            result=result if slot.status == OK else None,
        )
    return History(op for op in operations if op is not None)


def _schedule(
    rng: random.Random,
    ops: int,
    key_names: list[str],
    clients: int,
    pending_fraction: float,
    fail_fraction: float,
    max_latency: int,
    max_think: int,
) -> list[_Slot]:
    # Each client issues one op at a time; the earliest-free client goes next.
    ready = [(float(rng.randint(0, max_think)), c, 0) for c in range(clients)]
    heapq.heapify(ready)
    next_client = clients
    slots: list[_Slot] = []
    while len(slots) < ops:
        t, client, seq = heapq.heappop(ready)
        key = rng.choice(key_names)
        latency = float(rng.randint(0, max_latency))
        roll = rng.random()
        if roll < pending_fraction:
            applies = rng.random() < 0.5
            # An unacknowledged op may land long after its client gave up.
            point = t + rng.uniform(0, 10 * max_latency)
            slots.append(_Slot(client, seq, key, t, None, point, INFO, applies))
            client, seq = next_client, -1
            next_client += 1
        elif roll < pending_fraction + fail_fraction:
            slots.append(_Slot(client, seq, key, t, t + latency, t, FAIL, False))
        else:
            point = rng.uniform(t, t + latency)
            slots.append(_Slot(client, seq, key, t, t + latency, point, OK, True))
        heapq.heappush(ready, (t + latency + rng.randint(0, max_think), client, seq + 1))
    return slots


def corrupt(history: History, rng: random.Random, *, kind: str = "stale_read") -> History:
    """A copy of ``history`` with one injected violation.

    ``"stale_read"``: an ok ``Get`` now returns a value a ``Put`` wrote before
    some other write definitely overwrote it, itself definitely before the
    read.  ``"phantom_read"``: an ok ``Get`` returns a value nobody wrote.
    Raises ValueError when the history has no place for the violation.
    """
    ops = [attrs.evolve(op) for op in history]
    gets = [i for i, op in enumerate(ops) if op.ok and isinstance(op.command, Get)]
    rng.shuffle(gets)
    if kind == "phantom_read":
        if not gets:
            raise ValueError("no ok Get to corrupt")
        ops[gets[0]].result = "never-written"
        return History(ops)
    if kind != "stale_read":
        raise ValueError(f"unknown corruption {kind!r}")
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        if op.ok and _changes_state(op):
            by_key.setdefault(op.key(), []).append(op)
    for g in gets:
        assert g is not None
        get = ops[g]
        before = [w for w in by_key.get(get.key(), []) if w.complete is not None
                  and w.complete < get.invoke]  # fmt: skip
        puts = [p for p in before if isinstance(p.command, Put)]
        rng.shuffle(puts)
        for p in puts:
            assert p.complete is not None
            if any(q is not p and q.invoke > p.complete for q in before):
                get.result = p.command.value
                return History(ops)
    raise ValueError("no ok Get follows two ordered writes to its key")


def _changes_state(op: Operation) -> bool:
    cmd = op.command
    if isinstance(cmd, (Put, Append)):
        return True
    if isinstance(cmd, (CompareAndSet, Delete)):
        return op.result is True
    return False
