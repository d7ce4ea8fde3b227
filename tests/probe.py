"""A test-only plugin that makes the network observable.

``propose`` with a ``Put`` whose key names a destination (``"to:2"`` or
``"all"``) sends a numbered ``Ping``; every replica records each ``Ping`` it
receives as ``(arrival time, src, n)``.  Proposals are answered with a
rejection so clients never wait on the probe.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from consensus.registry import ProtocolSpec, register
from consensus.replica import Outputs, Rejection, Replica, ReplicaContext


@attrs.frozen(kw_only=True)
class Ping:
    n: int


class Probe(Replica):
    def __init__(self, ctx: ReplicaContext, records: Sequence[Any]) -> None:
        super().__init__(ctx)
        self.received: list[tuple[float, int, int]] = []
        self.sent = 0

    def start(self, now: float) -> Outputs:
        return Outputs()

    def step(self, now: float, src: int, message: Any) -> Outputs:
        self.received.append((now, src, message.n))
        return Outputs()

    def tick(self, now: float) -> Outputs:
        return Outputs()

    def next_deadline(self) -> float | None:
        return None

    def leader(self) -> int | None:
        return None

    def ping(self, dst: int | None = None) -> Outputs:
        out = Outputs()
        targets = self.ctx.peers if dst is None else (dst,)
        for peer in targets:
            self.sent += 1
            out.send(peer, Ping(n=self.sent))
        return out

    def propose(self, now: float, request: Any) -> Outputs:
        return Outputs(
            rejected=[
                Rejection(
                    client_id=request.client_id, seq=request.seq, leader_hint=None, reason="probe"
                )
            ]
        )


PROBE = register(
    ProtocolSpec(name="probe", create=Probe, summary="network probe (tests only)", messages=(Ping,))
)


def ping(sim: Any, src: int, dst: int | None = None) -> None:
    """Make node ``src`` send a ping now (to ``dst`` or every peer)."""
    host = sim.host(src)
    host.handle(sim.now, host.replica.ping(dst))
