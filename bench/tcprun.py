"""Benchmarks over TCP: a run config's workload against real node processes.

Theory of operation
-------------------
``run_tcp_one(config, protocol)`` is the real-cluster twin of
``bench.runner.run_one``:

1. write a cluster file for ``config.cluster.nodes`` nodes on free loopback
   ports (the protocol's options from the run config, the fsync policy and
   proposal packing from ``[tcp]``) and start every node as an OS process
   (``LocalCluster``), each with its write-ahead log;
2. wait until the cluster answers (a leader is known), then start
   ``[tcp] processes`` load-generator processes (``bench.tcpload``) with a
   common start time a second ahead; each runs its share of the workload's
   clients (closed loop, ``window`` outstanding each) or arrivals (open
   loop) and records every operation;
3. while they run, fire the fault schedule's ``crash`` (SIGKILL, restarted
   after ``duration``) and ``restart`` faults at their times;
4. collect every node's counters (messages and bytes sent by type, protocol
   counters) while the nodes still run, stop everything, and merge the load
   processes' histories into one.

Over the measured window (warm-up to duration) it also reads each node
process's and the load processes' CPU time (``/proc``, Linux) and the
nodes' batch and fsync counts, for ``Results.nodes``: what the real
cluster's nodes did, beside what the simulator's cost model says they do.

What comes back quacks like the simulator where ``bench.metrics.collect``
looks (``history``, ``message_counts``, ...), so a TCP run gives the same
DataFrames as a simulated one, in wall-clock seconds since the common start.
Everything started is stopped, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import attrs
import trio

from bench.config import RunConfig
from bench.faults import Fault, FaultLog
from consensus.checker.history import History, Operation
from consensus.runtime.cli import gather_status
from consensus.runtime.clusterfile import load_cluster_file
from consensus.runtime.launcher import LocalCluster, write_local_cluster_file

__all__ = [
    "START_DELAY",
    "TcpRun",
    "cluster_statuses",
    "run_loads",
    "run_tcp_one",
    "wait_for_service",
]

#: Seconds between starting the load processes and their common start.
START_DELAY = 1.5


@attrs.define
class TcpRun:
    """A finished real-cluster run, shaped like a ``Simulator`` for ``collect``."""

    protocol: str
    node_ids: tuple[int, ...]
    history: History
    statuses: list[dict[str, Any]]
    workdir: str = ""
    #: CPU seconds per node process in the measured window (empty off Linux).
    cpu: dict[int, float] = attrs.Factory(dict)
    #: CPU seconds of all load-generator processes in the measured window.
    load_cpu: float = 0.0
    #: CPU seconds the whole machine spent in the measured window (every process,
    #: the kernel, and whatever else runs there: a shared machine shows here).
    host_cpu: float = float("nan")
    #: Node statuses at the start of the measured window (for rates).
    statuses_before: list[dict[str, Any]] = attrs.Factory(list)

    def node_load(self, window: float) -> list[dict[str, Any]]:
        """Rows of ``Results.nodes`` (``bench.metrics``): CPU utilisation per node
        process, and batches and fsyncs per second, over the measured window."""
        before = {s.get("node"): s for s in self.statuses_before}
        rows = []
        for status in self.statuses:
            node = status.get("node")
            if node not in self.cpu:
                continue
            start = before.get(node, {})

            def rate(key: str, status: dict[str, Any] = status, start: dict = start) -> float:
                return (int(status.get(key, 0)) - int(start.get(key, 0))) / window

            batches = rate("batches")
            inputs = rate("messages_in") + rate("requests_in")
            rows.append(
                {
                    "node": node,
                    "cpu_util": self.cpu[node] / window,
                    "busy_util": self.cpu[node] / window,
                    "fsyncs_per_s": rate("fsyncs"),
                    "batches_per_s": batches,
                    "inputs_per_batch": inputs / batches if batches else float("nan"),
                    "records_per_s": float("nan"),
                    "queue_mean": float("nan"),
                    "queue_max": int(status.get("queued_messages", 0))
                    + int(status.get("queued_requests", 0)),
                    "mbytes_per_s": float("nan"),
                    "link_util": float("nan"),
                }
            )
        return rows

    @property
    def messages_delivered(self) -> int:
        return sum(int(s.get("messages_in", 0)) for s in self.statuses if s.get("up"))

    def message_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for status in self.statuses:
            total.update(status.get("sent_messages", {}))
        return total

    def message_bytes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for status in self.statuses:
            total.update(status.get("sent_bytes", {}))
        return total

    def protocol_counters(self, node: int) -> Counter[str]:
        for status in self.statuses:
            if status.get("node") == node:
                return Counter(status.get("counters", {}))
        return Counter()


def _cluster_file(config: RunConfig, protocol: str, folder: Path) -> Path:
    tcp = config.tcp
    (folder / "data").mkdir(parents=True, exist_ok=True)
    options = dict(config.options.get(protocol, {}))
    extra = (
        f"[limits]\npack_proposals = {tcp.pack_proposals}\n"
        f"[client]\ntimeout = {tcp.client_timeout}\nbackoff = 0.01\nmax_attempts = 100\n"
    )
    return write_local_cluster_file(
        folder / "cluster.toml",
        protocol,
        nodes=config.cluster.nodes,
        options=options,
        fsync=tcp.fsync,
        # What the cluster config sets that a real node does too.
        settings={
            "seed": config.cluster.seed,
            "snapshot_every": config.cluster.snapshot_every,
            "max_sessions": config.cluster.max_sessions,
            "session_ttl": config.cluster.session_ttl,
        },
        extra=extra,
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _host_busy() -> float:
    """CPU seconds the whole machine has been busy so far (/proc/stat; NaN elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cluster_statuses(path: Path, timeout: float = 2.0) -> list[dict[str, Any]]:
    return trio.run(gather_status, load_cluster_file(path), timeout)


def wait_for_service(path: Path, limit: float = 30.0) -> None:
    """Until a leader is known (or, for a leaderless protocol, every node is up)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = cluster_statuses(path, 1.0)
        if all(r["up"] for r in rows) and (
            any(r.get("role") == "leader" for r in rows)
            or all(r.get("leader") is None and "role" not in r for r in rows)
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the cluster in {path.parent} elected no leader within {limit:g} s")


class _Faults:
    """The run's crash/restart schedule, fired from the parent while loads run."""

    def __init__(self, cluster: LocalCluster, path: Path, faults: tuple[Fault, ...], t0: float):
        self.cluster = cluster
        self.path = path
        self.t0 = t0
        self.log: FaultLog = []
        self.pending: list[tuple[float, str, Fault, int | None]] = sorted(
            ((f.at, "fire", f, None) for f in faults), key=lambda item: item[0]
        )

    def _resolve(self, target: str) -> int | None:
        if target.isdigit():
            return int(target)
        rows = [r for r in cluster_statuses(self.path, 1.0) if r["up"]]
        leader = next((r["node"] for r in rows if r.get("role") == "leader"), None)
        if target == "leader":
            # A leaderless protocol: the lowest-numbered live node (as simulated runs do).
            return leader if leader is not None else (rows[0]["node"] if rows else None)
        followers = [r["node"] for r in rows if r["node"] != leader]
        return followers[0] if followers else None

    def due(self) -> float | None:
        return self.pending[0][0] if self.pending else None

    def fire_due(self) -> None:
        now = time.monotonic() - self.t0
        while self.pending and self.pending[0][0] <= now:
            at, what, fault, node = self.pending.pop(0)
            if what == "restart":
                if node is not None and not self.cluster.running(node):
                    self.cluster.start(node)
                self.log.append({"time": round(now, 4), "action": "restart", "node": node})
                continue
            node = self._resolve(fault.target) if fault.action == "crash" else int(fault.target)
            if fault.action == "crash" and node is not None:
                self.cluster.kill(node)
                self.log.append(
                    {"time": round(now, 4), "action": "crash", "node": node, "target": fault.target}
                )
                if fault.duration > 0:
                    self.pending.append((at + fault.duration, "restart", fault, node))
                    self.pending.sort(key=lambda item: item[0])
            elif fault.action == "restart" and node is not None:
                if not self.cluster.running(node):
                    self.cluster.start(node)
                self.log.append({"time": round(now, 4), "action": "restart", "node": node})


def run_loads(
    path: Path,
    folder: Path,
    *,
    processes: int,
    spec: dict[str, Any],
    duration: float,
    drain: float,
    on_tick: Callable[[float], None] | None = None,
    on_started: Callable[[list[int]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``processes`` load generators against the cluster of ``path``; their results.

    ``spec`` is what every process gets (``bench.tcpload``), plus its index,
    the common start (``START_DELAY`` from now) and where to write.
    ``on_tick(seconds since the start)`` is called every 20 ms while they run;
    ``on_started(pids)`` once, with the load processes' ids (to read their CPU time).
    Every process is killed if anything fails."""
    t0 = time.monotonic() + START_DELAY
    loads: list[subprocess.Popen[bytes]] = []
    outs = []
    try:
        for index in range(processes):
            out = folder / f"load-{index}.pickle"
            full = {
                **spec,
                "cluster": str(path),
                "index": index,
                "processes": processes,
                "start_at": t0,
                "drain": drain,
                "out": str(out),
            }
            spec_path = folder / f"load-{index}.json"
            spec_path.write_text(json.dumps(full))
            loads.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.tcpload", str(spec_path)],
                    stdin=subprocess.DEVNULL,
                    env=dict(os.environ),
                )
            )
            outs.append(out)
        if on_started is not None:
            on_started([proc.pid for proc in loads])
        end = t0 + duration + drain + 60.0
        while any(p.poll() is None for p in loads):
            if time.monotonic() > end:
                raise RuntimeError("load generators did not finish in time")
            if on_tick is not None:
                on_tick(time.monotonic() - t0)
            time.sleep(0.02)
        failed = [p.returncode for p in loads if p.returncode != 0]
        if failed:
            raise RuntimeError(f"a load generator failed (exit status {failed[0]})")
    finally:
        for proc in loads:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [pickle.loads(out.read_bytes()) for out in outs]


def run_tcp_one(
    config: RunConfig,
    protocol: str,
    *,
    progress: Callable[[float], None] | None = None,
) -> tuple[TcpRun, FaultLog, float]:
    """Run one protocol of ``config`` as a real cluster; (run, fault log, wall seconds)."""
    tcp = config.tcp
    workload = config.workload
    keep = Path(tcp.keep) / protocol if tcp.keep else None
    with tempfile.TemporaryDirectory(prefix="consensus-tcp-") as tmp:
        folder = keep if keep is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = _cluster_file(config, protocol, folder)
        started = time.perf_counter()
        with LocalCluster(path, log_dir=folder / "logs") as cluster:
            wait_for_service(path)
            faults = _Faults(cluster, path, config.faults, time.monotonic() + START_DELAY)
            total = workload.duration + config.drain

            pids = {n: cluster.pid(n) for n in range(config.cluster.nodes)}
            load_pids: list[int] = []
            # At warm-up and at duration: node CPU, load CPU, the machine's CPU.
            marks: list[tuple[dict[int, float], float, float]] = []
            statuses_before: list[dict[str, Any]] = []

            def tick(elapsed: float) -> None:
                nonlocal statuses_before
                if len(marks) < 2 and elapsed >= (workload.warmup, workload.duration)[len(marks)]:
                    marks.append(
                        (
                            {n: _cpu_seconds(pid) for n, pid in pids.items()},
                            sum(_cpu_seconds(pid) for pid in load_pids),
                            _host_busy(),
                        )
                    )
                    if len(marks) == 1:
                        statuses_before = cluster_statuses(path)
                faults.fire_due()
                if progress is not None:
                    progress(min(max(elapsed / total, 0.0), 1.0))

            spec = {
                "workload": attrs.asdict(workload),
                "window": tcp.window,
                "seed": config.cluster.seed,
                "timeout": tcp.client_timeout,
            }
            results = run_loads(
                path,
                folder,
                processes=tcp.processes,
                spec=spec,
                duration=workload.duration,
                drain=config.drain,
                on_tick=tick,
                on_started=load_pids.extend,
            )
            statuses = cluster_statuses(path)
        wall = time.perf_counter() - started
    cpu: dict[int, float] = {}
    load_cpu = 0.0
    host_cpu = float("nan")
    if len(marks) == 2:
        cpu = {n: marks[1][0][n] - marks[0][0][n] for n in marks[0][0]}
        load_cpu = marks[1][1] - marks[0][1]
        host_cpu = marks[1][2] - marks[0][2]
    run = TcpRun(
        protocol=protocol,
        node_ids=tuple(range(config.cluster.nodes)),
        history=_merge(results),
        statuses=statuses,
        workdir=str(keep or ""),
        cpu=cpu,
        load_cpu=load_cpu,
        host_cpu=host_cpu,
        statuses_before=statuses_before,
    )
    return run, faults.log, wall


def _merge(results: list[dict[str, Any]]) -> History:
    rows = sorted((row for result in results for row in result["ops"]), key=lambda r: r[4])
    history = History()
    for op_id, (client, seq, command, node, invoke, complete, status, result, retries) in enumerate(
        rows
    ):
        history.record(
            Operation(
                op_id=op_id,
                client=client,
                seq=seq,
                command=command,
                node=node,
                invoke=invoke,
                complete=complete,
                status=status,
                result=result,
                retries=retries,
            )
        )
    return history
