"""Raft's read paths side by side: log, ReadIndex, lease, follower reads.

Theory of operation
-------------------
``read_modes`` runs one read-heavy workload on one simulated Raft cluster
once per *read path* (``READ_PATHS``: a label and the Raft options that
choose it):

* ``log``: a ``Get`` is proposed and committed like a write;
* ``read_index``: the leader confirms with a heartbeat round (thesis 6.4);
* ``lease``: the leader answers at once while its lease holds (6.4.1;
  ``max_clock_drift`` 1%, no clock drift in the run);
* ``follower (read_index)``, ``follower (lease)``: a follower asks the
  leader for a read index and serves the read itself.

The clients: ``clients`` closed-loop clients, client ``i`` living next to
node ``i mod nodes``.  A client sends its writes to the leader (the node
that answered its previous write; a write elsewhere is redirected), and its
reads to the leader too, unless followers serve reads: then to its own
node, so the read load spreads over the cluster.  Keys are drawn uniformly
from ``keys``; ``read_fraction`` of the operations are reads.  Every draw
comes from the seed; same seed for every path, only the options differ.

Measured over ``[warmup, duration)``: throughput, read and write latency
percentiles, messages per operation (all nodes) and sent by the leader
per operation (its load), and ``leader_read_share``: the fraction of reads
the leader served itself (1 without follower reads).  On the simulator
without a CPU cost model an operation costs its network round trips only:
the paths differ by the round trips a read needs (the log and ReadIndex
one, a lease none, a follower read one more hop to the leader) and by the
messages they cost the leader.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pandas as pd

from bench.config import cost_preset
from consensus.commands import Get, Put
from consensus.config import ClusterConfig, CostConfig, Delay, NetworkConfig
from consensus.schema import structure
from consensus.sim.simulator import SimClient, Simulator

__all__ = ["READ_PATHS", "ReadPath", "read_modes", "read_path_run"]


@attrs.frozen(kw_only=True)
class ReadPath:
    """One way to serve reads: a label and the Raft options that select it."""

    label: str
    options: dict[str, Any] = attrs.Factory(dict)


READ_PATHS: tuple[ReadPath, ...] = (
    ReadPath(label="log", options={"read_mode": "log"}),
    ReadPath(label="read_index", options={"read_mode": "read_index"}),
    ReadPath(label="lease", options={"read_mode": "lease", "max_clock_drift": 0.01}),
    ReadPath(
        label="follower (read_index)", options={"read_mode": "read_index", "follower_reads": True}
    ),
    ReadPath(
        label="follower (lease)",
        options={"read_mode": "lease", "max_clock_drift": 0.01, "follower_reads": True},
    ),
)


def read_path_run(
    path: ReadPath,
    *,
    duration: float = 3.0,
    warmup: float = 0.5,
    nodes: int = 3,
    clients: int = 30,
    keys: int = 1000,
    read_fraction: float = 0.9,
    seed: int = 1,
    costs: str = "off",
) -> dict[str, Any]:
    """One read path on the workload above: one row of ``read_modes``."""
    config = ClusterConfig(
        protocol="raft",
        nodes=nodes,
        seed=seed,
        options=dict(path.options),
        network=NetworkConfig(delay=Delay.uniform(0.0005, 0.0015), client_delay=0.0005),
        costs=structure(CostConfig, cost_preset(costs), path="costs"),
        wire="bytes" if costs != "off" else "objects",
    )
    sim = Simulator(config, record_applied=False)
    rng = random.Random(f"{seed}:read-modes")
    local_reads = bool(path.options.get("follower_reads"))
    writer: dict[int, int | None] = {}

    def issue(client: SimClient, home: int) -> None:
        if sim.now >= duration:
            return
        key = f"k{rng.randrange(keys)}"
        if rng.random() < read_fraction:
            node = home if local_reads else writer.get(client.client_id)
            command: Any = Get(key=key)
        else:
            node = writer.get(client.client_id)
            command = Put(key=key, value=f"c{client.client_id}.{client.seq + 1}")

        def done(op: Any) -> None:
            if type(op.command) is Put and op.ok:
                writer[client.client_id] = client.preferred  # the leader that took it
            issue(client, home)

        client.submit(command, node=node, on_done=done)

    for i in range(clients):
        issue(sim.client(), i % nodes)
    sim.run_until_time(warmup)
    leader_sent = _leader_sent(sim)
    all_sent = sum(sim.message_counts().values())
    sim.run_until_time(duration)
    leader_sent = _leader_sent(sim) - leader_sent
    all_sent = sum(sim.message_counts().values()) - all_sent
    sim.run_for(1.0)  # let the last operations finish
    done_ops = [
        op for op in sim.history if op.ok and op.complete is not None and warmup <= op.invoke
    ]
    done_ops = [op for op in done_ops if op.complete < duration]
    reads = pd.Series([op.latency for op in done_ops if type(op.command) is Get]) * 1000
    writes = pd.Series([op.latency for op in done_ops if type(op.command) is Put]) * 1000
    window = duration - warmup
    at_leader = sum(sim.protocol_counters(n)["reads"] for n in sim.node_ids)
    at_follower = sum(sim.protocol_counters(n)["follower_reads"] for n in sim.node_ids)
    return {
        "read_path": path.label,
        "options": ", ".join(f"{k}={v}" for k, v in path.options.items()),
        "ops_per_s": len(done_ops) / window,
        "reads_per_s": len(reads) / window,
        "read_p50_ms": reads.quantile(0.5),
        "read_p99_ms": reads.quantile(0.99),
        "write_p50_ms": writes.quantile(0.5),
        "msgs_per_op": all_sent / max(len(done_ops), 1),
        "leader_msgs_per_op": leader_sent / max(len(done_ops), 1),
        # Through the log (no read counters) every read is the leader's.
        "leader_read_share": at_leader / (at_leader + at_follower) if at_follower else 1.0,
        "nodes": nodes,
        "clients": clients,
        "seed": seed,
    }


def _leader_sent(sim: Simulator) -> int:
    leaders = sim.leaders()
    return sum(sim.host(leaders[0]).sent.values()) if leaders else 0


def read_modes(
    paths: tuple[ReadPath, ...] = READ_PATHS,
    *,
    duration: float = 3.0,
    nodes: int = 3,
    clients: int = 30,
    seed: int = 1,
    costs: str = "off",
) -> pd.DataFrame:
    """One row per read path: throughput, read and write latency, messages per
    operation, and the share of reads the leader served (see above).

    ``costs``: a cost preset (``bench.config.cost_preset``: ``"off"``,
    ``"default"`` for this machine's measured costs, or a TOML file): with
    costs on, nodes pay CPU for every message and request, so a leader that
    serves every read saturates, and follower reads move that work away."""
    return pd.DataFrame(
        [
            read_path_run(
                path, duration=duration, nodes=nodes, clients=clients, seed=seed, costs=costs
            )
            for path in paths
        ]
    )
