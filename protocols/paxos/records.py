"""Single-decree Paxos durable records.

Acceptor state (``protocols.paxos_common.acceptor``'s promise, accept and forget records)
plus the learner's decisions: a node persists each value it learns was chosen,
because once every node reports a slot done the acceptors forget it, and a
restarted node could no longer relearn it from them.  A state-machine
snapshot replaces the decisions it covers when the host compacts.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocols.paxos_common.acceptor import AcceptRecord, ForgetRecord, PromiseRecord

__all__ = ["AcceptRecord", "DecisionRecord", "ForgetRecord", "PromiseRecord", "SnapshotRecord"]


@attrs.frozen(kw_only=True)
class DecisionRecord:
    """``payload`` was chosen in ``slot``."""

    slot: int
    payload: Any


@attrs.frozen(kw_only=True)
class SnapshotRecord:
    """A state-machine snapshot covering slots ``1 .. index``."""

    index: int
    data: bytes
