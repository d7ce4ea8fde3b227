"""Multi-Paxos wire messages, named as in the papers (see README.md for the flow).

Slots are numbered from 1.  A message naming ``slot`` and a tuple of
``payloads`` covers the consecutive slots ``slot .. slot + len(payloads) - 1``
(several slots per message: the leader's pipelined or re-proposed backlog).
``commit_index`` is the sender's *chosen prefix*: every slot up to it is
known chosen (piggybacked so followers learn decisions without extra
messages).  A snapshot travels with the configurations as of its index
(``ConfigState``, see ``configs``).  ``round`` numbers a leader's heartbeat
rounds: an answer names the round it answers, which is how a leader knows
when the evidence behind a lease or a confirmed read was sent.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocols.multipaxos.configs import ConfigState
from protocols.paxos_common.acceptor import PValue
from protocols.paxos_common.ballot import Ballot

__all__ = [
    "Accept",
    "Accepted",
    "CatchUp",
    "Heartbeat",
    "HeartbeatAck",
    "Learn",
    "Nack",
    "PrePrepare",
    "PrePromise",
    "Prepare",
    "Promise",
]


@attrs.frozen(kw_only=True)
class Prepare:
    """Phase 1a: promise ``ballot`` for every slot; report values from ``from_slot`` on."""

    ballot: Ballot
    from_slot: int


@attrs.frozen(kw_only=True)
class Promise:
    """Phase 1b: promised ``ballot``; ``accepted`` holds the acceptor's pvalues >= from_slot.

    When the acceptor already truncated slots at or above ``from_slot`` into a
    state-machine snapshot, the snapshot rides along (``snapshot_index`` > 0):
    those slots are chosen and this is the only record of them left.
    """

    ballot: Ballot
    from_slot: int
    accepted: tuple[PValue, ...]
    snapshot_index: int = 0
    snapshot_data: bytes = b""
    snapshot_config: ConfigState | None = None


@attrs.frozen(kw_only=True)
class Nack:
    """A Prepare or Accept at ``ballot`` was refused: the acceptor promised ``promised``."""

    ballot: Ballot
    promised: Ballot


@attrs.frozen(kw_only=True)
class Accept:
    """Phase 2a: accept ``payloads`` in slots ``slot ..`` at ``ballot``."""

    ballot: Ballot
    slot: int
    payloads: tuple[Any, ...]
    commit_index: int


@attrs.frozen(kw_only=True)
class Accepted:
    """Phase 2b: accepted slots ``slot .. slot + count - 1`` at ``ballot``."""

    ballot: Ballot
    slot: int
    count: int


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A leader's liveness signal (round ``round`` of its ballot), carrying its chosen prefix."""

    ballot: Ballot
    commit_index: int
    round: int = 0


@attrs.frozen(kw_only=True)
class HeartbeatAck:
    """A follower still follows ``ballot``: it heard heartbeat ``round`` (the
    leader's check-quorum, lease and read-confirmation evidence)."""

    ballot: Ballot
    round: int = 0


@attrs.frozen(kw_only=True)
class CatchUp:
    """A follower asks the leader for the chosen values from ``from_slot`` on."""

    ballot: Ballot
    from_slot: int


@attrs.frozen(kw_only=True)
class Learn:
    """Chosen values for slots ``slot ..``; or, with ``snapshot_index``, a snapshot first."""

    ballot: Ballot
    slot: int
    payloads: tuple[Any, ...]
    commit_index: int
    snapshot_index: int = 0
    snapshot_data: bytes = b""
    snapshot_config: ConfigState | None = None


@attrs.frozen(kw_only=True)
class PrePrepare:
    """The disruption guard's pre-phase: would you promise ``ballot``?  Changes nothing."""

    ballot: Ballot
    commit_index: int


@attrs.frozen(kw_only=True)
class PrePromise:
    """The answer to a ``PrePrepare``: ``granted`` when the sender heard no leader for
    ``election_timeout_min``, leads nothing, and would promise ``ballot``."""

    ballot: Ballot
    granted: bool
    commit_index: int
