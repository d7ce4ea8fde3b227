"""Clock drift: a replica whose clock runs fast or slow against the host's.

Theory of operation
-------------------
A replica reads time only from the ``now`` its host passes with each input,
and asks for ticks with ``next_deadline()`` on that same clock.  So a node
whose clock runs at ``rate`` times real time (``rate = 1 + drift``; a drift
of 0.01 runs 1% fast) is the same replica behind a thin proxy that scales
every ``now`` going in by ``rate`` and every deadline coming out by
``1 / rate``.  The protocol code never knows; time-based mechanisms (leader
leases, timeouts) see exactly what a drifting node would see.

Both clocks start at 0 together: the local clock reads ``rate * t`` at real
time ``t``.  Only a host given a rate other than 1 builds the proxy, so a
run without drift pays nothing.
"""

from __future__ import annotations

import math
from typing import Any

from consensus.commands import Request
from consensus.replica import Outputs, Replica

__all__ = ["DriftingReplica"]


class DriftingReplica:
    """``replica`` seen through a clock running at ``rate`` times real time.

    Every attribute not overridden here is the inner replica's own, so
    ``counters``, ``status()``, ``leader()`` and a plugin's own fields read
    through unchanged."""

    def __init__(self, replica: Replica, rate: float) -> None:
        if not rate > 0:
            raise ValueError(f"a clock rate must be > 0, got {rate!r}")
        self.inner = replica
        self.rate = rate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, now: float) -> Outputs:
        return self.inner.start(now * self.rate)

    def step(self, now: float, src: int, message: Any) -> Outputs:
        return self.inner.step(now * self.rate, src, message)

    def tick(self, now: float) -> Outputs:
        return self.inner.tick(now * self.rate)

    def propose(self, now: float, request: Request) -> Outputs:
        return self.inner.propose(now * self.rate, request)

    def read(self, now: float, request: Request) -> Outputs:
        return self.inner.read(now * self.rate, request)

    def compact(self, now: float, index: int, data: bytes) -> Outputs:
        return self.inner.compact(now * self.rate, index, data)

    def synced(self, now: float) -> Outputs | None:
        return self.inner.synced(now * self.rate)

    def next_deadline(self) -> float | None:
        deadline = self.inner.next_deadline()
        if deadline is None:
            return None
        real = deadline / self.rate
        if real * self.rate < deadline:
            # Rounded below: a tick at ``real`` would show the replica a time just
            # short of its deadline, and it would ask again for the same instant.
            real = math.nextafter(real, math.inf)
        return real
