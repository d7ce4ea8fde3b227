"""One node of a real cluster: a Trio program whose nursery holds it all.

Theory of operation
-------------------
``NodeServer(cluster, node_id)`` is what ``python -m consensus serve`` runs.
Its nursery holds:

* the ``NodeRunner`` (``node.py``): the replica's driver task, with the
  node's durable write-ahead log (``data_dir/node-<id>/wal.log``) and its
  key-value state machine, rebuilt from that log on restart;
* the ``TcpTransport`` (``tcp.py``): a dialer per higher-numbered peer and a
  writer per connected peer;
* the listener: one task per accepted connection, which runs the
  authenticated handshake and then serves either a peer (handed to the
  transport) or a client session.

A client session reads ``Submit`` frames and hands every request to the
runner; answers are queued and written back, many per ``Replies`` frame, by
the session's writer task.  A session whose unsent replies pile up beyond
``limits.client_queue`` is closed as too slow (its requests stay safe: the
client retries with the same session ids).  A ``StatusQuery`` is answered
at once from the runner's status.

Operator mistakes are ``StartupError`` (one line, exit status 2 from the
command line): the data directory missing or in use by another process, the
address not available.  Every log line names the node; role changes name
the term.
"""

from __future__ import annotations

import fcntl
import logging
import os
import ssl
import sys
import time
from typing import Any

import trio

from consensus.builders import builder
from consensus.codec import Codec, CodecError
from consensus.host import ClientReply
from consensus.runtime.clusterfile import ClusterFile
from consensus.runtime.node import NodeRunner
from consensus.runtime.tcp import (
    FramedStream,
    HandshakeError,
    TcpTransport,
    accept_stream,
    listen_handshake,
)
from consensus.runtime.tls import tls_contexts
from consensus.runtime.wire import (
    LocalRead,
    LocalValues,
    Replies,
    Reply,
    Status,
    StatusQuery,
    Submit,
    runtime_codec,
)
from consensus.statemachine import STALE
from consensus.wal import DurableStorage, WalError

__all__ = ["NodeServer", "StartupError", "configure_logging"]

#: ``Reply(client_id, seq, ok, result, reason, leader)``, positional and fast:
#: every request a node answers builds one.
_new_reply = builder(Reply)

#: Replies per frame: keeps a frame far below any sane max_frame.
REPLIES_PER_FRAME = 4096


class StartupError(Exception):
    """An operator mistake that stops a node from starting; ``str`` is one line."""


