"""Simulation speed: simulated messages delivered per wall-clock second.

``python -m bench speed`` runs a closed-loop write workload on each protocol
and reports how fast the deterministic simulator goes on this machine.  This
is a benchmark, not a test: timings never appear in test assertions.

What is measured: the wall time of ``Simulator.run_for`` only (building the
cluster and importing the plugin are excluded), with 32 closed-loop clients
sending writes to a healthy LAN-like network.  A *message* is one protocol
message delivered to a node; an *event* is anything the simulator's queue
ran (messages, timers, client arrivals and timeouts).  Messages per second
favour chatty protocols: Raft batches so well that it sends a fraction of a
message per operation, so ``us_per_op`` (wall microseconds per completed
operation) is the fairer comparison between protocols.

The machine may be shared: ``repeat`` runs the same (deterministic)
simulation several times and keeps the fastest, as ``timeit`` does; every
repeat delivers exactly the same messages, so only the clock differs.

``costs``: the simulated nodes' costs (``consensus.costs``): ``"off"`` (the
default: nodes handle inputs instantly) or a preset or file as in a run
config (``"default"``: the measured table).  With costs on the simulator
queues and batches inputs and charges their time, so the same workload
sends different messages; messages per wall second is still the measure.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from bench.config import cost_preset
from bench.parallel import map_in_processes
from bench.workload import Workload, WorkloadConfig
from consensus.config import ClusterConfig, CostConfig, Delay, NetworkConfig, structure
from consensus.registry import UnknownProtocolError, available_protocols
from consensus.sim.simulator import Simulator

__all__ = ["measure", "measure_parallel"]


def _build(
    protocol: str,
    *,
    nodes: int,
    clients: int,
    seconds: float,
    wire: str,
    seed: int,
    costs: str = "off",
) -> Simulator:
    """The benchmark's simulator with its workload started."""
    config = ClusterConfig(
        protocol=protocol,
        nodes=nodes,
        seed=seed,
        wire=wire,
        network=NetworkConfig(delay=Delay.uniform(0.0005, 0.0015)),
        costs=structure(CostConfig, cost_preset(costs), path="costs"),
    )
    sim = Simulator(config, record_applied=False)
    workload = Workload(
        sim, WorkloadConfig(clients=clients, duration=seconds, warmup=0.0, read_fraction=0.0)
    )
    workload.start()
    return sim


def measure(
    protocol: str,
    *,
    nodes: int = 3,
    clients: int = 32,
    seconds: float = 5.0,
    wire: str = "objects",
    seed: int = 1,
    repeat: int = 1,
    costs: str = "off",
) -> dict[str, Any] | None:
    """Run ``seconds`` of simulated time (best of ``repeat`` runs); None if not installed.

    Keys: ``protocol``, ``nodes``, ``messages``, ``events``, ``ops`` (completed
    operations), ``wall`` and ``cpu`` (seconds, of the fastest run),
    ``msgs_per_s``, ``events_per_s``, ``ops_per_s`` and ``us_per_op`` (wall).
    """
    if protocol not in available_protocols():
        return None
    best: tuple[float, float, Simulator] | None = None
    for _ in range(max(1, repeat)):
        try:
            sim = _build(
                protocol,
                nodes=nodes,
                clients=clients,
                seconds=seconds,
                wire=wire,
                seed=seed,
                costs=costs,
            )
        except (UnknownProtocolError, ImportError):
            return None
        started, cpu_started = time.perf_counter(), time.process_time()
        sim.run_for(seconds)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        if best is None or wall < best[0]:
            best = (wall, cpu, sim)
    assert best is not None
    wall, cpu, sim = best
    ops = sum(1 for op in sim.history if op.ok)
    return {
        "protocol": protocol,
        "nodes": nodes,
        "messages": sim.messages_delivered,
        "events": sim.events_processed,
        "ops": ops,
        "wall": wall,
        "cpu": cpu,
        "msgs_per_s": sim.messages_delivered / wall,
        "events_per_s": sim.events_processed / wall,
        "ops_per_s": ops / wall,
        "us_per_op": wall / ops * 1e6 if ops else float("nan"),
    }


def _timed_run(
    protocol: str, seed: int, settings: dict[str, Any], barrier: Any
) -> tuple[int, float, float]:
    try:
        sim = _build(protocol, seed=seed, **settings)
    except BaseException:
        barrier.abort()  # the other processes stop waiting for this one
        raise
    barrier.wait(timeout=600)  # every process starts simulating at the same moment
    started = time.monotonic()  # system-wide, so comparable across processes
    sim.run_for(settings["seconds"])
    return sim.messages_delivered, started, time.monotonic()


def measure_parallel(
    protocol: str,
    *,
    jobs: int,
    nodes: int = 3,
    clients: int = 32,
    seconds: float = 5.0,
    wire: str = "objects",
    costs: str = "off",
) -> dict[str, Any] | None:
    """``jobs`` simulations (seeds 1..jobs) at once, one process each, as a sweep runs.

    Keys: ``protocol``, ``nodes``, ``jobs``, ``messages`` (all runs),
    ``wall`` (first start to last finish) and ``msgs_per_s`` (messages of all
    runs per wall second).  None if the protocol is not installed.
    """
    if protocol not in available_protocols():
        return None
    settings: dict[str, Any] = dict(
        nodes=nodes, clients=clients, seconds=seconds, wire=wire, costs=costs
    )
    _build(protocol, seed=1, **settings)  # a bad setting fails here, with its own error
    with multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(jobs)
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            ((protocol, seed, settings, barrier), {}) for seed in range(1, jobs + 1)
        ]
        rows = list(map_in_processes(_timed_run, calls, jobs))
    messages = sum(row[0] for row in rows)
    wall = max(row[2] for row in rows) - min(row[1] for row in rows)
    return {
        "protocol": protocol,
        "nodes": nodes,
        "jobs": jobs,
        "messages": messages,
        "wall": wall,
        "msgs_per_s": messages / wall,
    }
