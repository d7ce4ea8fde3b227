"""Single-decree Paxos wire messages, one instance per log ``slot``.

Every message carries ``done``: the highest slot its sender has applied (the
"Done" piggyback of the classic Paxos lab).  A node frees an instance once
every node's ``done`` has passed it.  ``Done`` alone carries it when there is
nothing else to send.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocols.paxos_common.acceptor import PValue
from protocols.paxos_common.ballot import Ballot

__all__ = ["Accept", "Accepted", "Decided", "Done", "Nack", "Prepare", "Promise"]


@attrs.frozen(kw_only=True)
class Prepare:
    """Phase 1a for ``slot``."""

    slot: int
    ballot: Ballot
    done: int


@attrs.frozen(kw_only=True)
class Promise:
    """Phase 1b: promised ``ballot`` in ``slot``; ``accepted`` is the acceptor's pvalue."""

    slot: int
    ballot: Ballot
    accepted: PValue | None
    done: int


@attrs.frozen(kw_only=True)
class Nack:
    """``ballot`` was refused in ``slot``: the acceptor promised ``promised``.

    ``forgotten``: the slot is below the acceptor's floor (decided and applied
    everywhere); the request is stale.
    """

    slot: int
    ballot: Ballot
    promised: Ballot
    forgotten: bool
    done: int


@attrs.frozen(kw_only=True)
class Accept:
    """Phase 2a: accept ``payload`` in ``slot`` at ``ballot``."""

    slot: int
    ballot: Ballot
    payload: Any
    done: int


@attrs.frozen(kw_only=True)
class Accepted:
    """Phase 2b: accepted ``ballot``'s value in ``slot``."""

    slot: int
    ballot: Ballot
    done: int


@attrs.frozen(kw_only=True)
class Decided:
    """``payload`` is chosen in ``slot`` (sent by the proposer that saw a majority)."""

    slot: int
    payload: Any
    done: int


@attrs.frozen(kw_only=True)
class Done:
    """The sender has applied every slot up to ``done``."""

    done: int
