"""This project's real clusters as a peer-benchmark system.

Theory of operation
-------------------
``run_ours_point(point, protocol=...)`` runs one ``LoadPoint`` on a fresh
3-node cluster of this project: ``python -m consensus serve`` processes on
loopback (``LocalCluster``), each with its write-ahead log (``fsync``:
``batch``, group commit, by default) and proposal packing, driven by
``processes`` load-generator processes (``bench.tcpload``) through the
client library: ``clients`` closed-loop clients split over the processes,
each keeping ``window`` puts of ``command_size`` characters outstanding (or
an open loop at ``rate``).  Latency is measured in the load processes from
submit to the committed answer (``time.monotonic``), for commands completed
inside the measured window after ``warmup``.

The shape differs from PySyncObj's on purpose and in our disfavour: there,
each node process submits its share of the load itself (no client hop, no
client protocol); here, clients are separate processes that talk to the
leader over TCP, as real clients do, and they compete with the nodes for
this machine's two cores.

One load-generator process by default: at about 7 µs of CPU per command it
can drive 140,000 commands/s, and on two cores a second one costs more in
process switches than it adds (Raft at 12 clients x 256: 100,800 commands/s
on average with one, 91,800 with two, five runs each, alternated).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers.measure import LoadPoint, PointResult, merge_latencies
from bench.tcprun import cluster_statuses, run_loads, wait_for_service
from consensus.runtime.launcher import LocalCluster, write_local_cluster_file

__all__ = ["run_ours_point"]


def run_ours_point(
    point: LoadPoint,
    *,
    protocol: str = "raft",
    nodes: int = 3,
    processes: int = 1,
    fsync: str = "batch",
    pack_proposals: int = 256,
    system: str | None = None,
    options: dict[str, Any] | None = None,
    max_pending: int | None = None,
    settings: dict[str, Any] | None = None,
) -> PointResult:
    """Run ``point`` on a fresh local cluster of this project (see the module docstring)."""
    t_begin = time.monotonic()
    processes = max(1, min(processes, point.clients))
    with tempfile.TemporaryDirectory(prefix="consensus-peers-") as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        path = write_local_cluster_file(
            folder / "cluster.toml",
            protocol,
            nodes=nodes,
            options=options,
            fsync=fsync,
            settings=settings,
            extra=(
                f"[limits]\npack_proposals = {pack_proposals}\n"
                + (f"max_pending = {max_pending}\n" if max_pending else "")
                + "[client]\ntimeout = 2.0\nbackoff = 0.01\nmax_attempts = 100\n"
            ),
        )
        with LocalCluster(path, log_dir=folder / "logs"):
            wait_for_service(path)
            startup_s = time.monotonic() - t_begin
            total = point.warmup + point.duration
            workload = {
                "mode": "closed" if point.rate is None else "open",
                "clients": point.clients,
                "duration": total,
                "warmup": min(point.warmup, total / 2),
            }
            if point.rate is not None:
                workload["rate"] = point.rate
            spec = {
                "workload": workload,
                "window": point.window,
                "kind": "puts",
                "command_size": point.command_size,
                "record": "latency",
                "measure_from": point.warmup,
                "timeout": 2.0,
            }
            results = run_loads(
                path, folder, processes=processes, spec=spec, duration=total, drain=2.0
            )
            statuses = cluster_statuses(path)
    committed = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    p50, p90, p99 = merge_latencies([(r["ok"], r["samples_ms"]) for r in results])
    leaders = [s["node"] for s in statuses if s.get("up") and s.get("role") == "leader"]
    return PointResult(
        system=system or protocol,
        protocol=protocol,
        nodes=nodes,
        command_size=point.command_size,
        clients=point.clients,
        window=point.window,
        offered_rate=point.rate,
        committed=committed,
        throughput=committed / point.duration,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        failed=failed,
        wall_s=time.monotonic() - t_begin,
        duration=point.duration,
        notes={
            "startup_s": round(startup_s, 3),
            "load_processes": processes,
            "fsync": fsync,
            "pack_proposals": pack_proposals,
            "leader": leaders[0] if leaders else None,
            "leader_changes": sum(int(s.get("leader_changes_seen", 0)) for s in statuses),
            "busy": sum(int(s.get("rejected_busy", 0)) for s in statuses),
            "fsyncs": {s["node"]: s.get("fsyncs") for s in statuses if s.get("up")},
        },
    )
