"""A load-generator process for real clusters: ``python -m bench.tcpload SPEC.json``.

Theory of operation
-------------------
The parent (``bench.tcprun``) starts ``processes`` of these, each with a spec
(a JSON file): the cluster file, this process's index, the shared start time
(``time.monotonic()``, which every process on one machine shares), the
workload, a seed, and where to write the result.  Each process:

1. connects one pipelined ``Client`` to the cluster and waits for the start;
2. runs its share of the load until ``duration``: in a closed loop,
   ``clients`` client tasks (this process's share) each keep ``window``
   operations outstanding, thinking ``think_time`` between them; in an open
   loop, operations arrive as a Poisson process at this process's share of
   ``rate``;
3. lets outstanding operations finish for up to ``drain`` seconds, marks
   the rest indeterminate, and writes every operation (times in seconds
   since the shared start) to ``out`` as a pickle.

Two kinds of operation: ``workload`` draws from a ``WorkloadConfig`` (reads,
writes, compare-and-set, over a key distribution) exactly as simulated runs
do; ``puts`` writes ``command_size``-character values to keys drawn
uniformly from 1,000 (the peer benchmark's commands): the operation's own
number, then random padding drawn once per process, so that making a command
costs the load generator as little as it can (at a peak it shares this
machine's cores with the nodes).  Values written are unique per operation.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from bench.workload import KeyChooser, WorkloadConfig, draw_command
from consensus.builders import builder
from consensus.checker.history import INFO, OK, History, Operation
from consensus.commands import Put
from consensus.runtime.cli import tune_gc
from consensus.runtime.client import Client, connect
from consensus.schema import structure

__all__ = ["main", "run_load"]


#: ``Put(key, value)``, positional and fast: one per operation.
_new_put = builder(Put)
#: How many keys a ``puts`` load draws ahead (and then uses in turn).
_KEY_DRAWS = 4096


def share(total: int, parts: int, index: int) -> int:
    """Process ``index``'s share of ``total`` split as evenly as possible."""
    return total // parts + (1 if index < total % parts else 0)


class _Tally:
    """What ``record = "latency"`` keeps, taken as each operation ends: the
    operations answered ``ok`` with their end inside the measured window
    ``[lo, hi)`` (counted, latencies in ms), and the others that started in
    it (failed).  ``live``: the operations not yet ended, by ``op_id``.

    Nothing outlives its operation.  A history of every operation would
    grow by hundreds of thousands of objects a run that the garbage
    collector rescans: at a peak that cost a load process a fifth of its CPU.
    """

    __slots__ = ("lo", "hi", "ok", "failed", "samples", "live")

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.ok = self.failed = 0
        self.samples: list[float] = []  # floats: not tracked by the collector
        self.live: dict[int, Operation] = {}

    def add(self, op: Operation) -> None:
        """``op`` ended (or was given up: status ``info``)."""
        if op.complete is not None and self.lo <= op.complete < self.hi:
            if op.status == OK:
                self.ok += 1
                self.samples.append((op.complete - op.invoke) * 1000.0)
        elif op.status != OK and self.lo <= op.invoke < self.hi:
            self.failed += 1


