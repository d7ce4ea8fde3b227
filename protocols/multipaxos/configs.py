"""Multi-Paxos configurations: membership changes through the log, alpha slots later.

Theory of operation
-------------------
Each slot is its own Paxos instance, decided by a quorum of *its*
configuration.  The configuration of slot ``t`` is a function of the chosen
log: the members named by the latest ``ChangeMembership`` request chosen in a
slot ``s`` with ``s + alpha <= t`` (Lamport's alpha window, "Paxos Made
Simple" section 3 and "Reconfiguring a State Machine"), or the initial
members if there is none.  Every replica that knows the chosen prefix below
``t - alpha`` therefore agrees on the configuration of ``t``, and a change
may add, remove or replace any number of members at once: no joint
configuration is needed, because no slot ever has two.

The rules that keep it safe live in the leader (``replication``) and the
candidate (``election``); this module only computes:

* **phase 2**: a leader proposes slot ``t`` only once every slot up to
  ``t - alpha`` is chosen (so ``config_for(t)`` is settled), and counts
  ``Accepted`` against ``config_for(t)``;
* **phase 1**: a candidate whose chosen prefix ends at ``c`` needs promises
  from a quorum of every configuration of every slot from ``c + 1`` to
  ``top + alpha``, where ``top`` is the highest slot any promise reported,
  and the configurations of slots past ``c + alpha`` are computed from the
  values its promises reported (``needed``).  By induction over the chosen
  slots, a quorum of each configuration that chose something meets the
  candidate's promises, so every chosen value is found, ``top`` reaches the
  last chosen slot, and the candidate also meets a quorum of every
  configuration a leader with a longer chosen prefix may be using (which is
  what a lease relies on).

Duplicates: a client that retries a ``ChangeMembership`` after it was
applied, possibly after another client's later change, must not change the
membership back.  A change takes effect only if its ``(client_id, seq)`` is
newer than the last change applied from that client (``seq`` grows per
client), decided in slot order like the state machine's sessions, so every
replica agrees; the state machine answers such a retry from its session.

State as of a snapshot (``state_at``, ``ConfigState``): the configuration in
force right after the snapshot's index, the changes still taking effect
(chosen within ``alpha`` slots before it), and the last change of each client.
It travels with snapshots (``SnapshotRecord``, ``Promise``, ``Learn``).

Invariants:
  _changes is strictly increasing in slot; every change's slot is <= the
  chosen prefix of the replica that noted it (changes are noted in slot order)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from consensus.commands import ChangeMembership, Request
from consensus.quorum import Majority

__all__ = ["Change", "ConfigState", "Configs", "change_of"]


@attrs.frozen(kw_only=True)
class Change:
    """A membership change chosen in ``slot`` by client ``(client_id, seq)``."""

    slot: int
    members: tuple[int, ...]
    client_id: int
    seq: int


@attrs.frozen(kw_only=True)
class ConfigState:
    """Configurations as of a snapshot at ``index`` (see the module docstring)."""

    index: int
    members: tuple[int, ...]
    changes: tuple[Change, ...] = ()
    #: (client_id, seq) of the last change applied from each client.
    clients: tuple[tuple[int, int], ...] = ()


def change_of(payload: Any) -> tuple[int, ...] | None:
    """The members a log payload asks for, if it is a ``ChangeMembership`` request."""
    if type(payload) is Request and type(payload.command) is ChangeMembership:
        return tuple(sorted(set(payload.command.members)))
    return None


class Configs:
    """The configuration of every slot above a base, from the changes chosen so far."""

    def __init__(self, members: Iterable[int], alpha: int) -> None:
        self.alpha = alpha
        #: Configuration of every slot before the first change in ``_changes`` takes effect.
        self._base = Majority(members)
        self._base_index = 0
        # Changes noted since the base, in slot order (each takes effect alpha slots on).
        self._changes: list[tuple[Change, Majority]] = []
        # client_id -> seq of the last change folded into the base.
        self._clients: dict[int, int] = {}

    # -- queries -----------------------------------------------------------------------

    @property
    def changes(self) -> list[Change]:
        return [c for c, _ in self._changes]

    def config_for(self, slot: int) -> Majority:
        """The quorum system of ``slot`` (its changes must be noted already)."""
        changes = self._changes
        if not changes:  # the usual case: one configuration for every slot
            return self._base
        alpha = self.alpha
        for change, quorum in reversed(changes):
            if change.slot + alpha <= slot:
                return quorum
        return self._base

    def window(self, commit: int) -> list[Majority]:
        """The distinct configurations of slots ``commit + 1 .. commit + alpha``:
        those a leader with chosen prefix ``commit`` may be deciding."""
        return self.between(commit + 1, commit + self.alpha)

    def between(self, lo: int, hi: int) -> list[Majority]:
        """The distinct configurations of slots ``lo .. hi``, the first one first."""
        first = self.config_for(lo)
        if not self._changes:
            return [first]
        found = [first]
        for change, quorum in self._changes:
            if lo < change.slot + self.alpha <= hi and quorum not in found:
                found.append(quorum)
        return found

    def last_change_slot(self) -> int:
        """The slot of the latest change noted (0: none since the base)."""
        return self._changes[-1][0].slot if self._changes else 0

    def is_duplicate(self, client_id: int, seq: int) -> bool:
        """A change from this client with this or a later ``seq`` was applied."""
        for change, _ in reversed(self._changes):
            if change.client_id == client_id:
                return seq <= change.seq
        last = self._clients.get(client_id)
        return last is not None and seq <= last

    # -- updates -----------------------------------------------------------------------

    def note(self, slot: int, payload: Any) -> bool:
        """``payload`` was chosen in ``slot`` (called in slot order); True if it is a
        membership change that takes effect (not a duplicate)."""
        members = change_of(payload)
        if members is None or not members:
            return False
        if self.is_duplicate(payload.client_id, payload.seq):
            return False
        assert not self._changes or self._changes[-1][0].slot < slot, "changes in slot order"
        change = Change(slot=slot, members=members, client_id=payload.client_id, seq=payload.seq)
        self._changes.append((change, Majority(members)))
        return True

    def needed(self, from_slot: int, plan: Sequence[tuple[int, Any]], top: int) -> list[Majority]:
        """Configurations a candidate must hold promises from: every slot from
        ``from_slot`` to ``top + alpha``, counting the changes in ``plan``
        (the values it would re-propose, in slot order) as chosen."""
        hypothetical = self._copy()
        for slot, payload in plan:
            if slot > hypothetical.last_change_slot():
                hypothetical.note(slot, payload)
        found = [hypothetical.config_for(from_slot)]
        for change, quorum in hypothetical._changes:
            if from_slot < change.slot + self.alpha <= top + self.alpha and quorum not in found:
                found.append(quorum)
        return found

    def compact(self, index: int) -> None:
        """Fold every change in force for all slots after ``index`` into the base."""
        alpha = self.alpha
        while self._changes and self._changes[0][0].slot + alpha <= index + 1:
            change, quorum = self._changes.pop(0)
            self._base = quorum
            self._clients[change.client_id] = change.seq
        self._base_index = max(self._base_index, index)

    def state_at(self, index: int) -> ConfigState:
        """What a snapshot covering slots ``1 .. index`` must carry."""
        copy = self._copy()
        copy._changes = [(c, q) for c, q in copy._changes if c.slot <= index]
        copy.compact(index)
        clients = dict(copy._clients)
        return ConfigState(
            index=index,
            members=tuple(sorted(copy._base.members)),
            changes=tuple(c for c, _ in copy._changes),
            clients=tuple(sorted(clients.items())),
        )

    @classmethod
    def from_state(cls, state: ConfigState, alpha: int) -> Configs:
        """Configurations as a snapshot's ``state`` gives them."""
        configs = cls(state.members, alpha)
        configs.install(state)
        return configs

    def install(self, state: ConfigState) -> None:
        """Adopt a snapshot's configurations (the log up to ``state.index`` is gone)."""
        self._base = Majority(state.members)
        self._base_index = state.index
        self._changes = [(c, Majority(c.members)) for c in state.changes]
        self._clients = dict(state.clients)

    def _copy(self) -> Configs:
        copy = Configs(self._base.members, self.alpha)
        copy._base = self._base
        copy._base_index = self._base_index
        copy._changes = list(self._changes)
        copy._clients = dict(self._clients)
        return copy
