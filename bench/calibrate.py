"""Calibration: measure what a node's work costs on this machine, as a ``[costs]`` table.

Theory of operation
-------------------
``python -m bench calibrate`` times the real code a node runs, here, and
writes the ``[costs]`` table the simulator charges (``consensus.costs``):

1. **Protocol inputs, records and applies, in a run.**  For each protocol a
   short simulation runs with the costs of the table it starts from (so
   nodes batch, pack and pipeline as under load) while the real code is
   timed with ``time.perf_counter``: the codec's ``decode`` and the
   replica's ``step`` of every peer message (by type, with its size and
   entry count), ``accept``/``accept_many`` (fitted to a cost per client
   request and one per proposal the host made: one per pack, or one per
   request in the run that does not pack), ``tick``,
   the state machine's ``apply`` per command, and every record appended to
   a real write-ahead log (``consensus.wal``, no fsync) beside the
   simulated storage.  The garbage collector is tuned as a node process
   tunes it (``consensus.runtime.cli.tune_gc``), so a probe pays for
   collections as often as a node does.  The run's virtual results are
   thrown away: only the wall-clock timings of the code count.  Each run
   happens twice, with 16- and 1,024-byte values, so that per-byte and
   per-entry costs separate.
2. **Encoding** each message type sent: the messages decoded in step 1 are
   encoded again, and the time fitted to their size.
3. **The runtime around it** (``consensus.runtime``): a client request's
   ``Submit`` decoded and its ``Reply`` built and encoded through the
   runtime codec; frames exchanged over a real loopback TCP connection with
   the framing and Trio calls the transport makes, within one process (a
   quarter of a round trip's CPU time is charged to sending a frame, a
   quarter to receiving one); the driver's loop (a Trio event set and
   waited for, a checkpoint) per batch; and the wake-up of an idle node:
   the CPU time of a round trip with another process (which sleeps in
   between) beyond its two frames.
4. **fsync**: the mean latency of appending a record and fsyncing it
   through the write-ahead log, one after the other, in the system's
   temporary directory (where ``bench run --tcp`` keeps its nodes' logs).
   The mean, not the median: a node's rate of fsyncs is one over it.  Then
   three logs doing the same at once, as a 3-node cluster on one machine
   does: the disk's time per fsync when kept busy (``fsync_serial``, the
   part of an fsync the device serves one at a time; about 60 of the
   110 us here), which the simulator charges nodes that share a disk
   (``costs.disks``).
5. **The rest of the runtime, end to end**: a real one-node cluster
   (``bench.tcprun``, no fsync, requests packed as by default) under a
   closed loop for a few seconds.  Its node process's CPU time per
   operation, less what the table so far charges per operation for the same
   run simulated, is what the runtime's client path costs beyond the parts
   timed above (connections, Trio tasks and wake-ups, system calls): it is
   added to every protocol's ``request`` cost.  The load generator's CPU
   time per operation is ``client`` (a client host's cost per operation).
6. **Waking up, end to end**: a real 3-node Raft cluster with one client
   on a closed loop, so that every batch of a follower is one message that
   woke an idle process.  A follower's CPU time per batch, less what the
   table so far charges per follower batch for the same run simulated, is
   what waking the runtime's tasks costs beyond step 3's echo (a reader, the
   driver and a writer task take turns per message, with their system
   calls): it is added to ``wakeup``.  Measured on this machine: about 70 us
   more per idle batch, which is most of an unloaded commit's latency.

Fitting: per input type, ``seconds = base + per_byte * size + per_entry *
entries`` by least squares over the timed calls, after dropping the slowest
2% (a garbage collection, the scheduler); a coefficient that comes out
negative is dropped and the fit redone without it.  Timings are CPU-bound
wall-clock times on a shared machine: run it when the machine is quiet, and
compare the table with the last one before shipping it, or take the median
of several runs (``--repeat``, ``combine``): one run's fsync or wake-up can
be a quarter off the next one's, minutes apart.

What it cannot see: the operating system's share of a real cluster's work
beyond the calls timed here (TCP on loopback, scheduling three node
processes and the load generators on the same cores).  The comparison with
real runs (README, ``notebooks/saturation.ipynb``) shows how much that is.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np

from bench.config import cost_preset
from bench.workload import Workload, WorkloadConfig
from consensus.codec import Codec
from consensus.commands import Put, Request
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.costs import CostConfig
from consensus.runtime.cli import tune_gc
from consensus.schema import structure
from consensus.sim.costrows import entry_counter
from consensus.sim.simulator import Simulator
from consensus.wal import DurableStorage

__all__ = ["calibrate", "combine", "measure_fsync", "to_toml"]

PROTOCOLS = ("raft", "multipaxos", "paxos")
#: Fits need this much spread to separate a per-byte or per-entry cost from noise.
MIN_BYTES_SPREAD = 512
MIN_ENTRIES_SPREAD = 2


@attrs.define
class _Samples:
    """Timed calls of one kind: (size in bytes, entries, seconds); ``field``: what
    ``entries`` counts (``consensus.costs.CostRow.entries``)."""

    rows: list[tuple[float, float, float]] = attrs.Factory(list)
    field: str = ""
    count: Callable[[Any], int] = lambda _: 0

    def add(self, size: float, entries: float, seconds: float) -> None:
        self.rows.append((size, entries, seconds))

    def first(self, value: Any) -> None:
        # The first instance seen decides what its type's entries are.
        names = set(attrs.fields_dict(type(value))) if attrs.has(type(value)) else set()
        if names & {"entries", "payloads", "accepted", "payload"}:
            self.field = "requests"
        elif "count" in names:
            self.field = "count"
        if self.field:
            self.count = entry_counter(type(value), self.field)


def _slowest_dropped(rows: list[tuple[float, float, float]]) -> Any:
    """The rows (x1, x2, seconds) as an array, the slowest 2% dropped (a garbage
    collection, the scheduler)."""
    data = np.array(rows, dtype=float)
    return data[data[:, 2] <= np.quantile(data[:, 2], 0.98)]


def _nonnegative_fit(data: Any, use: list[int], intercept: bool) -> tuple[float, float, float]:
    """``(intercept, slope of column 0, slope of column 1)``: seconds (column 2)
    fitted by least squares to the columns in ``use``; a column whose slope comes
    out negative is dropped and the fit redone without it."""
    y = data[:, 2]
    ones = [np.ones(len(y))] if intercept else []
    coef = np.zeros(0)
    while use or intercept:
        x = np.column_stack(ones + [data[:, i] for i in use])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        negative = [i for i, c in zip(use, coef[len(ones) :], strict=True) if c < 0]
        if not negative:
            break
        use = [i for i in use if i != negative[0]]
    result = [max(float(coef[0]), 0.0) if intercept else 0.0, 0.0, 0.0]
    for i, c in zip(use, coef[len(ones) :], strict=True):
        result[1 + i] = float(c)
    return result[0], result[1], result[2]


def fit(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """``(base, per_byte, per_entry)`` fitted to (size, entries, seconds) rows; a
    size or an entry count that hardly varies gets no coefficient."""
    if not rows:
        return 0.0, 0.0, 0.0
    data = _slowest_dropped(rows)
    spread = (MIN_BYTES_SPREAD, MIN_ENTRIES_SPREAD)
    use = [i for i in (0, 1) if np.ptp(data[:, i]) >= spread[i]]
    return _nonnegative_fit(data, use, intercept=True)


def fit_requests(rows: list[tuple[int, int, float]]) -> tuple[float, float]:
    """``(per request, per proposal)`` fitted to (requests, proposals, seconds) rows
    of accept calls, without an intercept (a call's own overhead is the batch's)."""
    _, per_request, per_proposal = _nonnegative_fit(_slowest_dropped(rows), [0, 1], intercept=False)
    return per_request, per_proposal


def per_command(applies: list[tuple[int, float]]) -> float:
    """Seconds per command over (commands, seconds) calls, the slowest 2% of
    calls (per command) dropped, as the fits drop theirs."""
    calls = [(n, t) for n, t in applies if n]
    if not calls:
        return 0.0
    cut = np.quantile([t / n for n, t in calls], 0.98)
    kept = [(n, t) for n, t in calls if t / n <= cut]
    return sum(t for _, t in kept) / sum(n for n, _ in kept)


@contextmanager
def _collector_as_in_a_node() -> Iterator[None]:
    """The garbage collector tuned as a node process tunes it (``tune_gc``), so
    probes pay for collections as often as a node does; restored after."""
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class _Probe:
    """Times the real code of one simulation's nodes (see step 1)."""

    def __init__(self, sim: Simulator, wal_dir: Path) -> None:
        self.sim = sim
        self.protocol = sim.spec.name
        self.inputs: dict[str, _Samples] = defaultdict(_Samples)
        self.records: dict[str, _Samples] = defaultdict(_Samples)
        # Per accept call: (requests, proposals made, seconds).
        self.requests: list[tuple[int, int, float]] = []
        self.ticks: list[float] = []
        self.applies: list[tuple[int, float]] = []
        self.sample_messages: dict[str, list[Any]] = defaultdict(list)
        self._decoded: tuple[int, float] = (0, 0.0)
        codec = sim._codec
        servers = sim._servers
        assert servers is not None and codec is not None
        self.codec = codec
        decode = codec.decode

        def timed_decode(payload: bytes) -> Any:
            started = time.perf_counter()
            message = decode(payload)
            self._decoded = (len(payload), time.perf_counter() - started)
            return message

        servers._decode = timed_decode
        for node in sim.node_ids:
            self._wrap(
                sim.host(node), DurableStorage(wal_dir / f"{node}.wal", codec, fsync="never")
            )

    def _wrap(self, host: Any, shadow: DurableStorage) -> None:
        replica, sm, storage = host.replica, host.sm, host.storage
        step, tick, apply = replica.step, replica.tick, sm.apply
        accept, accept_many, append = host.accept, host.accept_many, storage.append
        perf = time.perf_counter

        def timed_step(now: float, src: int, message: Any) -> Any:
            started = perf()
            out = step(now, src, message)
            took = perf() - started
            size, decoding = self._decoded
            name = type(message).__name__
            samples = self.inputs[name]
            if not samples.rows:
                samples.first(message)
            samples.add(size, samples.count(message), took + decoding)
            kept = self.sample_messages[name]
            if len(kept) < 300:
                kept.append(message)
            return out

        def timed_tick(now: float) -> Any:
            started = perf()
            out = tick(now)
            self.ticks.append(perf() - started)
            return out

        inside = [False]  # accept_many calls accept: time the outer call only

        def timed_accept(now: float, request: Request, waiter: Any) -> Any:
            if inside[0]:
                return accept(now, request, waiter)
            proposals = host.proposals
            started = perf()
            out = accept(now, request, waiter)
            self.requests.append((1, host.proposals - proposals, perf() - started))
            return out

        def timed_accept_many(now: float, items: list[Any]) -> Any:
            inside[0] = True
            proposals = host.proposals
            started = perf()
            try:
                out = accept_many(now, items)
            finally:
                inside[0] = False
            self.requests.append((len(items), host.proposals - proposals, perf() - started))
            return out

        def timed_apply(index: int, payload: Any) -> Any:
            started = perf()
            result = apply(index, payload)
            self.applies.append((len(result), perf() - started))
            return result

        def timed_append(records: Any) -> None:
            append(records)
            for record in records:  # one at a time, each through the real log
                started = perf()
                shadow.append([record])
                took = perf() - started
                name = type(record).__name__
                samples = self.records[name]
                if not samples.rows:
                    samples.first(record)
                samples.add(0, samples.count(record), took)

        replica.step, replica.tick, sm.apply = timed_step, timed_tick, timed_apply
        host.accept, host.accept_many = timed_accept, timed_accept_many
        host.storage = _TimedStorage(storage, timed_append)


