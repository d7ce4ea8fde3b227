"""Metrics: what a run measured, as tidy pandas DataFrames.

``Results`` holds one DataFrame per kind of row:

* ``ops``: one row per client operation (protocol, seed, client, node, op,
  key, invoke/complete times, latency, status, retries, ``measured``: inside
  the window after warm-up);
* ``summary``: one row per protocol: throughput (operations invoked in the
  measured window that succeeded, per second of the window) and
  ``completed_per_s`` (operations that completed in the window, whenever
  invoked: what the cluster served; the two differ when an open loop
  overloads it and queued operations complete during the drain), latency percentiles,
  availability (longest stretch with no completed operation; time from the
  first leader crash to the next completion), messages and bytes per
  operation, elections and leader changes, simulation speed;
* ``messages``: one row per protocol and message type;
* ``throughput``: one row per protocol and time interval;
* ``faults``: one row per fault that fired;
* ``counters``: one row per protocol, node and protocol counter;
* ``nodes``: one row per protocol and node: how loaded it was over the
  measured window (costs on, ``consensus.costs``): CPU and busy
  utilisation (busy: CPU plus waiting for fsyncs and, with ``costs.cores``,
  for a core: the fraction of time the node could not take new input),
  fsyncs, batches and records per second, inputs per batch, mean and
  longest queue, bytes sent and link utilisation; over TCP, each node
  process's CPU utilisation and fsyncs;
* ``queues``: one row per protocol, node and time interval (costs on):
  mean and longest queue, CPU and busy utilisation, fsyncs per second;
* ``trace``: with ``trace = true``, one row per protocol and traced event:
  every message (send and arrival times, or why it was dropped, type,
  bytes, the client operations it carries), client invocations and
  completions, role changes, crashes (``consensus.sim.trace``); else empty.

The summary names each protocol's busiest node (the highest CPU
utilisation), its CPU utilisation and its busy share, so a saturated leader
shows at a glance: CPU near 100%.

``save(dir)`` writes each as parquet; ``Results.load(dir)`` reads them back
(a table missing from an older save comes back empty).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from bench.config import RunConfig
from consensus.sim.trace import TRACE_COLUMNS

__all__ = ["Results", "collect"]

TABLES = (
    "ops",
    "summary",
    "messages",
    "throughput",
    "faults",
    "counters",
    "nodes",
    "queues",
    "trace",
)

NODE_COLUMNS = [
    "protocol",
    "node",
    "cpu_util",
    "busy_util",
    "fsyncs_per_s",
    "batches_per_s",
    "inputs_per_batch",
    "records_per_s",
    "queue_mean",
    "queue_max",
    "mbytes_per_s",
    "link_util",
]
QUEUE_COLUMNS = [
    "protocol",
    "node",
    "time",
    "queue_mean",
    "queue_max",
    "cpu_util",
    "busy_util",
    "fsyncs_per_s",
    "batches",
]


@attrs.define
class Results:
    ops: pd.DataFrame
    summary: pd.DataFrame
    messages: pd.DataFrame
    throughput: pd.DataFrame
    faults: pd.DataFrame
    counters: pd.DataFrame
    nodes: pd.DataFrame = attrs.Factory(lambda: pd.DataFrame(columns=NODE_COLUMNS))
    queues: pd.DataFrame = attrs.Factory(lambda: pd.DataFrame(columns=QUEUE_COLUMNS))
    trace: pd.DataFrame = attrs.Factory(lambda: pd.DataFrame(columns=["protocol", *TRACE_COLUMNS]))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            getattr(self, name).to_parquet(directory / f"{name}.parquet", index=False)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Results:
        directory = Path(directory)
        return cls(
            **{
                name: pd.read_parquet(directory / f"{name}.parquet")
                for name in TABLES
                if (directory / f"{name}.parquet").exists()
            }
        )


def _max_gap(times: list[float], start: float, end: float) -> float:
    """Longest interval in [start, end] containing no completion time."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def _completed(ops: pd.DataFrame, start: float, end: float) -> int:
    """Operations that completed successfully in [start, end), whenever invoked."""
    done = ops.loc[ops["status"] == "ok", "complete"]
    return int(((done >= start) & (done < end)).sum())


def _client_cpu(sim: Any, config: RunConfig, ops: pd.DataFrame) -> float:
    """CPU seconds the clients' hosts spent in the measured window: measured for a
    real run's load generators; for a simulated one, ``costs.client`` per answer
    (successful answers only, so a little less than charged), NaN when free."""
    if hasattr(sim, "load_cpu"):
        return float(sim.load_cpu)
    cost = config.cluster.costs.client
    if not cost:
        return math.nan
    return cost * _completed(ops, config.workload.warmup, config.workload.duration)