class _NodeLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"node {self.extra['node']}: {msg}", kwargs  # type: ignore[index]


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """Log lines as ``time level logger: node N: message`` on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("consensus")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class NodeServer:
    """Node ``node_id`` of ``cluster``, hosted until cancelled (see the module docstring)."""

    def __init__(self, cluster: ClusterFile, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.address = cluster.node(node_id)
        self.log = _NodeLog(logging.getLogger("consensus.node"), {"node": node_id})
        self.spec = cluster.spec()
        self.codec = Codec.for_protocol(self.spec, max_frame=cluster.limits.max_frame)
        self.secret = cluster.secret_bytes()
        self.tls_server, self.tls_client = tls_contexts(cluster.tls, cluster)
        self.storage: DurableStorage | None = None
        self.runner: NodeRunner | None = None
        self.transport: TcpTransport | None = None
        self.listening: tuple[str, int] | None = None
        self._lock_fd = -1
        self.client_sessions = 0
        self.refused = 0

    # -- startup ---------------------------------------------------------------------

    def _open_storage(self) -> DurableStorage:
        data_dir = self.cluster.path(self.cluster.data_dir)
        if not data_dir.is_dir():
            raise StartupError(
                f"data directory {data_dir} does not exist (create it; `python -m consensus"
                " cluster` creates it for local clusters)"
            )
        node_dir = self.cluster.node_dir(self.node_id)
        node_dir.mkdir(exist_ok=True)
        self._lock_fd = os.open(node_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StartupError(
                f"data directory {node_dir} is in use by another process (node {self.node_id}"
                " already running?)"
            ) from None
        fsync = "never" if self.cluster.fsync == "never" else "always"
        try:
            storage = DurableStorage(
                node_dir / "wal.log",
                self.codec,
                fsync=fsync,
                preallocate=self.cluster.wal_preallocate,
            )
        except WalError as exc:
            raise StartupError(f"write-ahead log: {exc}") from None
        if storage.recovery.truncated_bytes:
            self.log.warning(
                "write-ahead log had a torn tail: cut %d bytes (%s); every complete record kept",
                storage.recovery.truncated_bytes,
                storage.recovery.reason,
            )
        return storage

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started((host, port))`` once listening."""
        cluster = self.cluster
        host, port = self.address.host, self.address.port
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise StartupError(
                f"node {self.node_id}: cannot listen on {self.address.address}:"
                f" {exc.strerror or exc}"
            ) from None
        self.storage = storage = self._open_storage()
        try:
            recovered = len(storage.load())
            seed = f"{cluster.seed}:{time.time_ns()}"
            addresses = {n.id: (n.host, n.port) for n in cluster.nodes}
            self.transport = TcpTransport(
                me=self.node_id,
                addresses=addresses,
                codec=self.codec,
                secret=self.secret,
                queue_limit=cluster.limits.peer_queue,
                handshake_timeout=cluster.limits.handshake_timeout,
                tls_client=self.tls_client,
                server_name=cluster.tls.server_name if cluster.tls else "",
                logger=self.log,
                seed=seed,
            )
            self.runner = NodeRunner(
                node_id=self.node_id,
                spec=self.spec,
                members=cluster.node_ids,
                options=cluster.protocol_options(),
                transport=self.transport,
                storage=storage,
                seed=seed,
                group_commit=cluster.fsync != "always",
                max_batch=cluster.limits.max_batch,
                max_pending=cluster.limits.max_pending,
                snapshot_every=cluster.snapshot_every,
                pack_proposals=cluster.limits.pack_proposals,
                state_machine=cluster.cluster_config().state_machine(),
                logger=self.log,
            )
            bound = listeners[0].socket.getsockname()
            self.listening = (bound[0], bound[1])
            self.log.info(
                "%s listening on %s:%s, data %s, fsync %s, %d records recovered",
                self.spec.name,
                bound[0],
                bound[1],
                cluster.node_dir(self.node_id),
                cluster.fsync,
                recovered,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(self.runner.run)
                nursery.start_soon(trio.serve_listeners, self._handle, listeners)
                task_status.started(self.listening)
        finally:
            storage.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # -- connections -----------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer_name = f"{host}:{port}"
        except OSError:
            peer_name = "?"
        framed: FramedStream | None = None
        timeout = self.cluster.limits.handshake_timeout
        try:
            with trio.fail_after(timeout):  # TLS too: a silent connection is dropped
                wrapped = await accept_stream(stream, self.tls_server)
            framed = FramedStream(wrapped, self.cluster.limits.max_frame, peer_name)
            login = await listen_handshake(
                framed,
                secret=self.secret,
                me=self.node_id,
                peers=tuple(n for n in self.cluster.node_ids if n != self.node_id),
                timeout=self.cluster.limits.handshake_timeout,
            )
        except trio.TooSlowError:
            self.refused += 1
            self.log.warning(
                "refused connection from %s: no TLS handshake within %g s", peer_name, timeout
            )
            await trio.aclose_forcefully(stream)
            return
        except (HandshakeError, ssl.SSLError, trio.BrokenResourceError, OSError) as exc:
            self.refused += 1
            self.log.warning("refused connection from %s: %s", peer_name, exc)
            if framed is not None:
                await framed.aclose()
            else:
                await trio.aclose_forcefully(stream)
            return
        assert self.transport is not None
        if login.role == "peer":
            await self.transport.serve_peer(login.node, framed)
        else:
            await self._serve_client(framed)

    async def _serve_client(self, framed: FramedStream) -> None:
        session = _ClientSession(self, framed)
        self.client_sessions += 1
        try:
            await session.run()
        finally:
            self.client_sessions -= 1
            await framed.aclose()

    def status(self) -> dict[str, Any]:
        assert self.runner is not None and self.transport is not None
        info = self.runner.status()
        info.update({f"tcp_{k}": v for k, v in self.transport.stats.items()})
        info["peers_connected"] = self.transport.connected()
        info["sent_bytes"] = dict(self.transport.bytes_by_type)
        info["client_sessions"] = self.client_sessions
        info["connections_refused"] = self.refused
        info["protocol"] = self.spec.name
        info["fsyncs"] = self.storage.stats.syncs if self.storage is not None else 0
        return info


class _ClientSession:
    """One client connection: requests in, replies out (batched)."""

    def __init__(self, server: NodeServer, framed: FramedStream) -> None:
        self.server = server
        self.framed = framed
        self.codec = runtime_codec(server.cluster.limits.max_frame)
        self.limit = server.cluster.limits.client_queue
        self.out: list[Reply] = []
        self.wake = trio.Event()
        self.closed = False
        self.controls: list[Any] = []

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, nursery.cancel_scope)
            try:
                await self._read()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                self.closed = True
                nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        runner = self.server.runner
        assert runner is not None
        log = self.server.log
        decode = self.codec.decode
        while True:
            try:
                frames = await self.framed.receive_frames()
                if not frames:
                    return
                for frame in frames:
                    message = decode(frame)
                    if type(message) is Submit:
                        for request in message.requests:
                            runner.submit_nowait(request, self._replier(request))
                    elif type(message) is StatusQuery:
                        self._push_control(
                            Status(node=self.server.node_id, info=self.server.status())
                        )
                    elif type(message) is LocalRead:
                        sm = runner.host.sm
                        data = getattr(sm, "data", {})
                        values = tuple(data.get(key) for key in message.keys)
                        self._push_control(
                            LocalValues(
                                node=self.server.node_id, applied=sm.applied_index, values=values
                            )
                        )
                    else:
                        log.warning(
                            "closing client connection from %s: unexpected %s frame",
                            self.framed.peer,
                            type(message).__name__,
                        )
                        return
            except CodecError as exc:
                log.warning(
                    "closing client connection from %s: bad frame: %s", self.framed.peer, exc
                )
                return

    def _replier(self, request: Any) -> Any:
        client_id, seq = request.client_id, request.seq

        def reply(answer: ClientReply) -> None:
            if self.closed:
                return
            result = answer.result
            if answer.ok and result is STALE:
                # A duplicate older than the client's latest request: never re-executed.
                self._push(Reply(client_id=client_id, seq=seq, ok=False, reason="stale"))
                return
            self._push(
                _new_reply(client_id, seq, answer.ok, result, answer.reason, answer.leader_hint)
            )

        return reply

    def _push(self, reply: Reply) -> None:
        self.out.append(reply)
        if len(self.out) > self.limit:
            self.server.log.warning(
                "closing client connection from %s: %d replies unread (too slow)",
                self.framed.peer,
                len(self.out),
            )
            self.closed = True
            self.out.clear()
        self.wake.set()

    def _push_control(self, answer: Any) -> None:
        self.controls.append(answer)
        self.wake.set()

    async def _write(self, scope: trio.CancelScope) -> None:
        encode = self.codec.encode_frame
        try:
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                if self.closed:
                    scope.cancel()
                    return
                controls, self.controls = self.controls, []
                chunks = [encode(answer) for answer in controls]
                out, self.out = self.out, []
                for i in range(0, len(out), REPLIES_PER_FRAME):
                    chunks.append(encode(Replies(replies=tuple(out[i : i + REPLIES_PER_FRAME]))))
                if chunks:
                    await self.framed.send(b"".join(chunks))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.closed = True
            scope.cancel()