class _TimedStorage:
    """A node's storage with every append also timed through a real log."""

    def __init__(self, storage: Any, append: Callable[[Any], None]) -> None:
        self._storage = storage
        self.append = append
        self.stats = storage.stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _run_probe(
    protocol: str, seed_costs: CostConfig, value_size: int, seconds: float, wal_dir: Path
) -> _Probe:
    config = ClusterConfig(
        protocol=protocol,
        nodes=3,
        seed=1,
        wire="bytes",
        network=NetworkConfig(delay=Delay.uniform(0.0001, 0.0003)),
        costs=seed_costs,
        pack_proposals=0 if value_size > 100 else 64,
    )
    sim = Simulator(config, record_applied=False)
    probe = _Probe(sim, wal_dir)
    workload = WorkloadConfig(
        clients=64, duration=seconds, warmup=0.0, read_fraction=0.2, value_size=value_size
    )
    Workload(sim, workload).start()
    sim.run_for(seconds)
    return probe


def _encode_costs(codec: Codec, messages: list[Any]) -> _Samples:
    samples = _Samples()
    perf = time.perf_counter
    for message in messages:
        if not samples.rows:
            samples.first(message)
        started = perf()
        for _ in range(5):
            frame = codec.encode_frame(message)
        samples.add(len(frame), samples.count(message), (perf() - started) / 5)
    return samples


