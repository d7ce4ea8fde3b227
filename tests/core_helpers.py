"""Sans-I/O test helpers shared by the protocol core suites.

A core test builds replicas by hand (``build``), feeds them inputs and reads
their ``Outputs``: ``sent`` picks messages out, ``Wire`` routes messages
between replicas without a simulator (in the order sent, with a ``keep``
filter to drop or delay some), keeping what each node committed, persisted
and rejected.  ``sim_helpers`` is the simulator-level counterpart.
"""

from __future__ import annotations

import random
from typing import Any

from consensus.commands import Put, Request
from consensus.host import ReplicaHost
from consensus.registry import ProtocolSpec, get_protocol
from consensus.replica import Committed, Outputs, Replica, ReplicaContext
from protocols.paxos_common.ballot import Ballot


def build(
    spec: ProtocolSpec,
    node: int = 0,
    members: tuple[int, ...] = (0, 1, 2),
    options: Any = None,
    records: Any = (),
    seed: int = 0,
    *,
    host_syncs: bool = True,
) -> Any:
    """Replica ``node`` of ``spec`` over ``members``, recovered from ``records``.

    With ``host_syncs`` (the default) every input that persists something is
    followed by ``synced(now)``, its outputs appended to the input's, as a
    host does once the records are durable; without it the test drives
    ``synced`` itself."""
    ctx = ReplicaContext(node_id=node, members=members, options=options, rng=random.Random(seed))
    replica = spec.create(ctx, list(records))
    if host_syncs:
        _sync_after_persist(replica)
    return replica


def lone_host(
    protocol: str = "sequencer", *, replies: list[Any] | None = None, **kw: Any
) -> ReplicaHost:
    """A ``ReplicaHost`` for node 0 of a one-node cluster (it commits at once) in
    memory, sending nowhere; ``replies`` collects ``(waiter, reply)`` pairs; any
    other argument of ``ReplicaHost`` in ``kw``."""
    from consensus.storage import MemoryStorage

    spec = get_protocol(protocol)
    args: dict[str, Any] = {
        "node_id": 0,
        "spec": spec,
        "members": (0,),
        "options": spec.make_options(),
        "seed": 0,
        "storage": MemoryStorage(),
        "send": lambda dst, message: None,
        "reply": lambda waiter, reply: None if replies is None else replies.append((waiter, reply)),
    }
    return ReplicaHost(**{**args, **kw})


def _sync_after_persist(replica: Any) -> None:
    for name in ("start", "step", "tick", "propose", "read", "compact"):
        original = getattr(replica, name)

        def wrapped(now: float, *args: Any, _original: Any = original) -> Outputs:
            out = _original(now, *args)
            if out.persist or out.compact is not None:
                after = replica.synced(now)
                if after:
                    out.extend(after)
            return out

        setattr(replica, name, wrapped)


def outgoing(out: Outputs) -> list[tuple[int, Any]]:
    """Everything ``out`` sends, as (dst, message): the eager ones go first."""
    return [*(out.eager or ()), *out.messages]


def sent(out: Outputs, kind: type | None = None, dst: int | None = None) -> list[Any]:
    """Messages in ``out`` of type ``kind`` (any), to ``dst`` (any), in order."""
    return [
        m
        for d, m in outgoing(out)
        if (kind is None or isinstance(m, kind)) and (dst is None or d == dst)
    ]


def req(seq: int, client: int = 1, key: str = "k") -> Request:
    return Request(client_id=client, seq=seq, command=Put(key=key, value=str(seq)))


def b(round_: int, node: int) -> Ballot:
    return Ballot(round=round_, node=node)


class Wire:
    """Route messages between replicas by hand; keeps each node's outputs."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.queue: list[tuple[int, int, Any]] = []
        self.committed: dict[int, list[Committed]] = {r.node_id: [] for r in replicas}
        self.persisted: dict[int, list[Any]] = {r.node_id: [] for r in replicas}
        self.rejected: list[Any] = []

    def take(self, src: int, out: Outputs) -> Outputs:
        self.queue.extend((src, dst, m) for dst, m in outgoing(out))
        self.committed[src].extend(out.committed)
        self.persisted[src].extend(out.persist)
        self.rejected.extend(out.rejected)
        return out

    def deliver(self, now: float = 0.0, keep: Any = lambda src, dst, m: True) -> None:
        """Deliver queued messages (and the ones they cause) that ``keep`` accepts."""
        for _ in range(10_000):
            pending = [x for x in self.queue if keep(*x)]
            if not pending:
                return
            self.queue = [x for x in self.queue if not keep(*x)]
            for src, dst, m in pending:
                self.take(dst, self.replicas[dst].step(now, src, m))
        raise AssertionError("message storm")

    def drop(self, pred: Any = lambda src, dst, m: True) -> None:
        self.queue = [x for x in self.queue if not pred(*x)]

    def payloads(self, node: int) -> list[Any]:
        return [c.payload for c in self.committed[node]]
