"""What travels on a real cluster's TCP connections besides protocol messages.

Theory of operation
-------------------
Every connection starts with a handshake, then carries length-prefixed CBOR
frames (``consensus.codec``: a 4-byte big-endian length, then one encoded
value).  Two codecs are in play:

* the *runtime codec* (``runtime_codec()``): the handshake, client requests
  and replies, status queries; the same for every protocol;
* the *protocol codec* (``Codec.for_protocol(spec)``): a plugin's own
  messages, on peer links after the handshake.

Handshake (the listening side speaks first)::

    listener                                  connecting side
       │ ── Hello(version, nonce_s) ─────────────────► │
       │ ◄── Login(role, node, nonce_c, proof_c) ───── │   proof_c = HMAC(secret, login | ...)
       │ ── Welcome(node, proof_s) ──────────────────► │   proof_s = HMAC(secret, welcome | ...)
       │          peer messages / client frames         │

Both proofs are HMAC-SHA256 over both nonces, the role and the node ids, so
neither side ever sends the secret, a recorded proof is useless for another
connection, and each side knows the other holds the cluster secret (checked
with ``hmac.compare_digest``).  ``Hello.version`` is this module's
``WIRE_VERSION``; a listener that sees a ``Login`` of another version, a
wrong proof, an unknown role or a frame that does not decode closes the
connection with one logged reason (and, where it can, a ``Refused`` frame so
the other side can say why).

Client frames: ``Submit`` carries one or more ``Request``s (a pipelining
client sends many per frame); the node answers each with a ``Reply`` inside
``Replies`` frames, in whatever order they complete.  ``StatusQuery`` asks
for the node's role and progress (``Status``); ``LocalRead`` for values in
that node's own state machine (``LocalValues``; diagnostics, not
linearizable).  A node answers control queries in the order they came.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import attrs

from consensus.codec import Codec
from consensus.commands import Request

__all__ = [
    "ROLES",
    "WIRE_VERSION",
    "Hello",
    "LocalRead",
    "LocalValues",
    "Login",
    "Refused",
    "Reply",
    "Replies",
    "RUNTIME_TYPES",
    "Status",
    "StatusQuery",
    "Submit",
    "Welcome",
    "login_proof",
    "runtime_codec",
    "welcome_proof",
]

#: Version of the handshake and client protocol; a peer of another version is refused.
WIRE_VERSION = 2  # 2: the codec writes registered values flat (consensus.codec)
ROLES = ("peer", "client")
NONCE_BYTES = 16


@attrs.frozen(kw_only=True)
class Hello:
    """The listener's first frame: its wire version and a fresh challenge."""

    version: int
    nonce: bytes


@attrs.frozen(kw_only=True)
class Login:
    """The connecting side's answer: who it is (``role``; a peer's ``node`` id,
    ``-1`` for a client), its own challenge, and its proof of the secret."""

    version: int
    role: str
    node: int
    nonce: bytes
    proof: bytes


@attrs.frozen(kw_only=True)
class Welcome:
    """The listener's proof of the secret; after it, the connection is open."""

    node: int
    proof: bytes


@attrs.frozen(kw_only=True)
class Refused:
    """Why the listener is about to close the connection (best effort)."""

    reason: str


@attrs.frozen(kw_only=True)
class Submit:
    """Client requests for this node, in the order the client issued them."""

    requests: tuple[Request, ...]


@attrs.frozen(kw_only=True)
class Reply:
    """The answer to request ``(client_id, seq)``: ``ok`` with ``result``, or a
    rejection (``reason``; retry, at ``leader`` when known)."""

    client_id: int
    seq: int
    ok: bool
    result: Any = None
    reason: str = ""
    leader: int | None = None


@attrs.frozen(kw_only=True)
class Replies:
    replies: tuple[Reply, ...]


@attrs.frozen(kw_only=True)
class StatusQuery:
    """Ask a node for its ``Status``."""


@attrs.frozen(kw_only=True)
class Status:
    """A node's view of itself: ``info`` is ``Replica.status()`` plus runtime
    figures (applied index, queue lengths, uptime)."""

    node: int
    info: dict[str, Any]


@attrs.frozen(kw_only=True)
class LocalRead:
    """Diagnostics: ask a node for the values of ``keys`` in *its own* state
    machine, as applied so far.  Not linearizable (a follower may lag); tests
    and operators use it to check what each node holds."""

    keys: tuple[str, ...]


@attrs.frozen(kw_only=True)
class LocalValues:
    """A node's answer to ``LocalRead``: its applied index and the values."""

    node: int
    applied: int
    values: tuple[str | None, ...]


#: Append only: the order fixes the wire tags.
RUNTIME_TYPES: tuple[type, ...] = (
    Hello,
    Login,
    Welcome,
    Refused,
    Submit,
    Reply,
    Replies,
    StatusQuery,
    Status,
    LocalRead,
    LocalValues,
)

_codecs: dict[int, Codec] = {}


def runtime_codec(max_frame: int | None = None) -> Codec:
    """The codec of handshakes and client frames (one per ``max_frame``)."""
    key = max_frame or 0
    codec = _codecs.get(key)
    if codec is None:
        codec = (
            Codec(RUNTIME_TYPES) if max_frame is None else Codec(RUNTIME_TYPES, max_frame=max_frame)
        )
        _codecs[key] = codec
    return codec


def _mac(secret: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(4, "big"))  # unambiguous: no two splits look alike
        mac.update(part)
    return mac.digest()


def login_proof(
    secret: bytes, listener_nonce: bytes, nonce: bytes, role: str, node: int, listener: int
) -> bytes:
    """What a connecting ``role``/``node`` sends to prove it holds ``secret``."""
    return _mac(
        secret,
        b"login",
        listener_nonce,
        nonce,
        role.encode(),
        str(node).encode(),
        str(listener).encode(),
    )


def welcome_proof(secret: bytes, listener_nonce: bytes, nonce: bytes, listener: int) -> bytes:
    """What the listening node ``listener`` sends back to prove it holds ``secret``."""
    return _mac(secret, b"welcome", nonce, listener_nonce, str(listener).encode())
