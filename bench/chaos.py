"""Chaos runs from the command line and in parallel: ``python -m bench chaos``.

The runs themselves (one seeded run: clients, the nemesis, a linearizability
check) live in the conformance kit, ``consensus.testing.chaos``, so that a
plugin author's test suite runs the same soak; this module sends the runs
to an executor of ``bench.parallel``: this process, local worker processes
(``jobs``) or a Dask cluster (``executor=DaskExecutor(...)``).

Each run is one call (protocol, seed and options, never a simulator) and
the results come back in seed order, so a soak reports the same runs,
outcomes and violations, with their seeds and replay commands, wherever it
ran.  A run that fails outright is reported with its replay command.  Only a
checker timeout (``ok`` None, a wall-clock limit) can differ between any two
runs, serial or not.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from bench.executors import Executor, executor_for
from consensus.testing.chaos import ChaosResult, chaos_config, chaos_run, replay_command

__all__ = ["ChaosResult", "chaos_config", "chaos_run", "chaos_runs", "replay_command"]


def chaos_runs(
    protocol: str,
    runs: int,
    seed: int = 0,
    *,
    progress: Callable[[ChaosResult], None] | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
    **kwargs: Any,
) -> Iterator[ChaosResult]:
    """Runs for seeds ``seed .. seed + runs - 1``, in order.

    ``jobs``: worker processes (1: run in this process; 0 or None: one per
    CPU); ``executor`` replaces it (e.g. a ``bench.ondask.DaskExecutor``).
    ``progress(result)`` fires as each run finishes, which in parallel may
    be out of seed order; the yielded results never are.  ``kwargs`` go to
    ``chaos_run`` (and must pickle when the runs leave this process).
    """
    seeds = range(seed, seed + runs)

    def describe(i: int) -> str:
        replay = replay_command(
            protocol,
            seeds[i],
            kwargs.get("ops", 200),
            kwargs.get("options"),
            kwargs.get("snapshot_every", 0),
            kwargs.get("mix", "kv"),
            kwargs.get("clock_drift", 0.0),
        )
        return f"chaos seed {seeds[i]} (replay: {replay})"

    yield from (executor or executor_for(jobs)).map(
        chaos_run,
        [((protocol, s), kwargs) for s in seeds],
        on_done=None if progress is None else lambda _, result: progress(result),
        describe=describe,
    )