def _failover(ops: pd.DataFrame, faults: list[dict[str, Any]]) -> float:
    crash = next(
        (f["time"] for f in faults if f["action"] == "crash" and f.get("target") == "leader"), None
    )
    if crash is None:
        return math.nan
    after = ops.loc[(ops["status"] == "ok") & (ops["complete"] > crash), "complete"]
    return float(after.min() - crash) if len(after) else math.inf


def _node_load(
    protocol: str, sim: Any, config: RunConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of ``nodes`` and ``queues`` for one protocol's run (see the module)."""
    workload = config.workload
    start, end, width = workload.warmup, workload.duration, config.interval
    window = end - start
    if hasattr(sim, "node_load"):  # a real cluster reports its own
        return [{"protocol": protocol, **row} for row in sim.node_load(window)], []
    intervals = sim.node_intervals()
    queues = []
    totals: dict[int, dict[str, float]] = {}
    for row in intervals:
        if start - 1e-9 <= row["time"] < end - 1e-9:
            total = totals.setdefault(row["node"], dict.fromkeys(row, 0.0))
            for key, value in row.items():
                total[key] = max(total[key], value) if key == "queue_max" else total[key] + value
        queues.append(
            {
                "protocol": protocol,
                "node": row["node"],
                "time": row["time"],
                "queue_mean": row["queue_area"] / width,
                "queue_max": int(row["queue_max"]),
                "cpu_util": row["cpu_s"] / width,
                "busy_util": (row["cpu_s"] + row["fsync_s"] + row["core_wait_s"]) / width,
                "fsyncs_per_s": row["fsyncs"] / width,
                "batches": int(row["batches"]),
            }
        )
    nodes = []
    if intervals:
        for node in sim.node_ids:
            t = totals.get(node, {})
            batches = t.get("batches", 0.0)
            nodes.append(
                {
                    "protocol": protocol,
                    "node": node,
                    "cpu_util": t.get("cpu_s", 0.0) / window,
                    "busy_util": (
                        t.get("cpu_s", 0.0) + t.get("fsync_s", 0.0) + t.get("core_wait_s", 0.0)
                    )
                    / window,
                    "fsyncs_per_s": t.get("fsyncs", 0.0) / window,
                    "batches_per_s": batches / window,
                    "inputs_per_batch": t.get("inputs", 0.0) / batches if batches else math.nan,
                    "records_per_s": t.get("records", 0.0) / window,
                    "queue_mean": t.get("queue_area", 0.0) / window,
                    "queue_max": int(t.get("queue_max", 0)),
                    "mbytes_per_s": t.get("bytes_sent", 0.0) / window / 1e6,
                    "link_util": t.get("link_s", 0.0) / window,
                }
            )
    return nodes, queues


def _busiest(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    # The node with the highest CPU utilisation: the one that saturates first.  (Its
    # busy share, with fsync waits, can reach 1 long before: group commit makes the
    # batches grow with the load, so waiting for fsyncs is not yet saturation.)
    if not nodes:
        return {"busiest_node": -1, "busiest_cpu": math.nan, "busiest_busy": math.nan}
    top = max(nodes, key=lambda row: (row["cpu_util"], -row["node"]))
    return {
        "busiest_node": top["node"],
        "busiest_cpu": top["cpu_util"],
        "busiest_busy": top["busy_util"],
    }


def collect(config: RunConfig, runs: list[tuple[str, Any, list[dict[str, Any]], float]]) -> Results:
    """Turn finished simulators into ``Results``."""
    workload = config.workload
    window = workload.duration - workload.warmup
    seed = config.cluster.seed
    ops_frames, summary, messages, throughput, faults, counters = [], [], [], [], [], []
    node_rows: list[dict[str, Any]] = []
    queue_rows: list[dict[str, Any]] = []
    traces = []
    for protocol, sim, log, wall in runs:
        if getattr(sim, "_tracer", None) is not None:
            trace = sim.trace()
            trace.insert(0, "protocol", protocol)
            traces.append(trace)
        nodes, queues = _node_load(protocol, sim, config)
        node_rows.extend(nodes)
        queue_rows.extend(queues)
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
                "completed_per_s": _completed(ops, workload.warmup, workload.duration) / window,
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
                **_busiest(nodes),
                "max_queue": max((row["queue_max"] for row in nodes), default=0),
                "client_cpu": _client_cpu(sim, config, ops) / window,
                # Real runs: cores the whole machine used in the window (NaN simulated).
                "host_cpu": getattr(sim, "host_cpu", math.nan) / window,
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
        nodes=pd.DataFrame(node_rows, columns=NODE_COLUMNS),
        queues=pd.DataFrame(queue_rows, columns=QUEUE_COLUMNS),
        trace=(
            pd.concat(traces, ignore_index=True)
            if traces
            else pd.DataFrame(columns=["protocol", *TRACE_COLUMNS])
        ),
    )