class _Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.index = int(spec["index"])
        self.processes = int(spec["processes"])
        self.start_at = float(spec["start_at"])
        self.workload: WorkloadConfig = structure(WorkloadConfig, dict(spec["workload"]))
        self.kind = spec.get("kind", "workload")
        self.window = int(spec.get("window", 1))
        self.command_size = int(spec.get("command_size", 16))
        self.drain = float(spec.get("drain", 2.0))
        self.rng = random.Random(f"{spec.get('seed', 0)}:tcpload:{self.index}")
        self.choose_key = KeyChooser(self.workload, self.rng)
        self.last_written: dict[str, str] = {}
        self.count = 0
        # The ``puts`` kind's keys (drawn ahead, used in turn) and padding.
        self._keys = [f"k{self.rng.randrange(1000)}" for _ in range(_KEY_DRAWS)]
        self._pad = "." + "".join(self.rng.choices("0123456789abcdef", k=self.command_size))
        # ``record = "history"``: every operation, in the client's history.
        # ``"latency"``: a tally taken as each ends, and no history.
        if spec.get("record", "history") == "latency":
            self.history: History | None = None
            self.tally: _Tally | None = _Tally(
                float(spec.get("measure_from", 0.0)), self.workload.duration
            )
        else:
            self.history, self.tally = History(), None
        # Operations started and not yet ended (callback-driven loads).
        self.outstanding = 0
        self.issuing_done = False
        self.finished = trio.Event()

    def now(self) -> float:
        return time.monotonic() - self.start_at

    def command(self) -> Any:
        self.count = count = self.count + 1
        value = f"p{self.index}.{count}"
        if self.kind == "puts":
            if len(value) < self.command_size:
                value = (value + self._pad)[: self.command_size]
            return _new_put(self._keys[count % _KEY_DRAWS], value)
        return draw_command(self.workload, self.rng, self.choose_key, self.last_written, value)

    async def run(self) -> None:
        w = self.workload
        overrides: dict[str, Any] = {"history": self.history, "clock": self.now}
        if "timeout" in self.spec:
            overrides["timeout"] = float(self.spec["timeout"])
        async with connect(self.spec["cluster"], **overrides) as client:
            # Open the connection to the leader before the clock starts.
            with trio.move_on_after(10.0):
                await client.status(client.node_ids[0])
            await trio.sleep(max(0.0, -self.now()))
            with trio.move_on_at(trio.current_time() + (w.duration - self.now()) + self.drain):
                async with trio.open_nursery() as nursery:
                    if w.mode == "closed":
                        clients = share(w.clients, self.processes, self.index)
                        for _ in range(clients * self.window):
                            if w.think_time:
                                nursery.start_soon(self._closed, client)
                            else:
                                self._chain(client)
                    else:
                        nursery.start_soon(self._open, client)
                    await self.finished.wait()
        self._give_up_unended()

    def _give_up_unended(self) -> None:
        """The run is over: operations still unanswered are indeterminate (``info``)."""
        unended = self.history if self.tally is None else list(self.tally.live.values())
        for op in unended:
            if op.status is None:
                op.status = INFO
        if self.tally is not None:
            for op in unended:
                self.tally.add(op)
            self.tally.live.clear()

    def _issue(self, client: Client, on_done: Callable[[Operation], None]) -> None:
        """Start the next command; ``on_done`` must begin with ``self._settle(op)``."""
        op = client.start(self.command(), on_done)
        if self.tally is not None and op.status is None:
            self.tally.live[op.op_id] = op

    def _settle(self, op: Operation) -> None:
        """An operation ended: tally it (``record = "latency"``)."""
        tally = self.tally
        if tally is not None and tally.live.pop(op.op_id, None) is not None:
            tally.add(op)

    async def _one(self, client: Client) -> None:
        ended = trio.Event()

        def done(op: Operation) -> None:
            self._settle(op)
            ended.set()

        self._issue(client, done)
        await ended.wait()

    async def _closed(self, client: Client) -> None:
        think = self.workload.think_time
        duration = self.workload.duration
        while self.now() < duration:
            await self._one(client)
            if think:
                await trio.sleep(think)

    def _chain(self, client: Client) -> None:
        """One closed-loop slot without a task: each answer issues the next."""
        self.outstanding += 1

        duration = self.workload.duration

        def done(op: Operation) -> None:
            self._settle(op)
            # An answered operation's end is the time now (one clock read less).
            now = op.complete if op.complete is not None else self.now()
            if now < duration:
                self._issue(client, done)
            else:
                self._ended()

        self._issue(client, done)

    def _ended_one(self, op: Operation) -> None:
        self._settle(op)
        self._ended()

    def _ended(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.issuing_done:
            self.finished.set()

    async def _open(self, client: Client) -> None:
        rate = self.workload.rate / self.processes
        duration = self.workload.duration
        next_at = trio.current_time()
        while self.now() < duration:
            next_at += self.rng.expovariate(rate)
            await trio.sleep_until(next_at)
            self.outstanding += 1
            self._issue(client, self._ended_one)
        self.issuing_done = True
        if self.outstanding == 0:
            self.finished.set()


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one load process's share (in this process); its result as plain data.

    ``record = "history"`` (default): every operation.  ``record = "latency"``:
    only what a throughput benchmark needs, for operations completed inside
    the measured window ``[measure_from, duration)``: counts of answered and
    failed operations and a uniform sample of at most ``sample_cap``
    latencies (ms)."""
    load = _Load(spec)
    trio.run(load.run)
    if spec.get("record", "history") == "latency":
        return _latencies(load, spec)
    ops = [
        (
            op.client,
            op.seq,
            op.command,
            op.node,
            op.invoke,
            op.complete,
            op.status,
            op.result,
            op.retries,
        )
        for op in load.history
    ]
    return {"index": load.index, "ops": ops}


def _latencies(load: _Load, spec: dict[str, Any]) -> dict[str, Any]:
    tally = load.tally
    assert tally is not None  # record = "latency"
    samples = tally.samples
    cap = int(spec.get("sample_cap", 100_000))
    if len(samples) > cap:
        samples = load.rng.sample(samples, cap)
    return {
        "index": load.index,
        "ok": tally.ok,
        "failed": tally.failed,
        "samples_ms": samples,
        "duration": tally.hi - tally.lo,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.tcpload SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    tune_gc()
    result = run_load(spec)
    Path(spec["out"]).write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
