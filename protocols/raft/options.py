"""Raft's tunables, validated at construction.

Times are in seconds of the host's clock (virtual in the simulator).  The
defaults follow the paper's suggestion (section 9.3): a heartbeat well below
the election timeout, and a randomized election timeout spread over a range
about as wide as its minimum.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["RaftOptions"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class RaftOptions:
    """Options for the ``raft`` protocol plugin.

    ``election_timeout_min``/``_max``: a follower that hears from no leader
    for a timeout drawn uniformly from ``[min, max)`` starts an election.
    ``heartbeat_interval``: how often a leader sends (empty) AppendEntries.
    ``max_entries_per_message``: batching limit of one AppendEntries.
    ``max_inflight``: unacknowledged AppendEntries per follower (pipelining).
    ``prevote``: run a PreVote round before each election (thesis 9.6).
    ``check_quorum``: a leader that has not heard from a quorum for
    ``election_timeout_max`` steps down, and a node that heard from a leader
    within ``election_timeout_min`` refuses (pre-)votes (thesis 6.2, 4.2.3).
    ``read_index``: serve linearizable reads with ReadIndex (thesis 6.4), a
    heartbeat round instead of a log entry; off: reads go through the log.
    """

    election_timeout_min: float = attrs.field(default=0.15, validator=_positive)
    election_timeout_max: float = attrs.field(default=0.30, validator=_positive)
    heartbeat_interval: float = attrs.field(default=0.05, validator=_positive)
    max_entries_per_message: int = attrs.field(
        default=64, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    max_inflight: int = attrs.field(
        default=8, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    prevote: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    check_quorum: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    read_index: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.election_timeout_max <= self.election_timeout_min:
            raise ValueError(
                f"election_timeout_max ({self.election_timeout_max}) must exceed"
                f" election_timeout_min ({self.election_timeout_min})"
            )
        if self.heartbeat_interval >= self.election_timeout_min:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be below"
                f" election_timeout_min ({self.election_timeout_min})"
            )
