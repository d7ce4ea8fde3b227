"""Single-decree Paxos tuning knobs; every default is usable as it stands."""

from __future__ import annotations

import attrs

__all__ = ["PaxosOptions"]


@attrs.frozen(kw_only=True)
class PaxosOptions:
    """Timers are in seconds of the host's clock (virtual time in the simulator).

    ``retry_timeout``: a round (prepare or accept) that has not reached a
    majority by then is retried with a higher ballot (lost messages, crashed
    acceptors).  ``backoff_base``/``backoff_max``: after losing a duel (a
    ``Nack``) a proposer waits a random time in ``[0, min(max, base * 2**n))``
    before its ``n``-th retry (drawn from ``ctx.rng``).  ``hole_delay``: how
    long a slot may stay undecided below a known later slot before this node
    runs Paxos on it with ``Noop``.  ``max_in_flight``: client instances this
    node runs at once; requests beyond it wait and are batched, up to
    ``max_batch`` per slot.  ``done_gossip_interval``: how often a node tells
    its peers how far it has applied when that changed (it also rides on every
    message); ``done_refresh_interval``: the same even when unchanged, so a
    lost report does not stall forgetting forever.

    ``adapt_timers``: the timers above are floors that measured round trips
    raise (``protocols.paxos_common.rtt``): a retry waits at least twice the
    retransmission estimate (``srtt + 4 * rttvar``), a hole three times, and
    backoffs start at half of it and reach four times it.  Off: the
    configured values stand, however slow the network (for comparison).
    """

    retry_timeout: float = 0.1
    backoff_base: float = 0.004
    backoff_max: float = 0.2
    hole_delay: float = 0.05
    max_in_flight: int = 4
    max_batch: int = 16
    max_hole_fills: int = 16
    done_gossip_interval: float = 0.05
    done_refresh_interval: float = 1.0
    adapt_timers: bool = True

    def __attrs_post_init__(self) -> None:
        if min(self.retry_timeout, self.backoff_base, self.hole_delay) <= 0:
            raise ValueError("retry_timeout, backoff_base and hole_delay must be positive")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be >= backoff_base")
        if min(self.max_in_flight, self.max_batch, self.max_hole_fills) < 1:
            raise ValueError("max_in_flight, max_batch and max_hole_fills must be >= 1")
        if self.done_gossip_interval <= 0 or self.done_refresh_interval <= 0:
            raise ValueError("done gossip intervals must be positive")
