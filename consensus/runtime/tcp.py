"""TCP for real clusters: framed streams, the authenticated handshake, peer links.

Theory of operation
-------------------
``FramedStream`` puts the codec's length-prefixed frames on a Trio stream
(a ``SocketStream``, or an ``SSLStream`` over one when the cluster file has
``[tls]``).  Trio enables ``TCP_NODELAY`` on every socket stream it makes;
``open_stream`` sets it explicitly as well, since a consensus round trip is
a few small frames and Nagle's algorithm would hold them back.

``listen_handshake`` / ``dial_handshake`` run the exchange documented in
``consensus.runtime.wire``; each raises ``HandshakeError`` with one reason
(wrong secret, another wire version, a frame that does not decode, an
unknown role or node, too slow).

``TcpTransport`` is a ``NodeRunner`` transport with one connection per pair
of nodes: node ``i`` dials every peer ``j > i`` and accepts the others, and
both directions share the connection.  A dial that fails is retried with
exponential backoff (``RECONNECT_MIN`` doubling to ``RECONNECT_MAX``, with
jitter); a newer connection from the same peer replaces an older one.
Sending never blocks the node: ``send`` encodes the message once (a
broadcast object is encoded once for all peers) and queues the frame for the
peer's writer task, which drains the whole queue into one ``send_all`` (many
messages, one write).  A queue is bounded (``peer_queue``); when full, the
oldest frame is dropped, and a message for a peer that is not connected is
dropped at once: both are counted in ``stats`` (the protocols retransmit).
A peer that sends a frame that does not decode (malformed, oversize, an
unknown message type, another codec version) is disconnected with one logged
reason; the node carries on with everyone else.
"""

from __future__ import annotations

import hmac
import logging
import random
import secrets
import socket
import ssl
from collections import deque
from typing import Any, Awaitable, Callable

import trio

from consensus.codec import Codec, CodecError, FrameSplitter
from consensus.runtime.wire import (
    NONCE_BYTES,
    ROLES,
    WIRE_VERSION,
    Hello,
    Login,
    Refused,
    Welcome,
    login_proof,
    runtime_codec,
    welcome_proof,
)

__all__ = [
    "FramedStream",
    "HandshakeError",
    "RECONNECT_MAX",
    "RECONNECT_MIN",
    "TcpTransport",
    "dial_handshake",
    "listen_handshake",
    "open_stream",
]

log = logging.getLogger("consensus.tcp")

RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
READ_SIZE = 256 * 1024


class HandshakeError(Exception):
    """A connection failed authentication or spoke something else; ``str`` says why."""


class FramedStream:
    """Length-prefixed frames over a Trio stream."""

    def __init__(self, stream: trio.abc.Stream, max_frame: int, peer: str = "?") -> None:
        self.stream = stream
        self.peer = peer
        self._splitter = FrameSplitter(max_frame)
        self._frames: deque[bytes] = deque()

    async def receive_frames(self) -> list[bytes]:
        """Every complete frame available (at least one); ``[]`` at end of stream.

        Raises ``CodecError`` (``FrameTooLarge``) on an oversize length prefix."""
        while not self._frames:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return []
            self._frames.extend(self._splitter.feed(data))
        frames = list(self._frames)
        self._frames.clear()
        return frames

    async def receive_frame(self) -> bytes | None:
        """The next frame, or ``None`` at end of stream."""
        while not self._frames:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return None
            self._frames.extend(self._splitter.feed(data))
        return self._frames.popleft()

    async def send(self, data: bytes | bytearray) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await trio.aclose_forcefully(self.stream)
            except Exception:  # already broken: nothing left to close
                pass


