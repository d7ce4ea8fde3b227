"""Multi-Paxos durable records.

Only acceptor state is durable (the promise, and the latest accepted value per
slot: ``protocols.paxos_common.acceptor``'s records), plus the state-machine snapshot that
replaced a truncated prefix.  What is chosen is volatile: a restarted node
relearns it from the leader's commit index (or, if it wins an election, from
its phase-1 quorum) and re-emits ``Committed`` from the slot after its
snapshot.
"""

from __future__ import annotations

import attrs

from protocols.multipaxos.configs import ConfigState
from protocols.paxos_common.acceptor import AcceptRecord, ForgetRecord, PromiseRecord

__all__ = ["AcceptRecord", "ForgetRecord", "PromiseRecord", "SnapshotRecord"]


@attrs.frozen(kw_only=True)
class SnapshotRecord:
    """A state-machine snapshot covering slots ``1 .. index`` (all chosen), and
    the configurations as of ``index`` (``None``: the initial members, no change)."""

    index: int
    data: bytes
    config: ConfigState | None = None
