"""Hosting one replica: carry out its outputs in the contract's order.

Theory of operation
-------------------
``ReplicaHost`` sits between a sans-I/O replica and whatever drives it (the
deterministic simulator, the Trio runtime, a test).  It owns the node's
storage, state machine and the client requests submitted at this node, and
for every ``Outputs`` it does, in order (see ``consensus.replica``):

0. send the eager messages, 1. persist (compact, append, sync; then tell the
replica ``synced``), 2. send, 3. restore and apply, 4. answer clients
(results, rejections, reads once applied far enough, the plugin's own
answers), and last carry out what ``synced`` returned.

The driver gives it two callables: ``send(dst, message)`` and
``reply(waiter, reply)``; ``waiter`` is an opaque token the driver passed to
``submit`` (the host never looks inside it).  The host never blocks and never
reads a clock: ``now`` arrives with each input.  Two optional hooks:

* ``wake()``: called after every input given through the host's methods
  (``start``, ``step``, ``tick``, ``submit``, ``snapshot``), when the
  replica's ``next_deadline()`` may have moved; the driver re-arms the node's
  timer there, so a proposal made through ``submit`` is never left waiting
  for an unrelated event to be flushed.  (The simulator's hottest path, a
  message delivery, calls ``replica.step`` and ``handle`` itself and re-arms
  the timer inline.)
* ``on_apply(node, index, payload)``: every entry this host applies, in
  index order, and a restored snapshot as a ``StateSnapshot`` payload at its
  index.

``propose`` is ``submit`` that also answers at once with a ``ProposeResult``:
accepted here or rejected (with the reason and leader hint), and the log
index the request took when the plugin reports it (``Outputs.place``, see
``consensus.replica``).

A crash discards the host; a restart builds a new one over the same storage,
so the replica recovers from its records and the state machine is rebuilt by
re-applying committed entries (or restoring a snapshot).

Batching proposals (``pack_proposals``): ``accept_many`` proposes the
key-value requests of one batch of inputs as ``PackedBatch`` requests of the
host's own session (``consensus.commands``).  A rejection of a pack answers
every request inside it; when a pack is applied, the state machine returns
each inner request's result and the host answers their waiters as usual.

Sessions (``consensus.statemachine``): a request the state machine answers
``SESSION_EXPIRED`` (its client's session expired) is answered as a
rejection with reason ``"session_expired"``; its client cannot know whether
an earlier attempt took effect.  A ``ChangeMembership`` whose session shows
it applied already is answered from the session at once, never handed to
the protocol again: a protocol acts on a membership change when it enters
the log, before the state machine could recognise a retry, so a retry of an
old change arriving after a later one would otherwise undo the later one.

Invariant: every waiter is answered at most once; a waiter whose node crashes
is never answered (the client's timeout handles it).

Snapshots: ``snapshot(now)`` (the driver's or a test's call, or every
``snapshot_every`` applied entries) takes the state machine's snapshot at its
applied index and hands it to ``replica.compact``, whose outputs (typically a
``compact`` of storage) are carried out like any other.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable

import attrs

from consensus.clock import DriftingReplica
from consensus.commands import (
    READ_ONLY,
    Append,
    ChangeMembership,
    CompareAndSet,
    Delete,
    Get,
    PackedBatch,
    Put,
    Request,
    requests_in,
)
from consensus.registry import ProtocolSpec
from consensus.replica import Outputs, ReadReady, ReplicaContext
from consensus.statemachine import SESSION_EXPIRED, KVStore, StateMachine, pack
from consensus.storage import Storage

__all__ = ["ApplyHook", "ClientReply", "ProposeResult", "ReplicaHost", "TickLoopError"]

#: ``on_apply(node, index, payload)``: one applied entry (or a restored ``StateSnapshot``).
ApplyHook = Callable[[int, int, Any], None]

#: Commands a host may pack into one proposal: plain key-value operations
#: (a membership change must stay visible to the protocol as itself).
_PACKABLE = frozenset({Get, Put, Append, CompareAndSet, Delete})


@attrs.frozen(kw_only=True)
class ClientReply:
    """The answer to one submitted request.

    ``ok``: applied, ``result`` is the state machine's result.  Otherwise the
    request was rejected (``reason``) and may be retried, at ``leader_hint``.
    """

    ok: bool
    result: Any = None
    reason: str = ""
    leader_hint: int | None = None
    node: int = -1


@attrs.frozen(kw_only=True)
class ProposeResult:
    """What a node said at once to one proposal (``ReplicaHost.propose``).

    ``accepted``: the node took the request (into its log, a slot, or a queue
    until it can); its outcome comes later, through the waiter and what the
    node applies.  ``index``: the log position it was given, when the plugin
    reports it (``Outputs.place``) and it got one at once; ``None``
    otherwise.  Not accepted: ``reason`` and ``leader_hint`` as in a
    ``Rejection`` (``"down"`` when the simulator's node is crashed).
    """

    node: int
    request: Request
    accepted: bool
    index: int | None = None
    reason: str = ""
    leader_hint: int | None = None


class TickLoopError(RuntimeError):
    """A replica still wants a tick at or before ``now`` right after one."""


class ReplicaHost:
    """One node: a replica with its storage, state machine and waiting clients."""

    def __init__(
        self,
        *,
        node_id: int,
        spec: ProtocolSpec,
        members: tuple[int, ...],
        options: Any,
        seed: int | str,
        storage: Storage,
        send: Callable[[int, Any], None],
        reply: Callable[[Any, ClientReply], None],
        incarnation: int = 0,
        snapshot_every: int = 0,
        record_applied: bool = True,
        state_machine: StateMachine | None = None,
        wake: Callable[[], None] | None = None,
        on_apply: ApplyHook | None = None,
        pack_proposals: int = 0,
        clock_rate: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self._send = send
        self._reply = reply
        self._wake = wake
        #: Called with every entry applied here (see the theory of operation); settable.
        self.on_apply = on_apply
        self.snapshot_every = snapshot_every
        self.record_applied = record_applied
        rng = random.Random(f"{seed}:replica:{node_id}:{incarnation}")
        ctx = ReplicaContext(node_id=node_id, members=members, options=options, rng=rng)
        self.replica = spec.create(ctx, storage.load())
        if clock_rate != 1.0:
            # The replica's clock runs at ``clock_rate`` times the host's (drift).
            self.replica = DriftingReplica(self.replica, clock_rate)  # type: ignore[assignment]
        self.sm: StateMachine = state_machine if state_machine is not None else KVStore()
        #: (index, payload) applied here, in order, when ``record_applied``.
        self.applied: list[tuple[int, Any]] = []
        # Messages sent, counted by class (a type is a cheaper key than its name on
        # the per-message path); ``sent`` names them.
        self._sent_types: dict[type, int] = {}
        self.sent_bytes: Counter[str] = Counter()
        #: (client_id, seq) -> (request, waiter) for requests submitted here.
        self.waiting: dict[tuple[int, int], tuple[Request, Any]] = {}
        # The answer to an applied write (result None): see _client_reply.
        self._done = ClientReply(ok=True, result=None, node=node_id)
        self._reads: list[ReadReady] = []
        self._last_snapshot = 0
        #: Most client requests packed into one proposal (0: never pack).  A
        #: protocol without a replicated log answers requests itself, one by one
        #: (``Outputs.answers``): nothing to pack into.
        self.pack_proposals = 0 if "log" in spec.lacks else pack_proposals
        # Proposals this host packed: (session, seq) -> the requests inside.
        self._packs: dict[tuple[int, int], tuple[Request, ...]] = {}
        # A session of its own per incarnation (seeded: a simulated run stays replayable).
        packs_rng = random.Random(f"{seed}:packs:{node_id}:{incarnation}")
        self._pack_session = packs_rng.getrandbits(62) + 1
        self._pack_seq = 0
        #: Proposals made for client requests (one per pack, or per request not
        #: packed): what the cost model charges ``propose`` for.
        self.proposals = 0

    @property
    def sent(self) -> Counter[str]:
        """Messages sent by this host, by message type name (a fresh Counter)."""
        counts: Counter[str] = Counter()
        for cls, n in self._sent_types.items():
            counts[cls.__name__] += n
        return counts

    # -- inputs ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.handle(now, self.replica.start(now))
        if self._wake is not None:
            self._wake()

    def step(self, now: float, src: int, message: Any) -> None:
        self.handle(now, self.replica.step(now, src, message))
        if self._wake is not None:
            self._wake()

    def tick(self, now: float) -> None:
        self.handle(now, self.replica.tick(now))
        if self._wake is not None:
            self._wake()
        deadline = self.replica.next_deadline()
        if deadline is not None and deadline <= now:
            raise TickLoopError(
                f"node {self.node_id}: {type(self.replica).__name__} asks for a tick at"
                f" {deadline} right after ticking at {now}"
            )

    def submit(self, now: float, request: Request, waiter: Any) -> None:
        """A client request arrived here; ``waiter`` is answered through ``reply``."""
        # Once per client request in the simulator: accept() written out.
        self.waiting[(request.client_id, request.seq)] = (request, waiter)
        if type(request.command) is ChangeMembership and self._answered_change(request):
            return
        if self.replica.supports_reads and isinstance(request.command, READ_ONLY):
            self.handle(now, self.replica.read(now, request))
        else:
            self.proposals += 1
            self.handle(now, self.replica.propose(now, request))
        if self._wake is not None:
            self._wake()

    def propose(self, now: float, request: Request, waiter: Any) -> ProposeResult:
        """``submit``, answering at once whether this node took the request, and
        where (see ``ProposeResult``).  A read served without the log
        (``supports_reads``) is accepted with no index.

        (A separate method so that simulated clients, which never look, do
        not pay for the answer on every request.)
        """
        out = self.accept(now, request, waiter)
        result = self._result(request, out)
        self.handle(now, out)
        if self._wake is not None:
            self._wake()
        return result

    def _result(self, request: Request, out: Outputs) -> ProposeResult:
        client_id, seq = request.client_id, request.seq
        for rejection in out.rejected:
            if rejection.client_id == client_id and rejection.seq == seq:
                return ProposeResult(
                    node=self.node_id,
                    request=request,
                    accepted=False,
                    reason=rejection.reason,
                    leader_hint=rejection.leader_hint,
                )
        index = None
        for placed_client, placed_seq, placed_index in out.placed or ():
            if placed_client == client_id and placed_seq == seq:
                index = placed_index  # the last placement wins
        return ProposeResult(node=self.node_id, request=request, accepted=True, index=index)

    def snapshot(self, now: float, index: int | None = None) -> int:
        """Snapshot the state machine at its applied index and let the replica compact.

        ``index``, if given, must be that applied index (a state machine can
        only snapshot where it stands).  Returns the index covered; 0 when
        nothing is applied yet (then nothing happens).
        """
        applied = self.sm.applied_index
        if index is not None and index != applied:
            raise ValueError(
                f"node {self.node_id}: can snapshot only at its applied index {applied},"
                f" not {index}"
            )
        if applied:
            self._snapshot(now, applied)
            if self._wake is not None:
                self._wake()
        return applied

    def _snapshot(self, now: float, index: int) -> None:
        self._last_snapshot = index
        self.handle(now, self.replica.compact(now, index, self.sm.snapshot()))

    def accept_many(self, now: float, items: list[tuple[Request, Any]]) -> Outputs:
        """``accept`` for a batch of requests that arrived together.

        With ``pack_proposals`` set, the key-value writes among them (and the
        reads of a protocol that serves reads through the log) are proposed
        as few ``PackedBatch`` requests, each of at most ``pack_proposals``
        requests: one log entry, one record and one replication per pack
        instead of per request.  Everything else is accepted one by one."""
        if self.pack_proposals < 2 or len(items) < 2:
            out = Outputs()
            for request, waiter in items:
                out.extend(self.accept(now, request, waiter))
            return out
        out = Outputs()
        packable: list[Request] = []
        reads_direct = self.replica.supports_reads
        waiting = self.waiting
        for request, waiter in items:
            command = request.command
            if type(command) in _PACKABLE and not (reads_direct and type(command) is Get):
                waiting[(request.client_id, request.seq)] = (request, waiter)
                packable.append(request)
            else:
                out.extend(self.accept(now, request, waiter))
        size = self.pack_proposals
        for start in range(0, len(packable), size):
            chunk = packable[start : start + size]
            self.proposals += 1
            if len(chunk) == 1:
                out.extend(self.replica.propose(now, chunk[0]))
                continue
            self._pack_seq += 1
            outer = Request(client_id=self._pack_session, seq=self._pack_seq, command=pack(chunk))
            self._packs[(outer.client_id, outer.seq)] = tuple(chunk)
            out.extend(self.replica.propose(now, outer))
        return out

    def accept(self, now: float, request: Request, waiter: Any) -> Outputs:
        """Register ``waiter`` for ``request`` and return the replica's outputs
        without carrying them out.  A driver that batches inputs merges the
        outputs of a batch (``Outputs.extend``) and hands them to ``handle``
        once: one storage sync covers them all (group commit)."""
        self.waiting[(request.client_id, request.seq)] = (request, waiter)
        if type(request.command) is ChangeMembership and self._answered_change(request):
            return Outputs()
        if self.replica.supports_reads and isinstance(request.command, READ_ONLY):
            return self.replica.read(now, request)
        self.proposals += 1
        return self.replica.propose(now, request)

    def _answered_change(self, request: Request) -> bool:
        """Answer a membership change its session shows applied already (see above)."""
        answered = getattr(self.sm, "answered", None)
        if answered is None:
            return False
        known, result = answered(request)
        if not known:
            return False
        entry = self.waiting.pop((request.client_id, request.seq))
        self._reply(entry[1], self._client_reply(result))
        return True

    def _client_reply(self, result: Any) -> ClientReply:
        """The answer to an applied request whose result is ``result``."""
        if result is None:  # a write's: one shared value (answers are frozen)
            return self._done
        if result is SESSION_EXPIRED:
            return ClientReply(ok=False, reason="session_expired", node=self.node_id)
        return ClientReply(ok=True, result=result, node=self.node_id)

    # -- outputs ---------------------------------------------------------------------

    def handle(self, now: float, out: Outputs) -> None:
        """Carry out ``out``: send eagerly, persist, send, apply, answer (in that order)."""
        # Runs once per input, so every step is guarded by a cheap emptiness test.
        eager = out.eager
        if eager:
            self._send_all(eager)
        persist = out.persist
        synced = None
        if persist or out.compact is not None:
            storage = self.storage
            if out.compact is not None:
                storage.replace(out.compact)
            if persist:
                storage.append(persist)
            storage.sync()
            synced = self.replica.synced(now)

        messages = out.messages
        if messages:
            self._send_all(messages)

        if out.restore is not None:
            snap = out.restore
            self.sm.restore(snap.index, snap.data)
            self._last_snapshot = snap.index
            if self.record_applied:
                self.applied.append((snap.index, snap))
            if self.on_apply is not None:
                self.on_apply(self.node_id, snap.index, snap)
        if out.committed:
            self._apply(now, out)

        if out.rejected:
            for rejection in out.rejected:
                key = (rejection.client_id, rejection.seq)
                packed = self._packs.pop(key, None) if self._packs else None
                keys = [(r.client_id, r.seq) for r in packed] if packed else [key]
                for k in keys:
                    entry = self.waiting.pop(k, None)
                    if entry is not None:
                        self._reply(
                            entry[1],
                            ClientReply(
                                ok=False,
                                reason=rejection.reason,
                                leader_hint=rejection.leader_hint,
                                node=self.node_id,
                            ),
                        )
        if out.reads:
            self._reads.extend(out.reads)
        if self._reads:
            self._serve_reads()
        if out.answers:
            for answer in out.answers:
                entry = self.waiting.pop((answer.client_id, answer.seq), None)
                if entry is not None:
                    self._reply(entry[1], self._client_reply(answer.result))
        if synced:
            self.handle(now, synced)

    def send_now(self, messages: list[tuple[int, Any]]) -> None:
        """Hand ``messages`` to the network now (a driver sending an ``Outputs``'
        eager messages ahead of ``handle``, which then must not see them)."""
        self._send_all(messages)

    def _send_all(self, messages: list[tuple[int, Any]]) -> None:
        send, sent = self._send, self._sent_types
        for dst, message in messages:
            cls = type(message)
            sent[cls] = sent.get(cls, 0) + 1
            send(dst, message)

    def _apply(self, now: float, out: Outputs) -> None:
        sm, waiting, reply, node_id = self.sm, self.waiting, self._reply, self.node_id
        client_reply = self._client_reply
        packs = self._packs
        apply_requests = getattr(sm, "apply_requests", None)
        applied = self.applied if self.record_applied else None
        on_apply = self.on_apply
        for entry in out.committed:
            index = entry.index
            if index <= sm.applied_index:
                continue  # already covered by a restored snapshot
            payload = entry.payload
            own = None
            if packs:
                for r in requests_in(payload):
                    if type(r.command) is PackedBatch:
                        own = packs.pop((r.client_id, r.seq), None)
            if own is not None and type(payload) is Request and apply_requests is not None:
                # Our own pack: we still hold its requests, so skip unpacking it.
                results = apply_requests(index, own)
            else:
                results = sm.apply(index, payload)
            if applied is not None:
                applied.append((index, payload))
            if on_apply is not None:
                on_apply(node_id, index, payload)
            if not waiting:
                continue  # no client waits here (a follower, usually)
            for request, result in results:
                found = waiting.pop((request.client_id, request.seq), None)
                if found is not None:
                    reply(found[1], client_reply(result))
        if self.snapshot_every and sm.applied_index - self._last_snapshot >= self.snapshot_every:
            self._snapshot(now, sm.applied_index)

    def _serve_reads(self) -> None:
        applied = self.sm.applied_index
        still: list[ReadReady] = []
        for ready in self._reads:
            if ready.index > applied:
                still.append(ready)
                continue
            entry = self.waiting.pop((ready.client_id, ready.seq), None)
            if entry is None:
                continue
            request, waiter = entry
            result = self.sm.query(request.command)
            self._reply(waiter, self._client_reply(result))
        self._reads = still
