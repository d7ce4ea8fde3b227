"""The sans-I/O replica interface every protocol plugin implements.

Theory of operation
-------------------
A replica is a pure, synchronous state machine.  It never awaits, never opens
a socket, never reads a clock and never touches the global ``random``: the
host (the deterministic simulator, the Trio runtime, or a unit test) feeds it
inputs and carries out its outputs.

Inputs, each with the current time ``now`` in seconds:

* ``start(now)``: once, after construction (fresh or recovered from storage).
* ``step(now, src, message)``: a message from peer ``src`` arrived.
* ``tick(now)``: the host calls it once ``now >= next_deadline()``.  Timers
  are deadlines, not periodic ticks: a replica reports the earliest time it
  wants to be woken and the host guarantees a ``tick`` at or after it.
* ``propose(now, request)``: a client request arrived at this node.
* ``read(now, request)``: a read-only request (a ``Get``) arrived; only for
  replicas with ``supports_reads``, others get reads proposed through the log.
  The replica answers with ``ReadReady`` or a ``Rejection`` for the request.
* ``compact(now, index, data)``: the host took a state-machine snapshot
  covering the log up to ``index``; the replica may drop that prefix.  The
  host takes one every ``snapshot_every`` applied entries, or when its driver
  asks (``ReplicaHost.snapshot``, ``Simulator.snapshot``).

Every input returns an ``Outputs``.  The host processes one ``Outputs`` in
this order, and a plugin may rely on it:

0. **send eagerly**: ``eager`` messages are handed to the network at once.
   They promise nothing about this ``Outputs``' records (a leader's
   replication of entries it has just appended: the followers' answers are
   what promises durability), so they may overlap the leader's own disk write
   with the round trip.  A plugin that sends eagerly must not count on its
   own copy until ``synced`` says it is durable.
1. **persist**: ``compact`` (if set) atomically replaces everything stored,
   then ``persist`` records are appended, then storage is synced (per the
   storage's fsync policy).  Nothing below happens before this is durable, so
   a vote or an accept acknowledgement never leaves before the state it
   promises.  Once synced, the host calls ``synced(now)`` (every record
   persisted so far is durable); its outputs are carried out after these.
2. **send**: ``messages`` are handed to the network, in order.
3. **apply**: ``restore`` (if set) replaces the state machine's state, then
   ``committed`` entries are applied in index order.
4. **answer**: ``rejected`` proposals are reported to their clients (who
   retry, at ``leader_hint`` if known); ``reads`` are served once the state
   machine has applied their index; ``answers`` are reported as they are.

Where a proposal went (optional): ``placed`` lists ``(client_id, seq, index)``
for requests this input gave a log position ``index`` (a Raft leader appended
it, a Multi-Paxos leader gave it a slot, a Paxos proposer started an instance
for it); ``Outputs.place(request, index)`` adds one.  The host reads it from
the ``Outputs`` of ``propose`` only, to answer ``ReplicaHost.propose`` (and
``Simulator.propose``) at once with "accepted at index i"; a request that
waits in a queue, or a plugin that never reports, gives no index.  An index
is where the entry was put, not a promise: it may still be overwritten (the
request is then rejected as ``overwritten``) or, in leaderless Paxos, lose its
slot and be placed again later.  What is really decided at an index is what
the host applies there.  Placements in the outputs of other inputs (a
request given its slot later) are allowed and ignored.

Answering without the log (optional): ``answers`` lists ``Answer(client_id,
seq, result)`` for requests the plugin answers itself, with a result it
computed, not one the state machine produced (``Outputs.answer(request,
result)``).  It is for a plugin that has no replicated log to apply, such as
a leaderless quorum store whose coordinator reads a quorum's replies
(``protocols.nwr``); the host replies ``ok`` with that result to the client
waiting at this node, if any.  Such requests bypass the state machine's
sessions, so a retried request may take effect again: a plugin that uses it
gives up exactly-once unless it deduplicates itself.

Randomness comes from ``ReplicaContext.rng``, seeded by the host, so a run is
a function of (config, seed).
"""

from __future__ import annotations

import abc
import random
from collections import Counter
from typing import Any, Callable, Sequence, TypeVar

import attrs

from consensus.commands import Request
from consensus.schema import structure

__all__ = [
    "Answer",
    "Committed",
    "NodeId",
    "Outputs",
    "Placement",
    "ReadReady",
    "Rejection",
    "Replica",
    "ReplicaContext",
    "StateSnapshot",
]

NodeId = int
T = TypeVar("T")
#: ``(client_id, seq, index)``: a request was given log position ``index``.
Placement = tuple[int, int, int]


@attrs.frozen(kw_only=True)
class Committed:
    """A log entry decided at ``index``; the host applies it in index order.

    ``payload`` is a ``Request``, ``Noop``, ``Batch`` or a protocol's own
    entry (configuration change); the state machine ignores the latter.
    """

    index: int
    payload: Any


