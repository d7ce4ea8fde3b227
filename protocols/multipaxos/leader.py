"""The proposer side of Multi-Paxos: one phase 1 for all slots, then phase 2 per slot.

Theory of operation
-------------------
A node that wants to lead picks a ballot above every ballot it has seen and
runs phase 1 *once for all slots* from its first unchosen slot onward
("Paxos Made Simple" section 3; the "scout" of "Paxos Made Moderately
Complex").  ``Phase1`` collects the promises.  Each promise carries the
acceptor's accepted values (pvalues) above ``from_slot``; ``Phase1`` keeps,
per slot, the one with the highest ballot.  Once a majority promised,
``Phase1.plan`` says what the new leader must propose before anything else:

* in every slot where some promiser accepted a value, the highest-ballot
  value (it may have been chosen; Paxos' rule P2c makes re-proposing it safe);
* in every hole below the highest such slot, ``Noop`` (nothing can have been
  chosen there, or a promiser in the majority would have reported it).

Unlike Raft, the winner need not have the most up-to-date log: *any* node can
win phase 1, and it catches up right here, from the promises.  If a promiser
already truncated slots at or above ``from_slot`` into a snapshot, its
promise carries that snapshot, and the leader installs the newest one before
planning (those slots are chosen, and the snapshot is all that is left).

After phase 1, every slot needs only phase 2: ``Accept`` to all, chosen on a
majority of ``Accepted`` (one round trip).  ``InFlight`` tracks one proposed
slot until then, with the quorum system of its slot's configuration.

Before phase 1, with the disruption guard, a would-be leader asks whether a
quorum would promise at all (``PrePhase``, the counterpart of Raft's
PreVote): nothing is promised or persisted, so a node that cannot hear the
others never raises anyone's ballot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from consensus.commands import Noop
from consensus.quorum import Majority
from protocols.paxos_common.acceptor import PValue
from protocols.paxos_common.ballot import Ballot

__all__ = ["InFlight", "Phase1", "PrePhase", "runs"]


@attrs.define
class Phase1:
    """Promises gathered for ``ballot``, merged per slot.

    Invariant: ``best[s]`` is the highest-ballot pvalue for slot ``s`` among
    the promises received, and ``best[s].slot == s >= from_slot``.
    """

    ballot: Ballot
    from_slot: int
    promised: set[int] = attrs.Factory(set)
    best: dict[int, PValue] = attrs.Factory(dict)
    snapshot_index: int = 0
    snapshot_data: bytes = b""
    snapshot_config: Any = None
    #: When to resend ``Prepare`` to the acceptors that have not answered.
    resend_at: float = 0.0
    #: Every node sent the ``Prepare`` (the members of each configuration needed).
    asked: set[int] = attrs.Factory(set)

    def add(
        self,
        node: int,
        accepted: Iterable[PValue],
        snapshot_index: int = 0,
        snapshot_data: bytes = b"",
        snapshot_config: Any = None,
    ) -> None:
        """Record ``node``'s promise (duplicates are harmless)."""
        self.promised.add(node)
        best = self.best
        for pv in accepted:
            if pv.slot < self.from_slot:
                continue
            held = best.get(pv.slot)
            if held is None or pv.ballot > held.ballot:
                best[pv.slot] = pv
        if snapshot_index > self.snapshot_index:
            self.snapshot_index = snapshot_index
            self.snapshot_data = snapshot_data
            self.snapshot_config = snapshot_config

    def plan(self, is_chosen: Any) -> list[tuple[int, Any]]:
        """``(slot, payload)`` the new leader must propose, in slot order.

        ``is_chosen(slot)`` tells which slots the leader already knows are
        chosen (including those covered by a snapshot); those need no phase 2.
        """
        top = max(self.best, default=0)
        plan: list[tuple[int, Any]] = []
        for slot in range(self.from_slot, top + 1):
            if is_chosen(slot):
                continue
            pv = self.best.get(slot)
            plan.append((slot, pv.payload if pv is not None else Noop()))
        return plan

    @property
    def max_slot(self) -> int:
        return max(self.best, default=0)


@attrs.define
class InFlight:
    """A slot the leader proposed at its ballot and that is not yet known chosen;
    ``quorum``: its configuration's quorum system."""

    payload: Any
    quorum: Majority
    acks: set[int] = attrs.Factory(set)
    sent_at: float = 0.0


@attrs.define
class PrePhase:
    """A would-be leader's pre-phase: the nodes that would promise ``ballot``."""

    ballot: Ballot
    granted: set[int] = attrs.Factory(set)


def runs(slots: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Split ascending slots into maximal consecutive runs ``(first, count)``."""
    first = last = None
    for slot in slots:
        if first is None:
            first = last = slot
        elif slot == last + 1:  # type: ignore[operator]
            last = slot
        else:
            yield first, last - first + 1  # type: ignore[operator]
            first = last = slot
    if first is not None:
        yield first, last - first + 1  # type: ignore[operator]