def _runtime_costs(rounds: int = 2000) -> dict[str, float]:
    """Step 3: the client path through the runtime codec, framing and Trio."""
    import trio

    from consensus.runtime.wire import Replies, Reply, Submit, runtime_codec

    codec = runtime_codec()
    perf = time.process_time
    requests = tuple(
        Request(client_id=7, seq=i, command=Put(key=f"k{i % 100}", value="v" * 16))
        for i in range(16)
    )
    frame = codec.encode(Submit(requests=requests))
    started = perf()
    for _ in range(rounds // 16):
        codec.decode(frame)
    request = (perf() - started) / (rounds // 16 * 16)
    started = perf()
    for _ in range(rounds // 64):
        replies = tuple(Reply(client_id=7, seq=i, ok=True, result=None) for i in range(64))
        codec.encode_frame(Replies(replies=replies))
    reply = (perf() - started) / (rounds // 64 * 64)

    async def ping_pong() -> float:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, _echo, listeners)
            result = await _ping(port, rounds)
            nursery.cancel_scope.cancel()
        return result / 4  # a round trip: two frames sent, two received

    frame_cost = trio.run(ping_pong)

    async def driver_loop() -> float:
        # Two tasks waking each other through Events, each with a checkpoint: per
        # wake-up, about what NodeRunner's driver pays to wait for input once a batch.
        events = [trio.Event(), trio.Event()]

        async def side(me: int) -> None:
            for _ in range(rounds):
                await events[me].wait()
                events[me] = trio.Event()
                events[1 - me].set()
                await trio.lowlevel.checkpoint()

        started = perf()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, 0)
            nursery.start_soon(side, 1)
            events[0].set()
        return (perf() - started) / (2 * rounds)

    loop = trio.run(driver_loop)
    wakeup = max(_cross_process_round_trip(rounds) - 2 * frame_cost, 0.0)
    return {
        "request": request,
        "reply": reply,
        "frame": frame_cost,
        "loop": loop,
        "wakeup": wakeup,
    }


def _echo_payload() -> bytes:
    from consensus.runtime.wire import Reply, runtime_codec

    return runtime_codec().encode_frame(Reply(client_id=1, seq=1, ok=True, result="x" * 16))


async def _echo(stream: Any) -> None:
    """Answer every frame received on ``stream`` with one frame (after decoding it)."""
    from consensus.runtime.tcp import FramedStream
    from consensus.runtime.wire import runtime_codec

    codec, payload = runtime_codec(), _echo_payload()
    framed = FramedStream(stream, 1 << 20)
    while True:
        frames = await framed.receive_frames()
        if not frames:
            return
        for body in frames:
            codec.decode(body)
        await framed.send(payload)


async def _ping(port: int, rounds: int) -> float:
    """CPU seconds per round trip with the echo server on ``port``."""
    import trio

    from consensus.runtime.tcp import FramedStream
    from consensus.runtime.wire import runtime_codec

    codec, payload = runtime_codec(), _echo_payload()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    framed = FramedStream(stream, 1 << 20)
    started = time.process_time()
    for _ in range(rounds):
        await framed.send(payload)
        for body in await framed.receive_frames():
            codec.decode(body)
    took = time.process_time() - started
    await stream.aclose()
    return took / rounds


def serve_echo() -> None:
    """The echo server as a process of its own: prints its port, serves until killed."""
    import trio

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(_echo, listeners)

    trio.run(main)


def _cross_process_round_trip(rounds: int) -> float:
    """CPU seconds one process spends per round trip with a peer process: a frame
    sent, one received, and waking up in between (it sleeps while the peer works)."""
    import subprocess
    import sys

    import trio

    script = "from bench.calibrate import serve_echo; serve_echo()"
    echo = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        return trio.run(_ping, port, rounds)
    finally:
        echo.kill()
        echo.wait()


def measure_fsync(directory: str | None = None, rounds: int = 300, writers: int = 1) -> float:
    """Step 4: the mean seconds per small append + fsync through the WAL, ``rounds``
    of them one after the other in each of ``writers`` logs syncing at once (a
    thread each: an fsync releases the GIL).  One writer: an fsync's latency.
    Three, as a cluster's nodes on one machine: the disk's time per fsync when
    kept busy, the part it serves one at a time (``costs.fsync_serial``)."""
    import threading

    from consensus.wal import WriteAheadLog

    with tempfile.TemporaryDirectory(dir=directory, prefix="calibrate-") as tmp:
        wals = [WriteAheadLog(Path(tmp) / f"fsync-{i}.wal", fsync="always") for i in range(writers)]
        start = threading.Barrier(writers + 1)

        def write(wal: WriteAheadLog) -> None:
            start.wait()
            for i in range(rounds):
                wal.append([b"r" * 100 + str(i).encode()])
                wal.sync()

        threads = [threading.Thread(target=write, args=(wal,)) for wal in wals]
        for thread in threads:
            thread.start()
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        for wal in wals:
            wal.close()
    return elapsed / (writers * rounds)


#: Loopback TCP as the simulator models it: 30 us one way on average, with
#: jitter (a constant delay phase-locks light loads; bench/configs/validate.toml
#: models it the same way).
LOOPBACK_DELAY = {"kind": "uniform", "low": 0.00001, "high": 0.00005}


def _real_and_simulated(
    table: dict[str, Any], seconds: float, *, nodes: int, workload: dict[str, Any], **costs: Any
) -> dict[str, Any]:
    """The same Raft cluster and closed loop, once as real processes (no fsync,
    packing as by default) and once simulated with ``table`` (plus ``costs``) on
    a loopback-like network: ``{"real": Results, "simulated": Results}``."""
    from bench.runner import run

    config = {
        "protocols": ["raft"],
        "cluster": {"nodes": nodes, "seed": 1, "pack_proposals": 256},
        "costs": {
            "preset": "off",
            **{k: v for k, v in table.items() if k not in ("note", "end_to_end")},
            **costs,
        },
        "workload": {**workload, "duration": seconds + 1.0, "warmup": 1.0},
        "tcp": {"processes": 1, "fsync": "never", "pack_proposals": 256},
        "drain": 0.5,
    }
    return {
        "real": run({**config, "network": {"kind": "tcp"}}),
        "simulated": run({**config, "network": {"delay": LOOPBACK_DELAY}}),
    }


def _end_to_end(table: dict[str, Any], seconds: float = 3.0) -> dict[str, float]:
    """Step 5: a real one-node cluster's CPU per operation, node and client, and
    what the table charges per operation for the same run simulated."""
    per_op = {}
    runs = _real_and_simulated(table, seconds, nodes=1, workload={"clients": 64})
    for label, results in runs.items():
        summary, nodes = results.summary.iloc[0], results.nodes.iloc[0]
        ops = summary["completed_per_s"] * seconds
        per_op[f"{label}_node"] = nodes["cpu_util"] * seconds / ops
        per_op[f"{label}_client"] = summary["client_cpu"] * seconds / ops
    return per_op


def _idle_batches(table: dict[str, Any], seconds: float = 3.0) -> dict[str, float]:
    """Step 6: a real 3-node cluster with one client: CPU seconds per batch of its
    followers (each batch one AppendEntries at an idle node), and what the table
    charges per batch for the same run simulated."""
    per_batch = {}
    runs = _real_and_simulated(
        table, seconds, nodes=3, workload={"clients": 1, "read_fraction": 0}, client_hosts=1
    )
    for label, results in runs.items():
        nodes = results.nodes.sort_values("cpu_util")
        followers = nodes.iloc[:-1]  # the busiest node is the leader
        per_batch[f"{label}_follower_batch"] = float(
            (followers["cpu_util"] / followers["batches_per_s"]).mean()
        )
    return per_batch


def calibrate(
    protocols: tuple[str, ...] = PROTOCOLS,
    *,
    seconds: float = 1.0,
    start: str = "default",
    end_to_end: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure this machine; returns the ``[costs]`` table (plain data, see ``to_toml``).

    ``start``: the cost preset (or path) the probe runs use, so that they
    batch as a loaded cluster does; ``seconds``: simulated seconds per run;
    ``end_to_end``: run steps 5 and 6 (real processes, a few seconds each).
    The table's ``end_to_end`` entry (not a cost; ``to_toml`` writes it as
    comments) keeps their measurements.
    """
    say = progress or (lambda _: None)
    seed_costs = structure(CostConfig, cost_preset(start), path="costs")
    inputs: dict[str, dict[str, Any]] = {}
    records: dict[str, dict[str, Any]] = {}
    sends: dict[str, dict[str, Any]] = {}
    requests: list[float] = []
    proposes: list[float] = []
    ticks: list[float] = []
    applies: list[tuple[int, float]] = []
    for protocol in protocols:
        samples: dict[str, _Samples] = defaultdict(_Samples)
        record_samples: dict[str, _Samples] = defaultdict(_Samples)
        proto_requests: list[tuple[int, int, float]] = []
        proto_ticks: list[float] = []
        messages: dict[str, list[Any]] = defaultdict(list)
        codec: Codec | None = None
        for value_size in (16, 1024):
            say(f"{protocol}: timing a run with {value_size}-byte values")
            with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp, _collector_as_in_a_node():
                probe = _run_probe(protocol, seed_costs, value_size, seconds, Path(tmp))
            codec = probe.codec
            for into, got_all in ((samples, probe.inputs), (record_samples, probe.records)):
                for name, got in got_all.items():
                    into[name].field = got.field
                    into[name].rows.extend(got.rows)
            proto_requests.extend(probe.requests)
            proto_ticks.extend(probe.ticks)
            applies.extend(probe.applies)
            for name, kept in probe.sample_messages.items():
                messages[name].extend(kept)
        for name, got in sorted(samples.items()):
            inputs[f"{protocol}.{name}"] = _fitted(got)
        for name, got in sorted(record_samples.items()):
            records[f"{protocol}.{name}"] = _fitted(got, sizes=False)
        if proto_requests:
            per_request, per_proposal = fit_requests(proto_requests)
            inputs[f"{protocol}.request"] = {"base": per_request}
            inputs[f"{protocol}.propose"] = {"base": per_proposal}
            requests.append(per_request)
            proposes.append(per_proposal)
        if proto_ticks:
            tick = statistics.median(proto_ticks)
            inputs[f"{protocol}.tick"] = {"base": tick}
            ticks.append(tick)
        assert codec is not None
        say(f"{protocol}: timing the encoding of what it sends")
        for name, kept in sorted(messages.items()):
            sends[f"{protocol}.{name}"] = _fitted(_encode_costs(codec, kept))
    say("the runtime: client requests, replies, TCP frames, the driver loop")
    runtime = _runtime_costs()
    say("fsync through the write-ahead log, alone and three at once")
    fsync = measure_fsync()
    fsync_serial = min(measure_fsync(writers=3), fsync)
    apply = per_command(applies)
    frame = runtime["frame"]
    # A peer message is also a frame the transport received, or wrote.
    for key, row in (*inputs.items(), *sends.items()):
        if not key.endswith((".request", ".propose", ".tick")):
            row["base"] += frame
    for key, row in inputs.items():
        if key.endswith(".request"):
            row["base"] += runtime["request"]

    def median(rows: dict[str, dict[str, Any]], skip: tuple[str, ...] = ()) -> float:
        values = [row["base"] for key, row in rows.items() if not key.endswith(skip)]
        return statistics.median(values) if values else 0.0

    table: dict[str, Any] = {
        "note": (
            f"measured by python -m bench calibrate on {platform.node() or 'this machine'},"
            f" {date.today().isoformat()}, Python {platform.python_version()}"
        ),
        "batch": runtime["loop"],
        "wakeup": runtime["wakeup"],
        "message": median(inputs, (".request", ".propose", ".tick")),
        "message_per_byte": 0.0,
        "request": (statistics.median(requests) if requests else 0.0) + runtime["request"],
        "propose": statistics.median(proposes) if proposes else 0.0,
        "tick": statistics.median(ticks) if ticks else 0.0,
        "send": median(sends),
        "send_per_byte": 0.0,
        "reply": runtime["reply"],
        "apply": apply,
        "record": median(records),
        "fsync": fsync,
        "fsync_serial": fsync_serial,
        "bandwidth": 0.0,
        "client": 0.0,
        "inputs": inputs,
        "sends": sends,
        "records": records,
    }
    if end_to_end:
        say("the runtime end to end: a real one-node cluster")
        measured = _end_to_end(table)
        extra = max(measured["real_node"] - measured["simulated_node"], 0.0)
        table["request"] += extra
        for key, row in inputs.items():
            if key.endswith(".request"):
                row["base"] += extra
        table["client"] = measured["real_client"]
        say("the runtime end to end: a real 3-node cluster with one client")
        idle = _idle_batches(table)
        table["wakeup"] += max(idle["real_follower_batch"] - idle["simulated_follower_batch"], 0.0)
        table["end_to_end"] = {**measured, **idle}
    return table


_TERMS = ("base", "per_byte", "per_entry")


def combine(tables: list[dict[str, Any]]) -> dict[str, Any]:
    """One table from several ``calibrate`` runs: every number their median.

    A row is the median of the runs that have it (a run may not see a rare
    message type); a term that a run's fit dropped (a per-byte or per-entry
    cost that came out negative) counts as zero there, and a term whose median
    is zero is left out, as ``calibrate`` leaves it out.
    """
    if not tables:
        raise ValueError("combine: no tables")
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    combined: dict[str, Any] = {"note": f"{first['note']}, median of {len(tables)} runs"}
    for key, value in first.items():
        if isinstance(value, (int, float)):
            combined[key] = statistics.median(float(t.get(key, 0.0)) for t in tables)
    for group in ("inputs", "sends", "records"):
        names = sorted({name for t in tables for name in t[group]})
        rows: dict[str, Any] = {}
        for name in names:
            seen = [t[group][name] for t in tables if name in t[group]]
            row: dict[str, Any] = {}
            for term in _TERMS:
                value = statistics.median(float(r.get(term, 0.0)) for r in seen)
                if value or term == "base":
                    row[term] = value
            entries = next((r["entries"] for r in seen if r.get("entries")), None)
            if "per_entry" in row and entries:
                row["entries"] = entries
            else:
                row.pop("per_entry", None)
            rows[name] = row
        combined[group] = rows
    measured = [t["end_to_end"] for t in tables if t.get("end_to_end")]
    if measured:
        combined["end_to_end"] = {
            key: statistics.median(m[key] for m in measured if key in m) for key in measured[0]
        }
    return combined


def _fitted(samples: _Samples, sizes: bool = True) -> dict[str, Any]:
    # A cost row fitted to the samples, with only the terms the fit kept.
    base, per_byte, per_entry = fit(samples.rows)
    row: dict[str, Any] = {"base": base}
    if sizes and per_byte:
        row["per_byte"] = per_byte
    if samples.field and per_entry:
        row.update(per_entry=per_entry, entries=samples.field)
    return row


def _number(value: float) -> str:
    return f"{value:.3e}" if value else "0.0"


def _row(row: dict[str, Any]) -> str:
    parts = []
    for key in _TERMS:
        if row.get(key):
            parts.append(f"{key} = {_number(row[key])}")
    if row.get("entries"):
        parts.append(f'entries = "{row["entries"]}"')
    return "{ " + ", ".join(parts or ["base = 0.0"]) + " }"


COMMENTS = {
    "batch": "per batch of inputs: the driver's loop (a Trio wake-up and checkpoint)",
    "wakeup": "per batch of an idle node or client host: waking its process and tasks",
    "message": "per peer message of a type without a row below",
    "message_per_byte": "",
    "request": "per client request (rows below): Submit decoding + the replica's accept",
    "propose": "per proposal for client requests (rows below): one per pack, or per request",
    "tick": "per timer tick",
    "send": "per message sent of a type without a row below",
    "send_per_byte": "",
    "reply": "per client answer: Reply built and encoded",
    "apply": "per command applied to the key-value store",
    "record": "per record persisted (types without a row below)",
    "fsync": "seconds per fsync through the write-ahead log (the node waits)",
    "fsync_serial": "seconds of it one disk serves at a time, when nodes share it (disks)",
    "bandwidth": "bytes/s a node sends; 0: unlimited (loopback). 1.25e8 is 1 Gbit/s",
    "client": "per operation, on a client's host (the load generator's CPU)",
}


def to_toml(table: dict[str, Any]) -> str:
    """The table as a ``[costs]`` TOML document (``cost_preset`` reads it back)."""
    lines = [
        "# What a node's work costs on one machine, for the simulator (consensus.costs).",
        "# Written by `python -m bench calibrate`; re-run it to measure this machine:",
        "#   python -m bench calibrate --repeat 3 --out bench/configs/costs-default.toml",
        "# Every number is CPU seconds, except fsync (seconds) and bandwidth (bytes/s).",
        "",
        "[costs]",
        f'note = "{table["note"]}"',
    ]
    for key, comment in COMMENTS.items():
        line = f"{key} = {_number(float(table.get(key, 0.0)))}"
        lines.append(f"{line:<32}# {comment}" if comment else line)
    measured = table.get("end_to_end")
    if measured:
        lines += [
            "# A real one-node cluster, CPU seconds per operation: node"
            f" {measured['real_node']:.3e} (simulated before the runtime's share was added:"
            f" {measured['simulated_node']:.3e}), load generator {measured['real_client']:.3e}.",
        ]
        if "real_follower_batch" in measured:
            lines += [
                "# A real 3-node cluster with one client, CPU seconds per follower batch:"
                f" {measured['real_follower_batch']:.3e} (simulated before the difference was"
                f" added to wakeup: {measured['simulated_follower_batch']:.3e}).",
            ]
    lines += ["", "# Per peer message type: decoding + the replica's step + receiving the frame."]
    lines.append("[costs.inputs]")
    for key in sorted(table["inputs"]):
        lines.append(f'"{key}" = {_row(table["inputs"][key])}')
    lines += ["", "# Per message type sent: encoding + the transport's framing and TCP send."]
    lines.append("[costs.sends]")
    for key in sorted(table["sends"]):
        lines.append(f'"{key}" = {_row(table["sends"][key])}')
    lines += ["", "# Per record type: encoding + writing it to the write-ahead log."]
    lines.append("[costs.records]")
    for key in sorted(table["records"]):
        lines.append(f'"{key}" = {_row(table["records"][key])}')
    return "\n".join(lines) + "\n"


def write(table: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(table))
    return path


def _check(table: dict[str, Any]) -> CostConfig:
    """The table as the simulator will read it (validates every key)."""
    return structure(CostConfig, {k: v for k, v in table.items()}, path="costs")