@attrs.frozen(kw_only=True)
class Rejection:
    """A proposal this replica will not (or can no longer) commit.

    ``reason`` is a short machine-readable word: ``"not_leader"`` (never
    entered the log here), ``"overwritten"`` (its entry was replaced by
    another leader's), ``"busy"`` (flow control).  The client retries the same
    ``(client_id, seq)``, at ``leader_hint`` when known; the state machine's
    session table makes the retry safe even if the first attempt did commit.
    """

    client_id: int
    seq: int
    leader_hint: NodeId | None
    reason: str

    @classmethod
    def of(cls, request: Request, reason: str, leader_hint: NodeId | None = None) -> Rejection:
        return cls(
            client_id=request.client_id, seq=request.seq, leader_hint=leader_hint, reason=reason
        )


@attrs.frozen(kw_only=True)
class ReadReady:
    """Read request ``(client_id, seq)`` may be served once the state machine
    applied ``index`` (linearizable: ``index`` is at least the commit index at
    the moment the read arrived, and leadership was confirmed after that)."""

    client_id: int
    seq: int
    index: int


@attrs.frozen(kw_only=True)
class Answer:
    """Request ``(client_id, seq)`` succeeded with ``result``, computed by the plugin
    itself rather than by applying a log entry (see the module docstring)."""

    client_id: int
    seq: int
    result: Any


@attrs.frozen(kw_only=True)
class StateSnapshot:
    """A state-machine snapshot that covers the log up to ``index``."""

    index: int
    data: bytes


class Outputs:
    """Everything one input asks the host to do, in the order documented above.

    A plain slotted class rather than attrs: one is built per input, on the
    simulator's hottest path, and list literals are cheaper than factories.
    ``placed`` stays ``None`` until ``place`` is called: almost no input
    places a request, and ``None`` costs less to build than a list; ``eager``
    likewise until ``send_eager``, and ``answers`` until ``answer``.
    """

    __slots__ = (
        "persist",
        "compact",
        "messages",
        "restore",
        "committed",
        "rejected",
        "reads",
        "placed",
        "eager",
        "answers",
    )

    def __init__(
        self,
        *,
        persist: list[Any] | None = None,
        compact: list[Any] | None = None,
        messages: list[tuple[NodeId, Any]] | None = None,
        restore: StateSnapshot | None = None,
        committed: list[Committed] | None = None,
        rejected: list[Rejection] | None = None,
        reads: list[ReadReady] | None = None,
        placed: list[Placement] | None = None,
        eager: list[tuple[NodeId, Any]] | None = None,
        answers: list[Answer] | None = None,
    ) -> None:
        self.persist: list[Any] = [] if persist is None else persist
        self.compact = compact
        self.messages: list[tuple[NodeId, Any]] = [] if messages is None else messages
        self.restore = restore
        self.committed: list[Committed] = [] if committed is None else committed
        self.rejected: list[Rejection] = [] if rejected is None else rejected
        self.reads: list[ReadReady] = [] if reads is None else reads
        self.placed: list[Placement] | None = placed
        self.eager: list[tuple[NodeId, Any]] | None = eager
        self.answers: list[Answer] | None = answers

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if getattr(self, name) not in (None, [])
        )
        return f"Outputs({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outputs):
            return NotImplemented
        # An empty ``placed``, ``eager`` or ``answers`` list and ``None`` mean the same.
        return all(
            (getattr(self, n) or None) == (getattr(other, n) or None)
            if n in ("placed", "eager", "answers")
            else getattr(self, n) == getattr(other, n)
            for n in self.__slots__
        )

    def send(self, dst: NodeId, message: Any) -> None:
        self.messages.append((dst, message))

    def send_eager(self, dst: NodeId, message: Any) -> None:
        """Send ``message`` before this output's records are durable (see step 0)."""
        eager = self.eager
        if eager is None:
            self.eager = eager = []
        eager.append((dst, message))

    def reject(self, request: Request, reason: str, leader_hint: NodeId | None = None) -> None:
        """Tell the client of ``request`` to retry (see ``Rejection``)."""
        self.rejected.append(Rejection.of(request, reason, leader_hint))

    def place(self, request: Request, index: int) -> None:
        """Report that ``request`` was given log position ``index`` (optional; see above)."""
        placed = self.placed
        if placed is None:
            self.placed = placed = []
        placed.append((request.client_id, request.seq, index))

    def answer(self, request: Request, result: Any) -> None:
        """Answer ``request`` with ``result`` now, without the state machine (see above)."""
        answers = self.answers
        if answers is None:
            self.answers = answers = []
        answers.append(Answer(client_id=request.client_id, seq=request.seq, result=result))

    def broadcast(self, peers: Sequence[NodeId], message: Any) -> None:
        append = self.messages.append  # a loop: cheaper than a comprehension for a few peers
        for dst in peers:
            append((dst, message))

    def extend(self, other: Outputs) -> None:
        """Append ``other``'s outputs after these (a later input's effects)."""
        # Most outputs are mostly empty: each list is tested before it is extended.
        if other.compact is not None:
            # A later compaction supersedes every record written before it.
            self.compact = other.compact
            self.persist = list(other.persist)
        elif other.persist:
            self.persist.extend(other.persist)
        if other.messages:
            self.messages.extend(other.messages)
        if other.restore is not None:
            # The state is replaced: what earlier inputs committed is either in
            # the snapshot or, after a rollback (a resync to an older index),
            # undone; either way it must not be applied after the restore.
            self.restore = other.restore
            self.committed = []
        if other.committed:
            self.committed.extend(other.committed)
        if other.rejected:
            self.rejected.extend(other.rejected)
        if other.reads:
            self.reads.extend(other.reads)
        if other.placed:
            if self.placed is None:
                self.placed = []
            self.placed.extend(other.placed)
        if other.eager:
            if self.eager is None:
                self.eager = []
            self.eager.extend(other.eager)
        if other.answers:
            if self.answers is None:
                self.answers = []
            self.answers.extend(other.answers)

    def __bool__(self) -> bool:
        """Whether there is anything to carry out (a placement is a report, not work)."""
        return bool(
            self.persist
            or self.compact is not None
            or self.messages
            or self.restore is not None
            or self.committed
            or self.rejected
            or self.reads
            or self.eager
            or self.answers
        )


