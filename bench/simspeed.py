"""Simulation speed: simulated messages delivered per wall-clock second.

``python -m bench speed`` runs a closed-loop write workload on each protocol
and reports how fast the deterministic simulator goes on this machine.  This
is a benchmark, not a test: timings never appear in test assertions.
"""

from __future__ import annotations

import time
from typing import Any

from bench.workload import Workload, WorkloadConfig
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.registry import UnknownProtocolError, available_protocols
from consensus.sim import Simulator

__all__ = ["measure"]


def measure(
    protocol: str,
    *,
    nodes: int = 3,
    clients: int = 32,
    seconds: float = 5.0,
    wire: str = "objects",
    seed: int = 1,
) -> dict[str, Any] | None:
    """Run ``seconds`` of simulated time; None if the protocol is not installed."""
    if protocol not in available_protocols():
        return None
    config = ClusterConfig(
        protocol=protocol,
        nodes=nodes,
        seed=seed,
        wire=wire,
        network=NetworkConfig(delay=Delay.uniform(0.0005, 0.0015)),
    )
    try:
        sim = Simulator(config, record_applied=False)
    except (UnknownProtocolError, ImportError):
        return None
    workload = Workload(
        sim, WorkloadConfig(clients=clients, duration=seconds, warmup=0.0, read_fraction=0.0)
    )
    workload.start()
    started = time.perf_counter()
    sim.run_for(seconds)
    wall = time.perf_counter() - started
    return {
        "protocol": protocol,
        "messages": sim.messages_delivered,
        "events": sim.events_processed,
        "ops": sum(1 for op in sim.history if op.ok),
        "wall": wall,
        "msgs_per_s": sim.messages_delivered / wall,
        "events_per_s": sim.events_processed / wall,
    }
