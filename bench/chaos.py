"""Chaos runs from the command line and in parallel: ``python -m bench chaos``.

The runs themselves (one seeded run: clients, the nemesis, a linearizability
check) live in the conformance kit, ``consensus.testing.chaos``, so that a
plugin author's test suite runs the same soak; this module adds ``jobs``.

With ``jobs`` > 1 the runs go to worker processes
(``bench.parallel.map_in_processes``: each worker gets the protocol, seed and
options, never a simulator) and come back in seed order, so a soak reports
the same runs, outcomes and violations as a serial one.  Only a checker
timeout (``ok`` None, a wall-clock limit) can differ between any two runs,
serial or not.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from bench.parallel import map_in_processes, resolve_jobs
from consensus.testing import chaos as _kit
from consensus.testing.chaos import ChaosResult, chaos_config, chaos_run, replay_command

__all__ = ["ChaosResult", "chaos_config", "chaos_run", "chaos_runs", "replay_command"]


def chaos_runs(
    protocol: str,
    runs: int,
    seed: int = 0,
    *,
    progress: Callable[[ChaosResult], None] | None = None,
    jobs: int | None = 1,
    **kwargs: Any,
) -> Iterator[ChaosResult]:
    """Runs for seeds ``seed .. seed + runs - 1``, in order.

    ``jobs``: worker processes (1: run in this process; 0 or None: one per
    CPU).  ``progress(result)`` fires as each run finishes, which in
    parallel may be out of seed order; the yielded results never are.
    ``kwargs`` go to ``chaos_run`` (and must pickle when ``jobs`` > 1).
    """
    workers = min(resolve_jobs(jobs), runs)
    if workers > 1:
        calls = [((protocol, s), kwargs) for s in range(seed, seed + runs)]
        done = (lambda _, result: progress(result)) if progress is not None else None
        yield from map_in_processes(chaos_run, calls, workers, on_done=done)
        return
    yield from _kit.chaos_runs(protocol, runs, seed, progress=progress, **kwargs)
