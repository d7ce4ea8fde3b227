"""The message trace: every message a simulated run sends, and what became of it.

Theory of operation
-------------------
``Simulator(config, trace=True)`` builds one ``MessageTrace``; with
``trace`` off (the default) none exists and the simulator's hot paths are
the ones it always had: tracing swaps in *other* send and delivery
functions when the simulator is built (a traced sender, a traced
``Servers._release``), so an untraced run pays nothing per message.

What is recorded, one row each (``MessageTrace.frame()``, ``Simulator.trace()``):

* ``message``: a message from ``src`` to ``dst``: ``time``, when it left
  the sender (with costs on, after the CPU, the fsync that covers it and
  the link's serialization: when ``Servers`` releases it), ``arrival``, when
  it reached ``dst`` (NaN if it did not), ``dropped``, why it did not:
  ``"loss"`` (the network's or a message rule's loss draw), ``"partition"``
  (the link was cut when it was sent or when it would have arrived),
  ``"down"`` (``dst`` was crashed when it arrived), ``type`` (the message
  class), ``size`` (bytes as the codec encodes it: with ``wire = "objects"``
  the message is encoded for the trace only), and ``ops``: the client
  operations it serves, as ``"client:seq"`` strings separated by spaces.
  The rule: every ``Request`` the message carries, looked for in its fields,
  inside log entries, batches and accepted values (``carried_ops``); so a
  Raft ``AppendEntries`` or a Paxos ``Accept`` names its commands, while
  acknowledgements, votes and heartbeats carry none and name none.  A
  duplicated message is two rows.
* ``invoke`` / ``complete``: a client operation starts (at the node it is
  first sent to) and ends (at the node that answered; ``detail``: its
  status), with ``ops`` naming it.
* ``role``: a node's role changed (``detail``: ``leader``, ``candidate``,
  ``follower``, ...: the replica's ``status()["role"]``, else leader or
  follower from ``leader()``), checked after every input the node handles
  while tracing, and ``crash`` / ``restart``.

Tracing never draws from a random generator the untraced run does not
draw from, nor reorders events: a traced run's history is the untraced
run's.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from consensus.commands import Batch, Request

__all__ = ["TRACE_COLUMNS", "MessageTrace", "carried_ops"]

#: The trace DataFrame's columns, in order.
TRACE_COLUMNS = [
    "kind",
    "time",
    "arrival",
    "src",
    "dst",
    "node",
    "type",
    "size",
    "dropped",
    "ops",
    "detail",
]

# The indexes of a message row's mutable fields (a row is a list until frame()).
_ARRIVAL, _DROPPED = 2, 8
_NAN = math.nan


def carried_ops(message: Any, depth: int = 4) -> list[str]:
    """``"client:seq"`` of every ``Request`` inside ``message`` (see the module)."""
    found: list[str] = []
    _walk(message, depth, found)
    return found


def _walk(value: Any, depth: int, found: list[str]) -> None:
    if isinstance(value, Request):
        found.append(f"{value.client_id}:{value.seq}")
    elif isinstance(value, Batch):
        for request in value.requests:
            found.append(f"{request.client_id}:{request.seq}")
    elif depth <= 0 or isinstance(value, (str, bytes, int, float)):
        return
    elif isinstance(value, (tuple, list)):
        for item in value:
            _walk(item, depth - 1, found)
    elif attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            _walk(getattr(value, field.name), depth - 1, found)


def role_of(replica: Any, node: int) -> str | None:
    """A replica's role as the trace names it: ``status()["role"]``, else leader
    or follower by ``leader()``; None when neither says (leaderless Paxos)."""
    status = replica.status()
    role = status.get("role")
    if role is not None:
        return str(getattr(role, "value", role))
    leader = replica.leader()
    if leader is None:
        return None
    return "leader" if leader == node else "follower"


class MessageTrace:
    """The rows of one simulator's trace (see the module)."""

    def __init__(self, encode: Any) -> None:
        self._encode = encode
        self.rows: list[list[Any]] = []
        self._roles: dict[int, str] = {}
        self._last: list[Any] = [None, 0]  # a broadcast is encoded once

    def size(self, message: Any) -> int:
        if message is self._last[0]:
            return int(self._last[1])
        size = len(self._encode(message))
        self._last[0], self._last[1] = message, size
        return size

    def sent(
        self, now: float, src: int, dst: int, message: Any, size: int, network: Any
    ) -> list[tuple[list[Any], float]]:
        """Route one message through ``network`` (``NetworkModel.arrivals``, the
        same draws as an untraced send); returns ``(row, arrival)`` per copy."""
        if not size:
            size = self.size(message)
        cut = (src, dst) in network.blocked
        arrivals = network.arrivals(src, dst, message, now)
        name = type(message).__name__
        ops = " ".join(carried_ops(message))
        if not arrivals:
            reason = "partition" if cut else "loss"
            self.rows.append(["message", now, _NAN, src, dst, -1, name, size, reason, ops, ""])
            return []
        copies = []
        for arrival in arrivals:
            row = ["message", now, arrival, src, dst, -1, name, size, "", ops, ""]
            self.rows.append(row)
            copies.append((row, arrival))
        return copies

    def dropped(self, row: list[Any], reason: str) -> None:
        """A message that reached a down node or a cut link on arrival."""
        row[_ARRIVAL] = _NAN
        row[_DROPPED] = reason

    def event(self, kind: str, time: float, node: int, ops: str = "", detail: str = "") -> None:
        self.rows.append([kind, time, _NAN, -1, -1, node, "", 0, "", ops, detail])

    def role(self, time: float, node: int, replica: Any) -> None:
        """Record the node's role if it changed since last seen."""
        role = role_of(replica, node)
        if role is not None and self._roles.get(node) != role:
            self._roles[node] = role
            self.event("role", time, node, detail=role)

    def crashed(self, time: float, node: int) -> None:
        self._roles.pop(node, None)
        self.event("crash", time, node)

    def frame(self) -> Any:
        """The rows as a DataFrame, ordered by time (columns: ``TRACE_COLUMNS``)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=TRACE_COLUMNS)
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
        return frame.astype({"src": int, "dst": int, "node": int, "size": int})
