"""Validation: one config, simulated with calibrated costs and run over TCP, side by side.

Theory of operation
-------------------
``compare(config, clients)`` runs the same ``RunConfig`` twice per client
count of a closed-loop ladder: once simulated (``bench.runner``, with the
config's costs, which should be this machine's: ``python -m bench
calibrate``) and once as real node processes on loopback (``bench.tcprun``).
One row per (mode, protocol, clients): what the cluster served
(``completed_per_s``), median and tail latency, the busiest node's CPU
utilisation and the load generators' (measured from ``/proc`` for real
runs, from the cost model for simulated ones) and, for real runs, how busy
the whole machine was in the measured window (``host_cpu``, cores, from
``/proc/stat``) and how much of that was not the cluster's nodes and load
generators (``other_cpu``: the kernel's share of loopback TCP, and any
other work on a shared machine, which takes CPU from the nodes).

``peaks(rows)`` compares, per protocol, the peak of each mode (the highest
``completed_per_s`` over the ladder), and the median latencies of the two
modes at the real peak's client count, each as a ratio simulated / real.

For a fair comparison the config must simulate what the real run does:
the same packing (``cluster.pack_proposals`` and ``[tcp] pack_proposals``),
the load generators as client hosts (``costs.client_hosts`` = ``[tcp]
processes``, ``costs.client`` from calibration), a window of one operation
per client, and costs measured on the machine the real run uses.
``bench/configs/validate.toml`` is such a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attrs
import pandas as pd

from bench.config import RunConfig, load_run_config
from bench.runner import run

__all__ = ["compare", "peaks"]


def compare(
    config: str | Path | dict[str, Any] | RunConfig,
    clients: tuple[int, ...] | list[int] = (16, 64, 256, 1024),
    *,
    modes: tuple[str, ...] = ("sim", "tcp"),
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """One row per (mode, protocol, clients); see the theory of operation."""
    base = load_run_config(config)
    rows = []
    for count in clients:
        for mode in modes:
            point = attrs.evolve(base, workload=attrs.evolve(base.workload, clients=count))
            point = point.with_overrides(tcp=mode == "tcp")
            if progress is not None:
                progress(f"{mode}, {count} clients")
            results = run(point)
            for summary in results.summary.to_dict("records"):
                nodes = results.nodes[results.nodes.protocol == summary["protocol"]]
                leader = nodes.sort_values("cpu_util").iloc[-1] if len(nodes) else None
                rows.append(
                    {
                        "mode": mode,
                        "protocol": summary["protocol"],
                        "clients": count,
                        "completed_per_s": summary["completed_per_s"],
                        "p50_ms": summary["p50_ms"],
                        "p99_ms": summary["p99_ms"],
                        "busiest_node": -1 if leader is None else int(leader["node"]),
                        "busiest_cpu": float("nan") if leader is None else leader["cpu_util"],
                        "busiest_fsyncs_per_s": (
                            float("nan") if leader is None else leader["fsyncs_per_s"]
                        ),
                        "client_cpu": summary["client_cpu"],
                        "host_cpu": summary["host_cpu"],
                        "other_cpu": summary["host_cpu"]
                        - nodes["cpu_util"].sum()
                        - summary["client_cpu"],
                    }
                )
    return pd.DataFrame(rows)


def peaks(rows: pd.DataFrame) -> pd.DataFrame:
    """Per protocol: each mode's peak ``completed_per_s`` (and its client count
    and median latency), the ratio of the peaks simulated / real, and the ratio
    of the median latencies at the real peak's client count (``p50_ratio``):
    the same offered load, so that a plateau whose highest point falls on
    another client count in each mode does not compare two different loads."""
    out = []
    for protocol, group in rows.groupby("protocol", sort=False):
        row: dict[str, Any] = {"protocol": protocol}
        for mode in ("sim", "tcp"):
            mine = group[group["mode"] == mode]
            if mine.empty:
                continue
            best = mine.loc[mine["completed_per_s"].idxmax()]
            row[f"{mode}_peak"] = best["completed_per_s"]
            row[f"{mode}_clients"] = int(best["clients"])
            row[f"{mode}_p50_ms"] = best["p50_ms"]
        if "sim_peak" in row and "tcp_peak" in row:
            row["peak_ratio"] = row["sim_peak"] / row["tcp_peak"]
            same = group[(group["mode"] == "sim") & (group["clients"] == row["tcp_clients"])]
            sim_p50 = float(same["p50_ms"].iloc[0]) if len(same) else float("nan")
            row["sim_p50_at_tcp_peak_ms"] = sim_p50
            row["p50_ratio"] = sim_p50 / row["tcp_p50_ms"]
        out.append(row)
    return pd.DataFrame(out)
