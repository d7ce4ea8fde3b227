"""The client library of a real cluster: sessions, leader discovery, pipelining.

Theory of operation
-------------------
``async with consensus.connect("cluster.toml") as client:`` opens a
``Client``; ``await client.put("k", "v")`` returns once the cluster applied
the command (or raises ``OperationFailed`` when its outcome stayed unknown
after every retry).  Many tasks may use one client at once: their requests
share one connection per node and go out many per frame (pipelining).

Exactly once: the state machine keeps one session per client id and
remembers the latest request it applied (``consensus.statemachine``), which
requires at most one outstanding request per client id.  So a ``Client`` is
a pool of *lanes*: each operation borrows a lane (a session id of its own,
random 62 bits) for its lifetime and numbers its request with the lane's
next sequence number; every retry of that operation reuses the same
``(client_id, seq)``, so a retry of a request that did commit is answered
from the session table instead of being applied twice.  A cluster that
expires sessions (``max_sessions``, ``session_ttl``) answers a request of an
expired session ``session_expired``: the client cannot know whether an
earlier attempt took effect, so the operation ends indeterminate
(``OperationFailed``), never retried, and the lane gets a new session.

Finding the leader: requests go to the node that answered last.  A
rejection with a leader hint moves there at once; one without (no leader
known) backs off and tries the next node, and ``busy`` (the node is
overloaded) backs off and tries again; the pause doubles from ``backoff`` up
to ``MAX_BACKOFF`` with jitter, so clients turned away together do not
return together.  A timeout (no answer within ``timeout``) tries the next
node; a broken connection likewise.  After
``max_attempts`` attempts the operation is recorded as indeterminate.

``history``: a ``consensus.checker.History`` to record every operation into
(``time.monotonic`` timestamps, comparable across processes on one machine),
for the linearizability checker.

``SyncClient`` wraps a client for code without an event loop (a notebook, a
script): it runs Trio in a background thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import secrets
import ssl
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import trio

from consensus.builders import builder
from consensus.checker.history import INFO, OK, History, Operation
from consensus.codec import CodecError
from consensus.commands import Append, CompareAndSet, Delete, Get, Put, Request
from consensus.runtime.cluster import OperationFailed
from consensus.runtime.clusterfile import ClusterFile, load_cluster_file
from consensus.runtime.tcp import FramedStream, HandshakeError, dial_handshake, open_stream
from consensus.runtime.tls import tls_contexts
from consensus.runtime.wire import LocalRead, Replies, Reply, StatusQuery, Submit, runtime_codec

__all__ = ["Client", "OperationFailed", "SyncClient", "connect", "connect_sync"]

log = logging.getLogger("consensus.client")

#: Requests per Submit frame.
REQUESTS_PER_FRAME = 4096
#: Answers handled between two turns of the writer: a load of many operations
#: leaves in pieces, not in one convoy that the cluster waits for.
REPLIES_PER_TURN = 256
_RETRY_AT_ONCE = ("not_leader", "overwritten")
#: The answer to a request whose session the cluster expired (never retried).
SESSION_EXPIRED = "session_expired"
#: Longest pause between two attempts of one operation (seconds).
MAX_BACKOFF = 1.0


class _Lane:
    __slots__ = ("client_id", "seq", "expired")

    def __init__(self) -> None:
        self.client_id = secrets.randbits(62) + 1
        self.seq = 0
        #: The cluster answered ``session_expired``: this session is gone for good.
        self.expired = False


class _Waiter:
    """One attempt waiting for its answer: the waiting task is parked and
    rescheduled with the answer (cheaper than an Event and a cancel scope
    per attempt; the connection's watchdog answers ``timeout``)."""

    __slots__ = ("task", "reply", "deadline", "callback")

    def __init__(self, deadline: float = math.inf) -> None:
        self.task: Any = None
        self.reply: Any = None
        self.deadline = deadline
        # Instead of a parked task: called with the reply (``Client.start``).
        self.callback: Callable[[Any], None] | None = None

    def set(self, reply: Any) -> None:
        if self.reply is None:
            self.reply = reply
            task, self.task = self.task, None
            if task is not None:
                trio.lowlevel.reschedule(task)
            elif self.callback is not None:
                callback, self.callback = self.callback, None
                callback(reply)

    async def wait(self) -> Any:
        if self.reply is None:
            self.task = trio.lowlevel.current_task()

            def abort(raise_cancel: Any) -> Any:
                self.task = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return self.reply


_DISCONNECTED = "disconnected"
#: ``Request(client_id, seq, command)``, positional and fast: one per operation.
_new_request = builder(Request)
_TIMED_OUT = Reply(client_id=0, seq=0, ok=False, reason="timeout")


class _Conn:
    """One authenticated connection to one node, shared by every operation."""

    def __init__(self, client: Client, node: int) -> None:
        self.client = client
        self.node = node
        self.framed: FramedStream | None = None
        self.ready = trio.Event()
        self.error: str | None = None
        self.closed = False
        self.queue: list[Request] = []
        self.wake = trio.Event()
        # Attempts not yet answered, in the order they were sent, so by deadline
        # (dicts keep insertion order): the reader's index and the watchdog's queue.
        # An answered attempt leaves at once, so nothing of it outlives its answer.
        self.pending: dict[tuple[int, int], _Waiter] = {}
        self.deadline_set = trio.Event()
        # Control queries (status, local reads) are answered in order: one waiter each.
        self.controls: deque[tuple[Any, _Waiter]] = deque()
        self.scope = trio.CancelScope()
        # Trio's clock (attempts' deadlines): its method, read once per attempt
        # without trio.current_time's calls around it.
        self.trio_now: Callable[[], float] = trio.lowlevel.current_clock().current_time

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            task_status.started()
            try:
                await self._run()
            finally:
                self._close(self.error or f"connection to node {self.node} closed")
                if self.framed is not None:
                    await self.framed.aclose()

    async def _run(self) -> None:
        client = self.client
        host, port = client.nodes[self.node]
        try:
            with trio.fail_after(client.timeout):
                stream = await open_stream(
                    host, port, tls=client.tls, server_name=client.server_name
                )
            self.framed = FramedStream(stream, client.codec.max_frame, f"node {self.node}")
            await dial_handshake(
                self.framed,
                secret=client.secret,
                role="client",
                me=-1,
                listener=self.node,
                timeout=client.timeout,
            )
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, HandshakeError) as exc:
            self._close(f"cannot connect to node {self.node} at {host}:{port}: {_why(exc)}")
            if isinstance(exc, HandshakeError):
                log.warning("%s", self.error)
            return
        self.ready.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, nursery.cancel_scope)
                nursery.start_soon(self._watchdog)
                await self._read()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close(f"connection to node {self.node} lost: {_why(exc)}")
        except CodecError as exc:
            self._close(f"bad frame from node {self.node}: {exc}")

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = reason
        self.ready.set()
        if self.client._conns.get(self.node) is self:
            del self.client._conns[self.node]
        gone = Reply(client_id=0, seq=0, ok=False, reason=_DISCONNECTED)
        for waiter in self.pending.values():
            waiter.set(gone)
        self.pending.clear()
        for _, waiter in self.controls:
            waiter.set(None)
        self.controls.clear()

    def send(self, request: Request) -> _Waiter:
        waiter = _Waiter(self.trio_now() + self.client.timeout)
        if self.closed:
            waiter.set(Reply(client_id=0, seq=0, ok=False, reason=_DISCONNECTED))
            return waiter
        key = (request.client_id, request.seq)
        pending = self.pending
        earlier = pending.pop(key, None)
        if earlier is not None:  # one attempt at a time: never, but never lost either
            earlier.set(_TIMED_OUT)
        pending[key] = waiter
        self.queue.append(request)
        self.wake.set()
        if len(pending) == 1:
            self.deadline_set.set()
        return waiter

    async def _watchdog(self) -> None:
        """Answer ``timeout`` to every attempt still unanswered at its deadline."""
        pending = self.pending
        while True:
            if not pending:
                self.deadline_set = trio.Event()
                await self.deadline_set.wait()
                continue
            now = self.trio_now()
            expired = []
            for key, waiter in pending.items():  # oldest first
                if waiter.deadline > now:
                    break
                expired.append((key, waiter))
            if not expired:
                await trio.sleep_until(waiter.deadline)
                continue
            for key, waiter in expired:
                del pending[key]
                waiter.set(_TIMED_OUT)

    async def control(self, query: Any) -> Any:
        """Send a control query (``StatusQuery``, ``LocalRead``) and wait for its answer."""
        waiter = _Waiter()
        if self.closed:
            raise ConnectionError(self.error or f"node {self.node}: connection closed")
        self.controls.append((query, waiter))
        self.queue.append(query)
        self.wake.set()
        reply = await waiter.wait()
        if reply is None:
            raise ConnectionError(self.error or f"node {self.node}: no answer")
        return reply

    async def _write(self, scope: trio.CancelScope) -> None:
        encode = self.client.codec.encode_frame
        assert self.framed is not None
        try:
            while True:
                if not self.queue:
                    self.wake = trio.Event()
                    await self.wake.wait()
                queue, self.queue = self.queue, []
                chunks: list[bytes] = []
                requests = [r for r in queue if type(r) is Request]
                if len(requests) != len(queue):
                    chunks.extend(encode(q) for q in queue if type(q) is not Request)
                for i in range(0, len(requests), REQUESTS_PER_FRAME):
                    chunks.append(
                        encode(Submit(requests=tuple(requests[i : i + REQUESTS_PER_FRAME])))
                    )
                await self.framed.send(b"".join(chunks))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close(f"connection to node {self.node} lost: {_why(exc)}")
            scope.cancel()

    async def _read(self) -> None:
        decode = self.client.codec.decode
        assert self.framed is not None
        pending = self.pending
        while True:
            frames = await self.framed.receive_frames()
            if not frames:
                self._close(f"node {self.node} closed the connection")
                return
            for frame in frames:
                message = decode(frame)
                if type(message) is Replies:
                    replies = message.replies
                    for start in range(0, len(replies), REPLIES_PER_TURN):
                        if start:
                            # Let the writer send the requests the answers so far
                            # started: the cluster works on them while we go on.
                            await trio.lowlevel.checkpoint()
                        for reply in replies[start : start + REPLIES_PER_TURN]:
                            waiter = pending.pop((reply.client_id, reply.seq), None)
                            if waiter is not None:
                                waiter.set(reply)
                elif self.controls:
                    _, waiter = self.controls.popleft()
                    waiter.set(message)


