"""The Paxos acceptor: promises and accepted values per log slot, and their records.

Theory of operation
-------------------
This is the acceptor of "Paxos Made Simple" (section 2.2, phases 1b and 2b),
kept per log slot so both log plugins share it:

* ``multipaxos`` makes one promise for every slot at once: a leader's
  ``Prepare(ballot, from_slot)`` is answered by ``prepare_from``, and the
  promise covers all slots ("Paxos Made Moderately Complex", the acceptor's
  single ``ballot_num``).  Build it with ``Acceptor(per_slot=False)``.
* ``paxos`` runs an independent single-decree instance per slot, so each slot
  has its own promise: ``prepare(ballot, slot)``.  ``Acceptor(per_slot=True)``.

Each call returns a ``Vote``: whether the request was granted, the acceptor's
promise for the slot afterwards (what a ``Nack`` reports), the accepted values
a promise must carry, and the durable ``records`` that must be persisted
*before* the reply leaves.  The caller puts ``records`` in ``Outputs.persist``
and the reply in ``Outputs.messages`` of the same ``Outputs``; the host's
persist-then-send order does the rest.  Replaying the records in order through
``replay`` rebuilds the same acceptor after a crash.

Rules (Lamport's P1a and P2b, per slot):

* promise ``b`` only if ``b >= promised(slot)`` (equal: a retransmission,
  answered again without a new record);
* accept ``(b, v)`` only if ``b >= promised(slot)``; accepting raises the
  promise to ``b``, so the acceptor never later accepts a lower ballot;
* a promise reports, per slot, the accepted value with the highest ballot
  (an acceptor keeps only its latest acceptance, which is the highest).

Forgetting: ``forget_below(slot)`` drops every slot below ``slot`` (the
``floor``).  The caller may only do so when those slots are decided and no
proposer can still need them (single-decree Paxos: every node applied them;
Multi-Paxos: a state-machine snapshot covers them).  Requests for slots below
the floor are refused with ``forgotten=True`` rather than answered from empty
state, which would let a late proposer choose a second value.

Invariants:
  for every accepted slot s: accepted[s].ballot <= promised(s)
  no state is held for slots < floor
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from protocols.paxos_common.ballot import ZERO, Ballot

__all__ = [
    "AcceptRecord",
    "Acceptor",
    "ForgetRecord",
    "NOT_ACCEPTED",
    "PValue",
    "PromiseRecord",
    "Vote",
]


@attrs.frozen(kw_only=True)
class PValue:
    """A value accepted in ``slot`` at ``ballot`` (a "pvalue" in van Renesse's paper)."""

    slot: int
    ballot: Ballot
    payload: Any


# -- durable records -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PromiseRecord:
    """The acceptor promised ``ballot`` for ``slot`` (``None``: for every slot)."""

    ballot: Ballot
    slot: int | None = None


@attrs.frozen(kw_only=True)
class AcceptRecord:
    """The acceptor accepted ``payload`` in ``slot`` at ``ballot``."""

    slot: int
    ballot: Ballot
    payload: Any


@attrs.frozen(kw_only=True)
class ForgetRecord:
    """Every slot below ``below`` was dropped; requests for them are refused."""

    below: int


#: Every record type this module writes, in a stable order (for codec tables).
RECORD_TYPES: tuple[type, ...] = (PromiseRecord, AcceptRecord, ForgetRecord)


def _pvalue(record: AcceptRecord) -> PValue:
    return PValue(slot=record.slot, ballot=record.ballot, payload=record.payload)


class _NotAccepted:
    def __repr__(self) -> str:
        return "NOT_ACCEPTED"


#: What ``Acceptor.value_at`` returns when the slot holds no value at that ballot
#: (a sentinel: ``None`` is a payload like any other).
NOT_ACCEPTED: Any = _NotAccepted()


@attrs.frozen(kw_only=True)
class Vote:
    """The outcome of one prepare or accept request.

    ``promised`` is the acceptor's promise for the slot after handling (on a
    refusal, the higher ballot that beat the request).  ``records`` must be
    persisted before the reply is sent.
    """

    ok: bool
    promised: Ballot
    accepted: tuple[PValue, ...] = ()
    records: tuple[Any, ...] = ()
    #: The request named slots below the floor (see ``Acceptor.forget_below``).
    forgotten: bool = False


class Acceptor:
    """Per-slot acceptor state with one shared or one per-slot promise."""

    def __init__(self, *, per_slot: bool) -> None:
        self.per_slot = per_slot
        # Multi-Paxos' single promise, covering every slot (ZERO when per_slot).
        self.promised_all: Ballot = ZERO
        # Single-decree promises, one per slot (empty unless per_slot).
        self._promised: dict[int, Ballot] = {}
        # The record of each slot's latest acceptance: it is what gets persisted, so
        # keeping it spares a second object per accept (``accepted`` converts).
        # Invariant: _accepted[s].ballot <= promised(s) and _accepted[s].slot == s.
        self._accepted: dict[int, AcceptRecord] = {}
        # Invariant: no key of _promised or _accepted is below floor.
        self.floor = 1

    # -- queries -----------------------------------------------------------------------

    def promised(self, slot: int) -> Ballot:
        """The highest ballot promised (or accepted) for ``slot``."""
        own = self._promised.get(slot, ZERO)
        return own if own > self.promised_all else self.promised_all

    def accepted(self, slot: int) -> PValue | None:
        record = self._accepted.get(slot)
        return None if record is None else _pvalue(record)

    def accepted_from(self, slot: int) -> tuple[PValue, ...]:
        """Accepted values in slots ``>= slot``, in slot order."""
        return tuple(_pvalue(self._accepted[s]) for s in sorted(self._accepted) if s >= slot)

    def value_at(self, slot: int, ballot: Ballot) -> Any:
        """The payload accepted in ``slot`` at exactly ``ballot``, else ``NOT_ACCEPTED``.

        A proposer sends one value per slot per ballot, so a leader saying that
        ``slot`` is chosen at ``ballot`` names this very value (Multi-Paxos
        learns commits this way, once per slot on every follower).
        """
        record = self._accepted.get(slot)
        # ``is`` first: usually the very Ballot object of the leader's Accept.
        if record is not None and (record.ballot is ballot or record.ballot == ballot):
            return record.payload
        return NOT_ACCEPTED

    @property
    def max_slot(self) -> int:
        """The highest slot this acceptor holds any state for (0 if none)."""
        return max(max(self._accepted, default=0), max(self._promised, default=0))

    def slot_count(self) -> int:
        """How many slots this acceptor holds state for (memory accounting)."""
        return len(self._accepted.keys() | self._promised.keys())

    # -- phase 1 -----------------------------------------------------------------------

    def prepare(self, ballot: Ballot, slot: int) -> Vote:
        """Phase 1b for one slot (single-decree Paxos)."""
        assert self.per_slot, "prepare() is for per-slot acceptors; use prepare_from()"
        if slot < self.floor:
            return Vote(ok=False, promised=ZERO, forgotten=True)
        current = self.promised(slot)
        if ballot < current:
            return Vote(ok=False, promised=current)
        records: tuple[Any, ...] = ()
        if ballot > current:
            self._promised[slot] = ballot
            records = (PromiseRecord(ballot=ballot, slot=slot),)
        record = self._accepted.get(slot)
        accepted = (_pvalue(record),) if record is not None else ()
        return Vote(ok=True, promised=ballot, accepted=accepted, records=records)

    def prepare_from(self, ballot: Ballot, from_slot: int) -> Vote:
        """Phase 1b for every slot at once (Multi-Paxos).

        The promise covers all slots; the reply carries the accepted values in
        slots ``>= from_slot``.  ``forgotten`` is set when ``from_slot`` lies
        below the floor: the forgotten slots' values are then *not* reported
        and the caller must supply what replaced them (a snapshot).
        """
        assert not self.per_slot, "prepare_from() is for shared-promise acceptors"
        if ballot < self.promised_all:
            return Vote(ok=False, promised=self.promised_all)
        records: tuple[Any, ...] = ()
        if ballot > self.promised_all:
            self.promised_all = ballot
            records = (PromiseRecord(ballot=ballot, slot=None),)
        return Vote(
            ok=True,
            promised=ballot,
            accepted=self.accepted_from(max(from_slot, self.floor)),
            records=records,
            forgotten=from_slot < self.floor,
        )

    # -- phase 2 -----------------------------------------------------------------------

    def accept(self, ballot: Ballot, slot: int, payload: Any) -> Vote:
        """Phase 2b: accept ``payload`` in ``slot`` unless a higher ballot was promised."""
        if slot < self.floor:
            return Vote(ok=False, promised=ZERO, forgotten=True)
        # The hot path of both plugins (every slot, every node): with no per-slot
        # promises, as always in Multi-Paxos, promised(slot) is the shared promise.
        # And in the steady state the ballot is the very object promised: an
        # identity test spares the (Python-level) ballot comparisons.
        current = self.promised(slot) if self._promised else self.promised_all
        same = ballot is current
        if not same and ballot < current:
            return Vote(ok=False, promised=current)
        previous = self._accepted.get(slot)
        if previous is not None and previous.ballot == ballot:
            # A retransmission: a proposer sends one value per slot per ballot.
            return Vote(ok=True, promised=ballot)
        if self.per_slot or (not same and ballot > current):  # else the promise covers it
            self._raise_promise(ballot, slot)
        record = self._accepted[slot] = AcceptRecord(slot=slot, ballot=ballot, payload=payload)
        return Vote(ok=True, promised=ballot, records=(record,))

    def _raise_promise(self, ballot: Ballot, slot: int) -> None:
        # Accepting b is also a promise not to accept anything below b; the
        # AcceptRecord implies it, so replay raises the promise the same way.
        if self.per_slot:
            if ballot > self._promised.get(slot, ZERO):
                self._promised[slot] = ballot
        elif ballot > self.promised_all:
            self.promised_all = ballot

    # -- forgetting and recovery ---------------------------------------------------------

    def forget_below(self, slot: int) -> tuple[Any, ...]:
        """Drop all state for slots ``< slot``; returns the record to persist."""
        if slot <= self.floor:
            return ()
        self._drop_below(slot)
        return (ForgetRecord(below=slot),)

    def _drop_below(self, slot: int) -> None:
        self.floor = max(self.floor, slot)
        for table in (self._accepted, self._promised):
            for s in [s for s in table if s < self.floor]:
                del table[s]

    def replay(self, record: Any) -> bool:
        """Apply one recovered record; ``False`` if it is not an acceptor record."""
        if isinstance(record, PromiseRecord):
            if record.slot is None:
                self.promised_all = max(self.promised_all, record.ballot)
            elif record.slot >= self.floor:
                self._promised[record.slot] = max(
                    self._promised.get(record.slot, ZERO), record.ballot
                )
        elif isinstance(record, AcceptRecord):
            if record.slot >= self.floor:
                self._raise_promise(record.ballot, record.slot)
                self._accepted[record.slot] = record
        elif isinstance(record, ForgetRecord):
            self._drop_below(record.below)
        else:
            return False
        return True

    def state_records(self) -> list[Any]:
        """Records that rebuild the current state from nothing (for compaction)."""
        out: list[Any] = []
        if self.floor > 1:
            out.append(ForgetRecord(below=self.floor))
        if self.promised_all > ZERO:
            out.append(PromiseRecord(ballot=self.promised_all, slot=None))
        for slot in sorted(self._promised):
            out.append(PromiseRecord(ballot=self._promised[slot], slot=slot))
        out.extend(self._accepted[slot] for slot in sorted(self._accepted))
        return out

    @classmethod
    def recover(cls, records: Iterable[Any], *, per_slot: bool) -> Acceptor:
        """An acceptor rebuilt from records (non-acceptor records are skipped)."""
        acceptor = cls(per_slot=per_slot)
        for record in records:
            acceptor.replay(record)
        return acceptor
