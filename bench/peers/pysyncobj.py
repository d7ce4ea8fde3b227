"""PySyncObj as a system for ``bench.peers.measure``: three processes on 127.0.0.1.

``run_pysyncobj_point(point)`` starts one ``pysyncobj_node`` process per node
on ports the OS just reported free, waits for a leader, hands each node its
share of the load, collects the nodes' JSON results, merges them into one
``PointResult`` and stops every process (also on failure or Ctrl-C, see
``bench.peers.procs``).

Sharing the load: closed-loop clients are split over the processes as
evenly as possible with the leader first (1 client: at the leader; 4 clients:
2, 1, 1; 12: 4, 4, 4), so an unloaded run always measures a commit at the
leader instead of a coin flip between leader and follower.  An open-loop
``rate`` is split evenly, as upstream's ``benchmarks.py`` does
(``rpsPerNode``).  Every node measures the same wall-clock window (the
parent sends one start time), so throughputs add up; latencies merge through
``merge_latencies``.

PySyncObj is used with its default configuration apart from the settings
named in ``pysyncobj_node.build_node`` (``bindAddress`` to stay on loopback;
``appendEntriesUseBatch=False`` only for the ``pysyncobj-nobatch`` system).

What in PySyncObj's configuration shapes the numbers
----------------------------------------------------
* ``appendEntriesUseBatch`` (default True): new entries leave the leader only
  with the next AppendEntries, sent every ``appendEntriesPeriod`` (0.1 s).  A
  command therefore commits about one period after it is submitted at the
  leader and two at a follower (which learns the commit index from the next
  AppendEntries), at any load: about 100 ms and 200 ms here.  A closed loop
  is phase-locked to that period, and an open loop at a low rate sees the
  same median: each tick sends AppendEntries *before* it moves queued
  commands into the log, so half the commands wait for a second period.
  Batching is what makes the throughput: tens of thousands of commands per
  AppendEntries, up to ``appendEntriesBatchSizeBytes`` (64 KiB) each.
* With ``appendEntriesUseBatch=False`` (upstream's delay benchmark) every
  command is sent at once and a pipe wakes the tick thread: about 0.1 ms per
  commit at the leader unloaded, but one AppendEntries per command, so the
  peak is lower and noisier.
* ``autoTickPeriod`` (0.05 s) is the tick thread's poll timeout: a command
  submitted from another thread waits for the next tick unless a socket
  event (or, unbatched, the pipe) wakes it.
* ``commandsQueueSize`` (100,000 per node): beyond it a submit fails at once
  with ``QUEUE_FULL``; the peak search counts such failures and stops.
* ``logCompactionMinEntries`` (5,000): the leader snapshots the state in
  memory that often, so the KV key space is kept small (``KEY_CHARS``).
* ``raftMinTimeout`` (0.4 s): a tick loop starved of CPU for that long lets a
  follower start an election; a point's ``notes["term_changed"]`` says so.
* ``connectionRetryTime`` (5 s): why the nodes bind in address order.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from bench.peers.measure import LoadPoint, PointResult, merge_latencies
from bench.peers.procs import NodeProcesses, PeerError, free_ports

__all__ = ["NODE_SCRIPT", "run_pysyncobj_point", "split_clients"]

NODE_SCRIPT = Path(__file__).with_name("pysyncobj_node.py")


def split_clients(total: int, nodes: int) -> list[int]:
    """``total`` clients over ``nodes`` processes in rank order, the first ranks getting more."""
    q, r = divmod(total, nodes)
    return [q + (1 if i < r else 0) for i in range(nodes)]


def run_pysyncobj_point(
    point: LoadPoint,
    *,
    nodes: int = 3,
    batch: bool = True,
    system: str = "pysyncobj",
    startup_timeout: float = 20.0,
    drain: float = 2.0,
    sample_cap: int = 100_000,
    seed: int = 0,
    node_command: Sequence[str] | None = None,
) -> PointResult:
    """Run ``point`` on a fresh PySyncObj cluster of ``nodes`` processes.

    ``batch=False`` sets ``appendEntriesUseBatch=False`` (upstream's delay
    benchmark).  ``node_command`` replaces ``[python, -P, pysyncobj_node.py]``
    (the node's arguments are appended), for tests.  Raises ``PeerError``
    when a node fails or a step times out; no process outlives the call.
    """
    t_begin = time.monotonic()
    addrs = [f"127.0.0.1:{port}" for port in free_ports(nodes)]
    # The node's own safety net: its whole life, with room for every step.
    deadline = 3 * startup_timeout + point.warmup + point.duration + drain + 10.0
    base = list(node_command) if node_command else [sys.executable, "-P", str(NODE_SCRIPT)]
    everyone = list(range(nodes))
    with NodeProcesses() as procs:
        for i, addr in enumerate(addrs):
            argv = [*base, "--self", addr, "--control", "stdin"]
            for other in addrs:
                if other != addr:
                    argv += ["--partner", other]
            argv += [
                "--window", str(point.window),
                "--command-size", str(point.command_size),
                "--duration", repr(point.duration),
                "--warmup", repr(point.warmup),
                "--drain", repr(drain),
                "--startup-timeout", repr(startup_timeout),
                "--deadline", repr(deadline),
                "--sample-cap", str(sample_cap),
                "--seed", str(seed * 1000 + i),
            ]  # fmt: skip
            if not batch:
                argv.append("--no-batch")
            procs.spawn(argv)
        procs.expect("HELLO", everyone, startup_timeout)
        # PySyncObj connects from the greater address (as a string) to the
        # smaller one: bind in ascending order so every first connect succeeds.
        for i in sorted(everyone, key=lambda i: addrs[i]):
            procs.send(i, "BIND")
            procs.expect("BOUND", [i], startup_timeout)
        ready = procs.expect("READY", everyone, startup_timeout)
        startup_s = time.monotonic() - t_begin
        seen = Counter(json.loads(r)["leader"] for r in ready.values())
        leader = seen.most_common(1)[0][0]
        order = sorted(everyone, key=lambda i: (addrs[i] != leader, addrs[i]))
        shares = split_clients(point.clients, nodes)
        start = time.time() + 0.1
        for rank, i in enumerate(order):
            go = {
                "start": start,
                "clients": shares[rank],
                "rate": None if point.rate is None else point.rate / nodes,
            }
            procs.send(i, "GO " + json.dumps(go))
        results = procs.expect("RESULT", everyone, point.warmup + point.duration + drain + 30.0)
        for i in everyone:
            procs.send(i, "STOP")
        procs.stop(grace=1.0)
    parsed = [json.loads(results[i]) for i in order]
    return merge_node_results(
        parsed,
        point,
        system=system,
        wall_s=time.monotonic() - t_begin,
        extra={"startup_s": round(startup_s, 3), "leader_votes": dict(seen)},
    )


def merge_node_results(
    results: Sequence[dict[str, Any]],
    point: LoadPoint,
    *,
    system: str = "pysyncobj",
    wall_s: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> PointResult:
    """One ``PointResult`` from the nodes' JSON records (sum counts, merge latencies)."""
    if not results:
        raise PeerError("no node results to merge")
    duration = results[0]["duration"]
    committed = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    p50, p90, p99 = merge_latencies([(r["ok"], r["samples_ms"]) for r in results])
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(r.get("fail_reasons", {}))
    notes: dict[str, Any] = {
        "batch": results[0].get("batch"),
        "outstanding_at_end": sum(r.get("outstanding", 0) for r in results),
        "fail_reasons": dict(reasons),
        "term_changed": any(r.get("term_start") != r.get("term_end") for r in results),
        "pysyncobj": results[0].get("pysyncobj"),
        "per_node": [
            {
                "node": r["self"],
                "leader": r.get("is_leader"),
                "clients": r.get("clients"),
                "committed": r["ok"],
                "p50_ms": r.get("p50_ms"),
            }
            for r in results
        ],
        **(extra or {}),
    }
    return PointResult(
        system=system,
        protocol="raft",
        nodes=len(results),
        command_size=point.command_size,
        clients=point.clients,
        window=point.window,
        offered_rate=point.rate,
        committed=committed,
        throughput=committed / duration if duration > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        failed=failed,
        wall_s=wall_s,
        duration=duration,
        notes=notes,
    )