class Client:
    """A client of one real cluster; build it with ``connect``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        nodes: dict[int, tuple[str, int]],
        secret: bytes,
        *,
        timeout: float = 2.0,
        backoff: float = 0.02,
        max_attempts: int = 50,
        max_frame: int | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str = "",
        history: History | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self._nursery = nursery
        self.nodes = dict(nodes)
        self.node_ids = tuple(sorted(self.nodes))
        self.secret = secret
        self.timeout = timeout
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.codec = runtime_codec(max_frame)
        self.tls = tls
        self.server_name = server_name
        self.history = history
        self.clock = clock
        self.leader: int | None = None
        self._rotation = itertools.cycle(self.node_ids)
        self._conns: dict[int, _Conn] = {}
        self._lanes: list[_Lane] = []
        self._op_ids = itertools.count()
        # Backoff jitter only; session ids come from the secrets module.
        self._rng = random.Random(seed)
        #: Attempts, redirects, timeouts, busy answers, expired sessions, reconnects.
        self.stats: dict[str, int] = {
            "attempts": 0,
            "redirects": 0,
            "timeouts": 0,
            "busy": 0,
            "sessions_expired": 0,
            "disconnects": 0,
        }

    # -- commands ----------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        return await self.submit(Get(key=key))

    async def put(self, key: str, value: str) -> None:
        return await self.submit(Put(key=key, value=value))

    async def append(self, key: str, value: str) -> None:
        return await self.submit(Append(key=key, value=value))

    async def cas(self, key: str, expected: str | None, new: str) -> bool:
        return await self.submit(CompareAndSet(key=key, expected=expected, new=new))

    async def delete(self, key: str) -> bool:
        return await self.submit(Delete(key=key))

    async def submit(self, command: Any, *, node: int | None = None) -> Any:
        """Run ``command`` until the cluster applied it; its result.

        Raises ``OperationFailed`` when the outcome stays unknown."""
        lane, request, op = self._begin(command, node)
        try:
            return await self._run(request, op, node, lane)
        finally:
            self._give_back(lane)

    def _give_back(self, lane: _Lane) -> None:
        # An expired session answers every later request ``session_expired``:
        # its lane is replaced by a new session instead.
        self._lanes.append(_Lane() if lane.expired else lane)

    def _begin(self, command: Any, node: int | None) -> tuple[_Lane, Request, Operation]:
        """Borrow a lane, number the request, record the operation as invoked."""
        lane = self._lanes.pop() if self._lanes else _Lane()
        lane.seq += 1
        request = _new_request(lane.client_id, lane.seq, command)
        op = Operation(
            op_id=next(self._op_ids),
            client=lane.client_id,
            seq=lane.seq,
            command=command,
            node=node,
            invoke=self.clock(),
        )
        if self.history is not None:
            self.history.record(op)
        return lane, request, op

    def start(self, command: Any, on_done: Callable[[Operation], None]) -> Operation:
        """Submit ``command`` without waiting; ``on_done(op)`` is called once it
        ends (``op.status``: ``"ok"`` with ``op.result``, or ``"info"``: unknown).

        The cheap path for load generators: while the current target node is
        connected and answers ``ok`` at once, no task is involved at all (the
        answer calls ``on_done`` from the connection's reader); anything else
        (a redirect, ``busy``, a timeout) continues in a task with the same
        retries as ``submit``.  Call it from within the client's Trio run.
        """
        target = self._target()
        lane, request, op = self._begin(command, target)
        conn = self._conns.get(target)
        if conn is None or not conn.ready.is_set() or conn.closed:
            self._nursery.start_soon(self._finish_slowly, request, op, lane, on_done, None)
            return op
        self.stats["attempts"] += 1

        def answered(reply: Any) -> None:
            if reply.ok:
                op.complete = self.clock()
                op.status = OK
                op.result = reply.result
                self._give_back(lane)
                on_done(op)
            else:
                op.retries += 1
                self._nursery.start_soon(self._finish_slowly, request, op, lane, on_done, reply)

        conn.send(request).callback = answered
        return op

    async def _finish_slowly(
        self,
        request: Request,
        op: Operation,
        lane: _Lane,
        on_done: Callable[[Operation], None],
        first: Any,
    ) -> None:
        if first is _TIMED_OUT:
            self.stats["timeouts"] += 1
            if op.node is not None:
                self._next(op.node)  # forget a leader that did not answer
        elif first is not None and first.reason == SESSION_EXPIRED:
            self._expire(op, lane)
            self._give_back(lane)
            on_done(op)
            return
        elif first is not None and first.reason in _RETRY_AT_ONCE:
            if first.leader is not None and first.leader in self.nodes:
                self.leader = first.leader
        try:
            await self._run(request, op, None, lane)
        except OperationFailed:
            pass
        finally:
            self._give_back(lane)
        on_done(op)

    def _expire(self, op: Operation, lane: _Lane) -> None:
        # Whether an earlier attempt took effect cannot be known: final, unknown.
        self.stats["sessions_expired"] += 1
        lane.expired = True
        op.status = INFO

    async def _run(self, request: Request, op: Operation, node: int | None, lane: _Lane) -> Any:
        target = node if node is not None else self._target()
        redirects = 0
        backoffs = 0
        reason = "no attempt"
        for attempt in range(self.max_attempts):
            if attempt:
                op.retries += 1
            self.stats["attempts"] += 1
            op.node = target
            conn = await self._connection(target)
            if conn.closed:
                reason = conn.error or "cannot connect"
                self.stats["disconnects"] += 1
                target = self._next(target)
                await self._back_off(backoffs)
                backoffs += 1
                continue
            reply = await conn.send(request).wait()
            if reply is _TIMED_OUT:
                self.stats["timeouts"] += 1
                reason = f"no answer from node {target} within {self.timeout:g} s"
                target = self._next(target)
                continue
            if reply.ok:
                self.leader = target
                op.complete = self.clock()
                op.status = OK
                op.result = reply.result
                return reply.result
            reason = f"node {target}: {reply.reason}"
            if reply.reason == _DISCONNECTED:
                self.stats["disconnects"] += 1
                target = self._next(target)
                await self._back_off(backoffs)
                backoffs += 1
            elif reply.reason == "stale":
                break  # superseded by a later request of this lane: cannot happen here
            elif reply.reason == SESSION_EXPIRED:
                self._expire(op, lane)
                raise OperationFailed(op, reason)
            elif (
                reply.reason in _RETRY_AT_ONCE
                and reply.leader is not None
                and reply.leader != target
                and reply.leader in self.nodes
                and redirects < 3
            ):
                self.stats["redirects"] += 1
                redirects += 1
                target = self.leader = reply.leader
            else:
                if reply.reason == "busy":
                    self.stats["busy"] += 1
                redirects = 0
                if reply.leader is not None and reply.leader in self.nodes:
                    target = reply.leader
                else:
                    target = self._next(target)
                await self._back_off(backoffs)
                backoffs += 1
        op.status = INFO
        raise OperationFailed(op, reason)

    async def _back_off(self, times: int) -> None:
        # Exponential with jitter, so clients told "busy" together do not return together.
        delay = min(self.backoff * 2 ** min(times, 16), MAX_BACKOFF)
        await trio.sleep(delay * (0.5 + self._rng.random()))

    def _target(self) -> int:
        return self.leader if self.leader is not None else next(self._rotation)

    def _next(self, current: int) -> int:
        if self.leader == current:
            self.leader = None
        i = self.node_ids.index(current)
        return self.node_ids[(i + 1) % len(self.node_ids)]

    async def _connection(self, node: int) -> _Conn:
        conn = self._conns.get(node)
        if conn is not None and conn.ready.is_set() and not conn.closed:
            return conn  # connected: no need to wait (or even to yield)
        if conn is None:
            conn = _Conn(self, node)
            self._conns[node] = conn
            await self._nursery.start(conn.run)
        await conn.ready.wait()
        return conn

    async def status(self, node: int) -> dict[str, Any]:
        """Node ``node``'s role and progress (``Status.info``)."""
        conn = await self._connection(node)
        if conn.closed:
            raise ConnectionError(conn.error or f"cannot connect to node {node}")
        with trio.fail_after(self.timeout):
            answer = await conn.control(StatusQuery())
        return dict(answer.info)

    async def local_values(self, node: int, keys: Any) -> tuple[int, dict[str, str | None]]:
        """Node ``node``'s own applied index and values of ``keys`` (diagnostics:
        what that node holds now, not a linearizable read)."""
        keys = tuple(keys)
        conn = await self._connection(node)
        if conn.closed:
            raise ConnectionError(conn.error or f"cannot connect to node {node}")
        with trio.fail_after(self.timeout):
            answer = await conn.control(LocalRead(keys=keys))
        return answer.applied, dict(zip(keys, answer.values, strict=True))

    async def aclose(self) -> None:
        """Close every connection (outstanding operations fail over to their retries)."""
        for conn in list(self._conns.values()):
            conn._close("client closed")
            conn.scope.cancel()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _client_args(
    source: str | Path | ClusterFile | dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    cluster = load_cluster_file(source)
    _, tls_client = tls_contexts(cluster.tls, cluster)
    args: dict[str, Any] = {
        "nodes": {n.id: (n.host, n.port) for n in cluster.nodes},
        "secret": cluster.secret_bytes(),
        "timeout": cluster.client.timeout,
        "backoff": cluster.client.backoff,
        "max_attempts": cluster.client.max_attempts,
        "max_frame": cluster.limits.max_frame,
        "tls": tls_client,
        "server_name": cluster.tls.server_name if cluster.tls else "",
    }
    args.update(overrides)
    return args


@asynccontextmanager
async def connect(
    cluster: str | Path | ClusterFile | dict[str, Any], **overrides: Any
) -> AsyncIterator[Client]:
    """A ``Client`` of the cluster a cluster file describes, for an ``async with`` block.

    ``overrides`` replace what the file says (``timeout``, ``max_attempts``,
    ``history``, ...)::

        async with consensus.connect("cluster.toml") as client:
            await client.put("k", "v")
            assert await client.get("k") == "v"
    """
    args = _client_args(cluster, overrides)
    async with trio.open_nursery() as nursery:
        client = Client(nursery, **args)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()


class SyncClient:
    """A blocking client for code without an event loop (notebooks, scripts).

    Runs Trio in a background thread; every method blocks until the cluster
    answers.  Close it (or use ``with``) to stop the thread."""

    def __init__(self, cluster: str | Path | ClusterFile | dict[str, Any], **overrides: Any):
        self._args = _client_args(cluster, overrides)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._client: Client | None = None
        self._token: Any = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="consensus-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the constructor's caller
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            self._client = Client(nursery, **self._args)
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()
            await self._client.aclose()
            nursery.cancel_scope.cancel()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def submit(self, command: Any) -> Any:
        assert self._client is not None
        return self._call(self._client.submit, command)

    def get(self, key: str) -> str | None:
        return self.submit(Get(key=key))

    def put(self, key: str, value: str) -> None:
        return self.submit(Put(key=key, value=value))

    def append(self, key: str, value: str) -> None:
        return self.submit(Append(key=key, value=value))

    def cas(self, key: str, expected: str | None, new: str) -> bool:
        return self.submit(CompareAndSet(key=key, expected=expected, new=new))

    def delete(self, key: str) -> bool:
        return self.submit(Delete(key=key))

    def status(self, node: int) -> dict[str, Any]:
        assert self._client is not None
        return self._call(self._client.status, node)

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=10)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_sync(
    cluster: str | Path | ClusterFile | dict[str, Any], **overrides: Any
) -> SyncClient:
    """A blocking ``SyncClient`` (see ``connect`` for the arguments)."""
    return SyncClient(cluster, **overrides)