@attrs.frozen(kw_only=True)
class ReplicaContext:
    """What a host gives a replica at construction.

    ``members`` is the initial configuration (sorted node ids, including this
    node); ``options`` is the protocol's own options object; ``rng`` is this
    replica's private, seeded random source.
    """

    node_id: NodeId
    members: tuple[NodeId, ...]
    options: Any
    rng: random.Random
    #: ``members`` without this node; derived once (protocols read it per proposal).
    peers: tuple[NodeId, ...] = attrs.field(init=False, eq=False, repr=False)

    @peers.default
    def _peers(self) -> tuple[NodeId, ...]:
        return tuple(m for m in self.members if m != self.node_id)

    def options_as(self, cls: type[T]) -> T:
        """``options`` as the plugin's options class ``cls``.

        An instance is used as is, ``None`` means the defaults, and a dict (a
        hand-built context) is validated like a config table; anything else
        is a ``TypeError`` rather than a silent fall back to defaults.
        """
        options = self.options
        if isinstance(options, cls):
            return options
        if options is None:
            return cls()
        if isinstance(options, dict):
            return structure(cls, options, path="options")  # type: ignore[no-any-return]
        raise TypeError(f"options: expected {cls.__name__}, a dict or None, got {options!r}")


class Replica(abc.ABC):
    """One protocol replica: pure, synchronous, driven by a host.

    Subclasses are constructed by their ``ProtocolSpec.create(ctx, records)``
    where ``records`` are the durable records recovered from storage (empty on
    a fresh start), in the order they were persisted.
    """

    #: True when ``read`` serves linearizable reads without the log.
    supports_reads: bool = False

    def __init__(self, ctx: ReplicaContext) -> None:
        self.ctx = ctx
        self.node_id: NodeId = ctx.node_id
        #: Event counts the benchmarks read.  Names shared by every protocol
        #: that has the event: ``elections_started`` (a Raft election, a
        #: Multi-Paxos phase 1 for leadership), ``leader_changes`` (this node
        #: became leader), ``step_downs``, ``dropped_unknown`` (a message of a
        #: type the protocol does not know).  Anything else is protocol-specific.
        self.counters: Counter[str] = Counter()

    @abc.abstractmethod
    def start(self, now: float) -> Outputs:
        """First input after construction; may restore a recovered snapshot."""

    @abc.abstractmethod
    def step(self, now: float, src: NodeId, message: Any) -> Outputs:
        """Handle one message from peer ``src``."""

    @abc.abstractmethod
    def tick(self, now: float) -> Outputs:
        """Handle the passage of time; called once ``now >= next_deadline()``."""

    @abc.abstractmethod
    def next_deadline(self) -> float | None:
        """The earliest time this replica wants a ``tick``, or ``None``."""

    @abc.abstractmethod
    def propose(self, now: float, request: Request) -> Outputs:
        """Handle a client request submitted at this node."""

    @abc.abstractmethod
    def leader(self) -> NodeId | None:
        """The node this replica believes leads, if the protocol has leaders."""

    def read(self, now: float, request: Request) -> Outputs:
        """Start a linearizable read of a ``Get`` (only when ``supports_reads``)."""
        raise NotImplementedError(f"{type(self).__name__} serves reads through the log")

    def synced(self, now: float) -> Outputs | None:
        """Every record the host persisted so far is durable (after each sync
        that covered new records).  A plugin that sends eagerly learns here
        that its own copy now counts; others need not override it."""
        return None

    def compact(self, now: float, index: int, data: bytes) -> Outputs:
        """The host snapshotted the state machine at ``index``; drop the prefix."""
        return Outputs()

    def status(self) -> dict[str, Any]:
        """A small, JSON-able view of role and progress for logs and metrics."""
        return {"node": self.node_id, "leader": self.leader()}


#: The factory a plugin registers: ``create(ctx, recovered_records)``.
ReplicaFactory = Callable[[ReplicaContext, Sequence[Any]], Replica]