def _set_nodelay(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def open_stream(
    host: str, port: int, *, tls: ssl.SSLContext | None = None, server_name: str = ""
) -> trio.abc.Stream:
    """A TCP stream to ``host:port`` (TLS-wrapped when ``tls`` is given)."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    _set_nodelay(stream)
    if tls is not None:
        stream = trio.SSLStream(stream, tls, server_hostname=server_name or host)
        await stream.do_handshake()
    return stream


async def accept_stream(
    stream: trio.abc.Stream, tls: ssl.SSLContext | None = None
) -> trio.abc.Stream:
    """Wrap an accepted connection (TLS server side when ``tls`` is given)."""
    _set_nodelay(stream)
    if tls is not None:
        stream = trio.SSLStream(stream, tls, server_side=True)
        await stream.do_handshake()
    return stream


def _decode(codec: Codec, frame: bytes | None, expected: type, who: str) -> Any:
    if frame is None:
        raise HandshakeError(f"{who} closed the connection during the handshake")
    try:
        value = codec.decode(frame)
    except CodecError as exc:
        raise HandshakeError(f"bad handshake frame from {who}: {exc}") from None
    if isinstance(value, Refused):
        raise HandshakeError(f"{who} refused the connection: {value.reason}")
    if not isinstance(value, expected):
        raise HandshakeError(f"expected {expected.__name__} from {who}, got {type(value).__name__}")
    return value


async def listen_handshake(
    framed: FramedStream,
    *,
    secret: bytes,
    me: int,
    peers: tuple[int, ...],
    timeout: float,
) -> Login:
    """The listening side: challenge, check the answer, prove ourselves.

    Returns the verified ``Login`` (``role`` and ``node``); raises
    ``HandshakeError`` after telling the other side why, where it can."""
    codec = runtime_codec()
    nonce = secrets.token_bytes(NONCE_BYTES)
    try:
        with trio.fail_after(timeout):
            await framed.send(codec.encode_frame(Hello(version=WIRE_VERSION, nonce=nonce)))
            login = _decode(codec, await framed.receive_frame(), Login, framed.peer)
            reason = _login_problem(login, secret, nonce, me, peers)
            if reason is not None:
                try:
                    await framed.send(codec.encode_frame(Refused(reason=reason)))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                raise HandshakeError(reason)
            proof = welcome_proof(secret, nonce, login.nonce, me)
            await framed.send(codec.encode_frame(Welcome(node=me, proof=proof)))
            return login
    except trio.TooSlowError:
        raise HandshakeError(f"no complete handshake within {timeout:g} s") from None
    except CodecError as exc:  # an oversize length prefix, before any frame decoded
        raise HandshakeError(f"bad handshake frame: {exc}") from None


def _login_problem(
    login: Login, secret: bytes, nonce: bytes, me: int, peers: tuple[int, ...]
) -> str | None:
    if login.version != WIRE_VERSION:
        return f"wire version {login.version}, this node speaks {WIRE_VERSION}"
    if login.role not in ROLES:
        return f"unknown role {login.role!r}"
    if len(login.nonce) != NONCE_BYTES:
        return "malformed login nonce"
    expected = login_proof(secret, nonce, login.nonce, login.role, login.node, me)
    if not hmac.compare_digest(expected, login.proof):
        return "authentication failed (wrong cluster secret)"
    if login.role == "peer" and login.node not in peers:
        return f"node {login.node} is not a peer of node {me}"
    return None


async def dial_handshake(
    framed: FramedStream,
    *,
    secret: bytes,
    role: str,
    me: int,
    listener: int,
    timeout: float,
) -> None:
    """The connecting side: answer the challenge, check the listener's proof."""
    codec = runtime_codec()
    nonce = secrets.token_bytes(NONCE_BYTES)
    try:
        with trio.fail_after(timeout):
            hello = _decode(codec, await framed.receive_frame(), Hello, framed.peer)
            if hello.version != WIRE_VERSION:
                raise HandshakeError(
                    f"{framed.peer} speaks wire version {hello.version}, we speak {WIRE_VERSION}"
                )
            proof = login_proof(secret, hello.nonce, nonce, role, me, listener)
            login = Login(version=WIRE_VERSION, role=role, node=me, nonce=nonce, proof=proof)
            await framed.send(codec.encode_frame(login))
            welcome = _decode(codec, await framed.receive_frame(), Welcome, framed.peer)
            expected = welcome_proof(secret, hello.nonce, nonce, listener)
            if welcome.node != listener or not hmac.compare_digest(expected, welcome.proof):
                raise HandshakeError(
                    f"{framed.peer} failed to prove the cluster secret (not node {listener}?)"
                )
    except trio.TooSlowError:
        raise HandshakeError(
            f"no complete handshake with {framed.peer} within {timeout:g} s"
        ) from None
    except CodecError as exc:
        raise HandshakeError(f"bad handshake frame from {framed.peer}: {exc}") from None


# -- peer links --------------------------------------------------------------------------


class _Link:
    """What a node keeps per peer: a bounded queue of encoded frames and the
    connection (if any) its writer drains them into."""

    __slots__ = ("peer", "queue", "wake", "framed", "cancel")

    def __init__(self, peer: int) -> None:
        self.peer = peer
        self.queue: deque[bytes] = deque()
        self.wake = trio.Event()
        self.framed: FramedStream | None = None
        self.cancel: trio.CancelScope | None = None


class TcpTransport:
    """Peer links of node ``me`` over TCP (see the module docstring).

    ``addresses`` maps every node id to ``(host, port)``.  Inbound peer
    connections reach it through ``serve_peer`` (the node's listener runs the
    handshake and hands them over); ``run`` dials the peers with higher ids.
    """

    def __init__(
        self,
        *,
        me: int,
        addresses: dict[int, tuple[str, int]],
        codec: Codec,
        secret: bytes,
        queue_limit: int = 20_000,
        handshake_timeout: float = 5.0,
        tls_client: ssl.SSLContext | None = None,
        server_name: str = "",
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        seed: int | str = 0,
    ) -> None:
        self.me = me
        self.addresses = dict(addresses)
        self.codec = codec
        self.secret = secret
        self.queue_limit = queue_limit
        self.handshake_timeout = handshake_timeout
        self.tls_client = tls_client
        self.server_name = server_name
        self.log = logger if logger is not None else log
        self.peers = tuple(sorted(n for n in addresses if n != me))
        self._links = {p: _Link(p) for p in self.peers}
        self._deliver: Callable[[int, Any], None] | None = None
        self._nursery: trio.Nursery | None = None
        self._rng = random.Random(f"{seed}:tcp:{me}")
        # The last message encoded and its frame: a broadcast is encoded once.
        self._last: tuple[Any, bytes] | None = None
        #: Bytes queued for peers, by message type name.
        self.bytes_by_type: dict[str, int] = {}
        self.stats: dict[str, int] = {
            "frames_sent": 0,
            "bytes_sent": 0,
            "writes": 0,
            "frames_received": 0,
            "dropped_queue_full": 0,
            "dropped_disconnected": 0,
            "connections": 0,
            "disconnects": 0,
            "bad_frames": 0,
        }

    # -- sending (synchronous, from the driver) ---------------------------------------

    def send(self, dst: int, message: Any) -> None:
        link = self._links.get(dst)
        if link is None:
            return  # not a peer (a spare outside the cluster file): nothing to reach
        if link.framed is None:
            self.stats["dropped_disconnected"] += 1
            return
        last = self._last
        if last is not None and last[0] is message:
            frame = last[1]
        else:
            frame = self.codec.encode_frame(message)
            self._last = (message, frame)
        name = type(message).__name__
        self.bytes_by_type[name] = self.bytes_by_type.get(name, 0) + len(frame)
        queue = link.queue
        if len(queue) >= self.queue_limit:
            queue.popleft()
            self.stats["dropped_queue_full"] += 1
        queue.append(frame)
        link.wake.set()

    def unsent(self) -> bool:
        """Whether a connected peer's writer has frames it has not taken yet."""
        return any(link.queue and link.framed is not None for link in self._links.values())

    # -- running ---------------------------------------------------------------------------

    async def run(self, deliver: Callable[[int, Any], None]) -> None:
        self._deliver = deliver
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in self.peers:
                if peer > self.me:
                    nursery.start_soon(self._dial_forever, peer)
            await trio.sleep_forever()

    async def _dial_forever(self, peer: int) -> None:
        host, port = self.addresses[peer]
        delay = RECONNECT_MIN
        failures = 0
        while True:
            framed: FramedStream | None = None
            try:
                with trio.fail_after(self.handshake_timeout):
                    stream = await open_stream(
                        host, port, tls=self.tls_client, server_name=self.server_name
                    )
                framed = FramedStream(stream, self.codec.max_frame, f"node {peer}")
                await dial_handshake(
                    framed,
                    secret=self.secret,
                    role="peer",
                    me=self.me,
                    listener=peer,
                    timeout=self.handshake_timeout,
                )
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, HandshakeError) as exc:
                if framed is not None:
                    await framed.aclose()
                failures += 1
                if isinstance(exc, HandshakeError):
                    level = logging.WARNING
                else:
                    level = logging.INFO if failures == 1 else logging.DEBUG
                self.log.log(
                    level,
                    "cannot reach node %s at %s:%s: %s (retrying)",
                    peer,
                    host,
                    port,
                    _reason(exc),
                )
                await trio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            failures = 0
            delay = RECONNECT_MIN
            await self.serve_peer(peer, framed)
            await trio.sleep(RECONNECT_MIN * (0.5 + self._rng.random()))

    async def serve_peer(self, peer: int, framed: FramedStream) -> None:
        """Carry messages both ways on an authenticated connection until it fails."""
        link = self._links[peer]
        if link.cancel is not None:
            link.cancel.cancel()  # a newer connection replaces the older one
        with trio.CancelScope() as scope:
            link.cancel = scope
            link.framed = framed
            link.queue.clear()
            self.stats["connections"] += 1
            self.log.info("connected to node %s", peer)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, link, framed, nursery.cancel_scope)
                    await self._read(peer, framed)
                    nursery.cancel_scope.cancel()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.log.info("connection to node %s lost: %s", peer, _reason(exc))
            finally:
                if link.framed is framed:
                    link.framed = None
                    link.queue.clear()
                if link.cancel is scope:
                    link.cancel = None
                self.stats["disconnects"] += 1
                await framed.aclose()

    async def _read(self, peer: int, framed: FramedStream) -> None:
        decode = self.codec.decode
        deliver = self._deliver
        assert deliver is not None
        while True:
            try:
                frames = await framed.receive_frames()
                if not frames:
                    self.log.info("node %s closed the connection", peer)
                    return
                for frame in frames:
                    deliver(peer, decode(frame))
            except CodecError as exc:
                self.stats["bad_frames"] += 1
                self.log.warning("closing connection to node %s: bad frame: %s", peer, exc)
                return
            self.stats["frames_received"] += len(frames)

    async def _write(self, link: _Link, framed: FramedStream, scope: trio.CancelScope) -> None:
        try:
            while True:
                if not link.queue:
                    link.wake = trio.Event()
                    await link.wake.wait()
                frames = list(link.queue)
                link.queue.clear()
                data = b"".join(frames)
                await framed.send(data)
                self.stats["frames_sent"] += len(frames)
                self.stats["bytes_sent"] += len(data)
                self.stats["writes"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.log.info("connection to node %s lost while writing: %s", link.peer, _reason(exc))
            scope.cancel()

    def connected(self) -> list[int]:
        return [p for p, link in self._links.items() if link.framed is not None]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text or type(exc).__name__


#: The signature of a listener's per-connection handler.
Handler = Callable[[trio.abc.Stream], Awaitable[None]]
