"""One PySyncObj node with its share of the load: one OS process per node.

Run by ``bench.peers.pysyncobj.run_pysyncobj_point`` (three of these on
127.0.0.1), or by hand::

    python -m bench.peers.pysyncobj_node --self 127.0.0.1:4321 \\
        --partner 127.0.0.1:4322 --partner 127.0.0.1:4323 --clients 1 --duration 5

Theory of operation
-------------------
This is PySyncObj's own benchmark shape (``benchmarks/testobj.py``): every
node process holds a ``SyncObj`` and submits its share of the commands through
its own replicated method, ``obj.put(value, callback=...)``, so a follower's
commands travel to the leader and back inside PySyncObj.  The replicated
method is a KV put of the command string; a command is a random hex string of
``command_size`` characters, as upstream's ``getRandStr``.

Load models (the same ones ``bench.peers.measure`` drives any system with):

* closed loop: ``clients`` submitters in this process, each keeping ``window``
  commands outstanding; a callback (PySyncObj runs it on its tick thread)
  records the latency and submits the next command at once.  A failed command
  is resubmitted by the main thread a few ms later, never from inside the
  failing call (PySyncObj reports ``QUEUE_FULL`` synchronously, so an
  immediate resubmit could recurse without bound).
* open loop: ``rate`` commands/s from the main thread, paced every 5 ms (each
  burst carries what fell due since the last one, so bursts stay within
  10 ms unless the process itself stalls), whatever the completions do.

Latency is ``time.perf_counter()`` from the submit call to the callback.  A
command counts in the measurement when its callback arrives inside the
window ``[start + warmup, start + warmup + duration)``; submitting stops at
the window's end and outstanding commands drain for at most ``--drain`` s.
Latency samples are kept in a uniform reservoir of at most ``--sample-cap``
values (Algorithm R, seeded), so a long run has bounded memory and the
parent can merge the nodes' samples with weights ``ok / len(samples)``.

Control (``--control stdin``, what the parent uses; one line each way)::

    node -> parent   HELLO {"self": addr}            imported, not yet bound
    parent -> node   BIND                            construct SyncObj now
    node -> parent   BOUND {"self": addr}            port bound
    node -> parent   READY {"self", "leader", ...}   leader known, peers connected
    parent -> node   GO {"start": epoch s, "clients": k, "rate": r|null}
    node -> parent   RESULT {...}                    the measurement, one JSON line
    parent -> node   STOP (or EOF)                   exit

Binding is staged because PySyncObj connects only from the greater address to
the smaller one and retries a refused connection after ``connectionRetryTime``
(5 s): binding in ascending address order makes every first connect succeed
without changing that setting.  Only after RESULT does a node wait for STOP,
so no node leaves while another still needs its vote to commit.

Robustness: the node exits by itself (``os._exit``) at a hard deadline
(``--deadline`` s after it started), and when its standard input reaches EOF
(the parent is gone).  It imports nothing from this project, only the standard
library and pysyncobj, so the parent can start it as a plain script without
importing ``bench`` (half a second of CPU per process on this machine).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import sys
import threading
import time
from array import array
from collections import Counter, deque
from typing import Any

# A bounded key space (16**3 hex keys) keeps PySyncObj's periodic in-memory
# log compaction (every 5,000 entries by default) small and steady.
KEY_CHARS = 3
PACE_S = 0.005


def _emit(tag: str, payload: dict[str, Any] | None = None) -> None:
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _die_at(deadline: float, code: int) -> None:
    # The hard deadline: whatever the node is doing (a hung election, a parent
    # that never says STOP), the process ends.
    time.sleep(max(0.0, deadline - time.monotonic()))
    sys.stderr.write("pysyncobj_node: hard deadline reached, exiting\n")
    sys.stderr.flush()
    os._exit(code)


class Control:
    """The parent's commands from stdin, read on a daemon thread; EOF ends the process."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            with self._cond:
                self._lines.append(line.strip())
                self._cond.notify_all()
        os._exit(4)  # the parent closed our stdin or died: nobody will collect a result

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the next line, which must start with ``word``."""
        end = time.monotonic() + timeout
        with self._cond:
            while not self._lines:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {word} from the parent within {timeout:g}s")
                self._cond.wait(left)
            line = self._lines.popleft()
        head, _, rest = line.partition(" ")
        if head != word:
            raise RuntimeError(f"expected {word} from the parent, got {line!r}")
        return rest


class Recorder:
    """Counts and latency samples of the commands answered inside the window."""

    def __init__(self, t0: float, t1: float, cap: int, seed: int) -> None:
        self.t0 = t0  # perf_counter() at the window's start
        self.t1 = t1  # Invariant: t0 <= t1
        self.cap = cap
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.samples = array("d")  # ms; Invariant: len(samples) <= cap
        self.ok = 0  # in the window; Invariant: len(samples) == min(ok, cap)
        self.failed = 0
        self.fail_reasons: Counter[int] = Counter()
        self.submitted = 0  # over the whole run, warm-up and drain included
        self.answered = 0

    def submitted_one(self) -> None:
        with self._lock:
            self.submitted += 1

    def answered_one(self, t_submit: float, t_done: float, err: int) -> None:
        with self._lock:
            self.answered += 1
            if not (self.t0 <= t_done < self.t1):
                return
            if err != 0:
                self.failed += 1
                self.fail_reasons[err] += 1
                return
            self.ok += 1
            ms = (t_done - t_submit) * 1000.0
            if len(self.samples) < self.cap:
                self.samples.append(ms)
            else:
                j = self._rng.randrange(self.ok)
                if j < self.cap:
                    self.samples[j] = ms

    @property
    def outstanding(self) -> int:
        return self.submitted - self.answered


def _percentile(sorted_values: list[float], q: float) -> float | None:
    # Nearest rank, as bench.peers.measure.weighted_percentiles with equal weights.
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_node(self_addr: str, partners: list[str], *, batch: bool) -> Any:
    # Run as a script, this file's folder comes first on sys.path, and its
    # sibling bench/peers/pysyncobj.py would shadow the real package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KVNode(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            conf = SyncObjConf(
                # PySyncObj binds 0.0.0.0 unless told otherwise; the benchmark
                # must stay on the loopback address.
                bindAddress=self_addr,
                # Already the default; stated because a fixed 3-node cluster is
                # what both systems are measured as (no membership commands).
                dynamicMembershipChange=False,
                # The default (True) batches commands into one AppendEntries
                # per appendEntriesPeriod (0.1 s): upstream's rps benchmark.
                # False is upstream's delay benchmark (testobj_delay.py).
                appendEntriesUseBatch=batch,
            )
            super().__init__(self_addr, partners, conf)
            self._kv: dict[str, str] = {}

        @replicated
        def put(self, value: str) -> None:
            self._kv[value[:KEY_CHARS]] = value

    return KVNode()


def _wait_ready(obj: Any, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        leader = obj._getLeader()
        connected = all(obj.isNodeConnected(node) for node in obj.otherNodes)
        if leader is not None and connected and obj.isReady():
            return {
                "self": obj.selfNode.address,
                "leader": leader.address,
                "term": obj.raftCurrentTerm,
            }
        time.sleep(0.01)
    raise TimeoutError(f"no leader with all peers connected within {timeout:g}s")


def run_load(
    obj: Any, args: argparse.Namespace, start_epoch: float, clients: int, rate: float | None
) -> dict[str, Any]:
    """Drive this node's share of the load; return its result record."""
    rng = random.Random(args.seed)
    width = args.command_size
    bits = 4 * width
    fmt = f"%0{width}x"

    def command() -> str:
        return fmt % rng.getrandbits(bits) if width else ""

    # Wall-clock epoch (shared by the processes on this machine) -> perf_counter.
    p_start = time.perf_counter() + (start_epoch - time.time())
    t0 = p_start + args.warmup
    t1 = t0 + args.duration
    rec = Recorder(t0, t1, args.sample_cap, args.seed + 1)
    retry: deque[int] = deque()
    perf = time.perf_counter
    put = obj.put

    def on_result(client: int, t_submit: float, _res: Any, err: int) -> None:
        now = perf()
        rec.answered_one(t_submit, now, err)
        if client < 0 or now >= t1:
            return  # open loop, or the window is over: no resubmit
        if err != 0:
            retry.append(client)
            return
        submit(client)

    def submit(client: int) -> None:
        rec.submitted_one()
        t = perf()
        put(command(), callback=functools.partial(on_result, client, t))

    while perf() < p_start:
        time.sleep(min(PACE_S, max(0.0, p_start - perf())))
    term_start = obj.raftCurrentTerm
    max_burst = 0
    if rate is None:
        for client in range(clients):
            for _ in range(args.window):
                submit(client)
        while perf() < t1:
            while retry and perf() < t1:
                submit(retry.popleft())
            time.sleep(PACE_S)
    else:
        sent = 0
        while True:
            now = perf()
            if now >= t1:
                break
            due = int((now - p_start) * rate) - sent
            max_burst = max(max_burst, due)
            for _ in range(due):
                submit(-1)
            sent += max(due, 0)
            time.sleep(PACE_S)
    drain_end = perf() + args.drain
    while rec.outstanding > 0 and perf() < drain_end:
        time.sleep(0.01)

    with rec._lock:
        samples = sorted(rec.samples)
        leader = obj._getLeader()
        return {
            "self": obj.selfNode.address,
            "is_leader": leader is not None and leader == obj.selfNode,
            "leader_end": leader.address if leader is not None else None,
            "term_start": term_start,
            "term_end": obj.raftCurrentTerm,
            "clients": clients,
            "window": args.window,
            "rate": rate,
            "command_size": width,
            "batch": not args.no_batch,
            "ok": rec.ok,
            "failed": rec.failed,
            "fail_reasons": {str(k): v for k, v in rec.fail_reasons.items()},
            "submitted": rec.submitted,
            "answered": rec.answered,
            "outstanding": rec.outstanding,
            "window_start": start_epoch + args.warmup,
            "window_end": start_epoch + args.warmup + args.duration,
            "duration": args.duration,
            "max_burst": max_burst,
            "p50_ms": _percentile(samples, 0.50),
            "p90_ms": _percentile(samples, 0.90),
            "p99_ms": _percentile(samples, 0.99),
            "max_ms": samples[-1] if samples else None,
            "samples_ms": [round(x, 4) for x in rec.samples],
            "python": sys.version.split()[0],
            "pysyncobj": _pysyncobj_version(),
        }


