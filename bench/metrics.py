"""Metrics: what a run measured, as tidy pandas DataFrames.

``Results`` holds one DataFrame per kind of row:

* ``ops``: one row per client operation (protocol, seed, client, node, op,
  key, invoke/complete times, latency, status, retries, ``measured``: inside
  the window after warm-up);
* ``summary``: one row per protocol: throughput, latency percentiles,
  availability (longest stretch with no completed operation; time from the
  first leader crash to the next completion), messages and bytes per
  operation, elections and leader changes, simulation speed;
* ``messages``: one row per protocol and message type;
* ``throughput``: one row per protocol and time interval;
* ``faults``: one row per fault that fired;
* ``counters``: one row per protocol, node and protocol counter.

``save(dir)`` writes each as parquet; ``Results.load(dir)`` reads them back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from bench.config import RunConfig

__all__ = ["Results", "collect"]

TABLES = ("ops", "summary", "messages", "throughput", "faults", "counters")


@attrs.define
class Results:
    ops: pd.DataFrame
    summary: pd.DataFrame
    messages: pd.DataFrame
    throughput: pd.DataFrame
    faults: pd.DataFrame
    counters: pd.DataFrame

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            getattr(self, name).to_parquet(directory / f"{name}.parquet", index=False)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Results:
        directory = Path(directory)
        return cls(**{name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES})


def _max_gap(times: list[float], start: float, end: float) -> float:
    """Longest interval in [start, end] containing no completion time."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def _failover(ops: pd.DataFrame, faults: list[dict[str, Any]]) -> float:
    crash = next(
        (f["time"] for f in faults if f["action"] == "crash" and f.get("target") == "leader"), None
    )
    if crash is None:
        return math.nan
    after = ops.loc[(ops["status"] == "ok") & (ops["complete"] > crash), "complete"]
    return float(after.min() - crash) if len(after) else math.inf


def collect(config: RunConfig, runs: list[tuple[str, Any, list[dict[str, Any]], float]]) -> Results:
    """Turn finished simulators into ``Results``."""
    workload = config.workload
    window = workload.duration - workload.warmup
    seed = config.cluster.seed
    ops_frames, summary, messages, throughput, faults, counters = [], [], [], [], [], []
    for protocol, sim, log, wall in runs:
        ops = sim.history.to_dataframe()
        ops.insert(0, "protocol", protocol)
        ops.insert(1, "run", config.name)
        ops.insert(2, "seed", seed)
        ops["measured"] = (ops["invoke"] >= workload.warmup) & (ops["invoke"] < workload.duration)
        ops_frames.append(ops)
        measured = ops[ops["measured"]]
        ok = measured[measured["status"] == "ok"]
        latency_ms = ok["latency"] * 1000
        sent = sim.message_counts()
        sent_bytes = sim.message_bytes()
        total_msgs = sum(sent.values())
        completed = max(len(ops[ops["status"] == "ok"]), 1)
        node_counters: dict[str, int] = {}
        for node in sim.node_ids:
            for name, value in sorted(sim.protocol_counters(node).items()):
                node_counters[name] = node_counters.get(name, 0) + value
                counters.append(
                    {"protocol": protocol, "node": node, "counter": name, "value": value}
                )
        done_times = ok["complete"].tolist()
        summary.append(
            {
                "protocol": protocol,
                "seed": seed,
                "nodes": config.cluster.nodes,
                "ops": len(ok),
                "throughput": len(ok) / window,
                "p50_ms": latency_ms.quantile(0.5) if len(ok) else math.nan,
                "p95_ms": latency_ms.quantile(0.95) if len(ok) else math.nan,
                "p99_ms": latency_ms.quantile(0.99) if len(ok) else math.nan,
                "mean_ms": latency_ms.mean() if len(ok) else math.nan,
                "unknown": int((measured["status"] == "info").sum()),
                "retries": int(measured["retries"].sum()),
                "max_gap_s": _max_gap(done_times, workload.warmup, workload.duration),
                "failover_s": _failover(ops, log),
                "msgs_per_op": total_msgs / completed,
                "bytes_per_op": sum(sent_bytes.values()) / completed,
                "elections": node_counters.get("elections_started", 0),
                "leader_changes": node_counters.get("leader_changes", 0),
                "sim_msgs": sim.messages_delivered,
                "wall_s": wall,
                "sim_msgs_per_wall_s": sim.messages_delivered / wall if wall else math.nan,
            }
        )
        for name in sorted(sent):
            messages.append(
                {
                    "protocol": protocol,
                    "type": name,
                    "count": sent[name],
                    "bytes": sent_bytes.get(name, 0),
                    "per_op": sent[name] / completed,
                }
            )
        if len(ops):
            done = ops[ops["status"] == "ok"]
            bins = (done["complete"] // config.interval).astype(int)
            per_bin = bins.value_counts().sort_index()
            last = int(workload.duration // config.interval)
            for b in range(last + 1):
                count = int(per_bin.get(b, 0))
                throughput.append(
                    {
                        "protocol": protocol,
                        "time": b * config.interval,
                        "ops": count,
                        "ops_per_s": count / config.interval,
                    }
                )
        for fault in log:
            faults.append({"protocol": protocol, **fault})
    return Results(
        ops=pd.concat(ops_frames, ignore_index=True) if ops_frames else pd.DataFrame(),
        summary=pd.DataFrame(summary),
        messages=pd.DataFrame(messages, columns=["protocol", "type", "count", "bytes", "per_op"]),
        throughput=pd.DataFrame(throughput, columns=["protocol", "time", "ops", "ops_per_s"]),
        faults=pd.DataFrame(
            faults,
            columns=["protocol", "time", "action", "node"]
            + sorted({k for f in faults for k in f} - {"protocol", "time", "action", "node"}),
        ),
        counters=pd.DataFrame(counters, columns=["protocol", "node", "counter", "value"]),
    )
