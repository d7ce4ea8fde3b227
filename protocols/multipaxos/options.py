"""Multi-Paxos tuning knobs; every default is usable as it stands."""

from __future__ import annotations

import attrs

__all__ = ["READ_MODES", "MultiPaxosOptions"]

#: How a leader serves a ``Get``: through the log, after a confirmation round, or
#: from its lease (the names Raft uses).
READ_MODES = ("log", "read_index", "lease")


@attrs.frozen(kw_only=True)
class MultiPaxosOptions:
    """Timers are in seconds of the host's clock (virtual time in the simulator).

    ``heartbeat_interval``: an idle leader's heartbeat period (carries the
    commit index).  ``election_timeout_min``/``_max``: a follower that hears no
    leader for a random time in this range runs phase 1 (drawn from
    ``ctx.rng``); a candidate that has not won within such a time starts over
    with a higher ballot.  ``retransmit_timeout``: a leader resends ``Accept``
    for a slot not chosen after this long, and a candidate its ``Prepare``.
    ``max_in_flight``: client slots proposed but not yet chosen (pipelining
    depth); requests beyond it wait and are batched.  ``max_batch``: requests
    per slot when a backlog is flushed (1 disables batching).
    ``max_slots_per_message``: slots per ``Accept``/``Learn`` message.
    ``check_quorum``: a leader that hears from no majority for an election
    timeout steps down (so a partitioned leader stops taking requests).
    ``bootstrap``: on a fresh start the lowest node id runs phase 1 at once
    instead of waiting for an election timeout.

    ``disruption_guard`` (the counterpart of Raft's PreVote and CheckQuorum):
    a node that heard from a leader within ``election_timeout_min``, and a
    leader, refuse to promise a new ballot; a node that would run phase 1
    first asks (``PrePrepare``, which changes nothing) and runs it only if a
    quorum would promise.  So a node that cannot hear the leader never
    deposes a leader that a majority still follows.  Off: for comparison.

    ``read_mode``: ``"log"`` (a ``Get`` is proposed like a write),
    ``"read_index"`` (the leader serves it at its chosen prefix once a quorum
    answered a heartbeat round sent after it arrived) or ``"lease"`` (served
    at once while the leader holds a lease: a quorum of every configuration
    it may be deciding answered a heartbeat round sent less than
    ``lease_duration`` ago; otherwise as ``read_index``).
    ``max_clock_drift``: the bound on any node's clock rate error the lease
    assumes (0.01: clocks run within 1% of real time); the lease lasts
    ``election_timeout_min * (1 - d) / (1 + d)``.  A lease needs the guard.

    ``alpha``: a membership change chosen in slot ``s`` takes effect at slot
    ``s + alpha``; a leader proposes slot ``t`` only once every slot up to
    ``t - alpha`` is chosen, so ``alpha`` also bounds its pipeline.
    """

    heartbeat_interval: float = 0.05
    election_timeout_min: float = 0.2
    election_timeout_max: float = 0.4
    retransmit_timeout: float = 0.1
    max_in_flight: int = 64
    max_batch: int = 16
    max_slots_per_message: int = 64
    check_quorum: bool = True
    bootstrap: bool = True
    disruption_guard: bool = True
    read_mode: str = "log"
    max_clock_drift: float = 0.01
    alpha: int = 64

    def __attrs_post_init__(self) -> None:
        if not 0 < self.election_timeout_min <= self.election_timeout_max:
            raise ValueError("need 0 < election_timeout_min <= election_timeout_max")
        if self.heartbeat_interval <= 0 or self.retransmit_timeout <= 0:
            raise ValueError("heartbeat_interval and retransmit_timeout must be positive")
        if min(self.max_in_flight, self.max_batch, self.max_slots_per_message) < 1:
            raise ValueError("max_in_flight, max_batch and max_slots_per_message must be >= 1")
        if self.read_mode not in READ_MODES:
            raise ValueError(f"read_mode: {self.read_mode!r} is not one of {', '.join(READ_MODES)}")
        if not 0 <= self.max_clock_drift < 1:
            raise ValueError(f"max_clock_drift must be in [0, 1), got {self.max_clock_drift}")
        if self.alpha < 1:
            raise ValueError(f"alpha must be >= 1, got {self.alpha}")
        if self.read_mode == "lease":
            if not self.disruption_guard:
                raise ValueError(
                    "read_mode = 'lease' needs disruption_guard = true: a lease holds only"
                    " while the nodes that granted it refuse to promise other ballots"
                )
            if self.lease_duration <= self.heartbeat_interval:
                raise ValueError(
                    f"read_mode = 'lease': the lease ({self.lease_duration:.4f} s, from"
                    f" election_timeout_min {self.election_timeout_min} and max_clock_drift"
                    f" {self.max_clock_drift}) must outlast heartbeat_interval"
                    f" ({self.heartbeat_interval}) to be renewed"
                )

    @property
    def lease_duration(self) -> float:
        """How long after sending a heartbeat round its quorum's answers back a lease.

        The nodes that answered refuse other ballots for ``election_timeout_min``
        of their own clocks after hearing it, at least ``eto_min / (1 + d)`` real
        seconds; the leader's ``lease`` on its own clock is at most
        ``lease / (1 - d)`` real seconds; so ``lease = eto_min (1 - d) / (1 + d)``.
        """
        d = self.max_clock_drift
        return self.election_timeout_min * (1 - d) / (1 + d)