def _pysyncobj_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pysyncobj")
    except PackageNotFoundError:
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pysyncobj_node", description=__doc__.split("\n")[0])
    p.add_argument("--self", dest="self_addr", required=True, help="host:port of this node")
    p.add_argument("--partner", action="append", default=[], help="host:port of a peer (repeat)")
    p.add_argument(
        "--control",
        choices=("stdin", "none"),
        default="none",
        help="stdin: wait for the parent's BIND/GO/STOP; none: run on its own",
    )
    p.add_argument("--clients", type=int, default=1, help="closed-loop submitters in this process")
    p.add_argument("--window", type=int, default=1, help="outstanding commands per submitter")
    p.add_argument("--rate", type=float, default=None, help="open loop: commands/s here")
    p.add_argument("--command-size", type=int, default=10)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--drain", type=float, default=2.0, help="max seconds to await outstanding")
    p.add_argument("--startup-timeout", type=float, default=20.0)
    p.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="hard deadline: exit this many seconds after start, whatever happens",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=3.0,
        help="--control none: seconds to stay up after the result (peers drain)",
    )
    p.add_argument("--sample-cap", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="appendEntriesUseBatch=False (upstream's delay benchmark)",
    )
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int(args.self_addr.rsplit(":", 1)[1])
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    threading.Thread(target=_die_at, args=(started + args.deadline, 3), daemon=True).start()
    control = Control() if args.control == "stdin" else None
    if control is not None:
        _emit("HELLO", {"self": args.self_addr})
        control.expect("BIND", args.startup_timeout)
    obj = build_node(args.self_addr, args.partner, batch=not args.no_batch)
    obj.waitBinded()
    if control is not None:
        _emit("BOUND", {"self": args.self_addr})
    ready = _wait_ready(obj, args.startup_timeout)
    if control is not None:
        _emit("READY", ready)
        go = json.loads(control.expect("GO", args.startup_timeout))
        start, clients, rate = go["start"], go["clients"], go["rate"]
    else:
        start, clients, rate = time.time() + 0.05, args.clients, args.rate
    result = run_load(obj, args, start, clients, rate)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
    _emit("RESULT", result)
    if control is not None:
        try:
            control.expect("STOP", max(0.0, started + args.deadline - time.monotonic()))
        except TimeoutError:
            pass
    else:
        time.sleep(args.linger)
    # SyncObj's tick thread is not a daemon; leave at once instead of waiting on it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
