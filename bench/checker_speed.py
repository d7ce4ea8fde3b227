"""How long the linearizability checker takes on generated histories.

Run as ``python -m bench.checker_speed``.  Prints one line per case: the
history's shape, the verdict, the wall time of ``check``, and for corrupted
histories the size of the reported witness.
"""

from __future__ import annotations

import argparse
import random
import time

from bench.histories import corrupt, generate_linearizable_history
from consensus.checker.history import History
from consensus.checker.linearizability import CheckResult, check


def _time_check(history: History) -> tuple[float, CheckResult]:
    start = time.perf_counter()
    result = check(history)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--pending", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for clients in args.clients:
        history = generate_linearizable_history(
            random.Random(args.seed),
            ops=args.ops,
            keys=args.keys,
            clients=clients,
            pending_fraction=args.pending,
        )
        seconds, result = _time_check(history)
        print(
            f"{args.ops} ops, {args.keys} keys, {clients} clients, "
            f"{args.pending:.0%} pending: ok={result.ok}  {seconds:.2f}s"
        )
        bad = corrupt(history, random.Random(args.seed))
        seconds, result = _time_check(bad)
        sizes = [len(v.operations) for v in result.violations]
        print(f"  with one stale read: ok={result.ok}  {seconds:.2f}s  witness ops {sizes}")


if __name__ == "__main__":
    main()
