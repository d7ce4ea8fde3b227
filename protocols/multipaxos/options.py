"""Multi-Paxos tuning knobs; every default is usable as it stands."""

from __future__ import annotations

import attrs

__all__ = ["MultiPaxosOptions"]


@attrs.frozen(kw_only=True)
class MultiPaxosOptions:
    """Timers are in seconds of the host's clock (virtual time in the simulator).

    ``heartbeat_interval``: an idle leader's heartbeat period (carries the
    commit index).  ``election_timeout_min``/``_max``: a follower that hears no
    leader for a random time in this range runs phase 1 (drawn from
    ``ctx.rng``).  ``retransmit_timeout``: a leader resends ``Accept`` for a
    slot not chosen after this long, and a candidate its ``Prepare``.
    ``max_in_flight``: client slots proposed but not yet chosen (pipelining
    depth); requests beyond it wait and are batched.  ``max_batch``: requests
    per slot when a backlog is flushed (1 disables batching).
    ``max_slots_per_message``: slots per ``Accept``/``Learn`` message.
    ``check_quorum``: a leader that hears from no majority for an election
    timeout steps down (so a partitioned leader stops taking requests).
    ``bootstrap``: on a fresh start the lowest node id runs phase 1 at once
    instead of waiting for an election timeout.
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

    def __attrs_post_init__(self) -> None:
        if not 0 < self.election_timeout_min <= self.election_timeout_max:
            raise ValueError("need 0 < election_timeout_min <= election_timeout_max")
        if self.heartbeat_interval <= 0 or self.retransmit_timeout <= 0:
            raise ValueError("heartbeat_interval and retransmit_timeout must be positive")
        if min(self.max_in_flight, self.max_batch, self.max_slots_per_message) < 1:
            raise ValueError("max_in_flight, max_batch and max_slots_per_message must be >= 1")
