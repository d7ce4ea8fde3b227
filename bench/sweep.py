"""Sweeps: a grid of run configs that differ from one baseline in a few keys.

A sweep file is a run config with one extra table, ``[sweep]``, mapping
dotted keys of the run config to lists of values::

    protocols = ["raft", "multipaxos"]

    [workload]
    duration = 3.0

    [sweep]
    "cluster.nodes" = [3, 5, 7]
    "workload.clients" = [1, 8, 32]

Every combination (here 3 x 3) is run with every protocol.  Each grid point
is the baseline with those keys replaced, validated like any run config, so
a bad key or value is reported before anything runs.  The results of all
points are concatenated, with one column per swept key.

Where the runs go
-----------------
The unit of work is a *run*: one grid point with one protocol, ``run`` of
the point's config narrowed to that protocol (a config's protocols share
nothing but the config, so its ``Results`` are the slices of the whole
point's).  A run is a pure function of its config (the seed is part of it),
so runs go to any executor of ``bench.parallel`` (``jobs=N``: local
processes; ``executor=DaskExecutor(...)``: a Dask cluster) and the caller
puts them back in grid order, whatever order they finish in.  Runs start
biggest first (a rough cost: simulated time x nodes x load), so that a big
run does not start last while the other workers idle.

Each run's frames get the point columns (``point``, then one per swept key;
a table or list value becomes its JSON text, so the column groups and
sorts), and the runs are combined by ``bench.dataset.combine``.
``sweep`` keeps them in memory; ``sweep_to`` streams each run into a parquet
dataset as it finishes (``bench.dataset``) and can resume a sweep that
stopped, so a sweep bigger than memory is written and then read back with
``read_sweep``, pandas or ``dask.dataframe``.

Invariant: ``Serial()`` (``jobs=1``) starts nothing; it is the reference the
other executors must reproduce, row for row, apart from the wall-clock
columns of ``summary`` (``wall_s``, ``sim_msgs_per_wall_s``).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

import pandas as pd

from bench.dataset import SweepWriter, combine, read_sweep
from bench.executors import Executor, executor_for
from bench.metrics import TABLES, Results
from bench.runner import RunConfig, load_run_config, run
from consensus.config import ConfigError, load_toml

__all__ = ["expand", "load_sweep", "read_sweep", "sweep", "sweep_to"]

Progress = Callable[[int, int, dict[str, Any]], None]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"sweep.{dotted}: {key!r} is not a table")
        node = child
    node[keys[-1]] = value


def load_sweep(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """The baseline run-config data and the swept keys with their values."""
    data = copy.deepcopy(source) if isinstance(source, dict) else load_toml(source)
    grid = data.pop("sweep", None)
    if not grid:
        raise ConfigError("sweep: a sweep file needs a [sweep] table of key = [values]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values, got {values!r}")
    return data, grid


def expand(base: dict[str, Any], grid: dict[str, list]) -> list[tuple[dict[str, Any], RunConfig]]:
    """Every grid point as (swept values, validated RunConfig)."""
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        data = copy.deepcopy(base)
        for key, value in zip(keys, values, strict=True):
            _set(data, key, value)
        label = dict(zip(keys, values, strict=True))
        try:
            config = load_run_config(data)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {label}: {exc}") from None
        points.append((label, config))
    return points


def _cost(config: RunConfig) -> float:
    # Relative cost, only to schedule big runs first: simulated events grow
    # with simulated time, cluster size and load.
    w = config.workload
    load = w.clients if w.mode == "closed" else w.rate
    return (w.duration + config.drain) * config.cluster.nodes * load


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


class _Plan:
    """A sweep's runs in grid order: (point, label, protocol, config narrowed to it)."""

    def __init__(self, source: str | Path | dict[str, Any]) -> None:
        self.base, self.grid = load_sweep(source)
        self.runs = [
            (i, label, protocol, config.with_overrides(protocols=[protocol]))
            for i, (label, config) in enumerate(expand(self.base, self.grid))
            for protocol in config.protocols
        ]

    def label(self, index: int) -> dict[str, Any]:
        _, label, protocol, _ = self.runs[index]
        return {**label, "protocol": protocol}

    def describe(self, index: int) -> str:
        point, _, _, _ = self.runs[index]
        return f"sweep point {point} " + " ".join(f"{k}={v}" for k, v in self.label(index).items())

    def frames(self, index: int, results: Results) -> dict[str, pd.DataFrame]:
        """The run's tables with the point columns in front."""
        point, label, _, _ = self.runs[index]
        frames = {}
        for name in TABLES:
            frame = getattr(results, name).copy()
            for column, (key, value) in enumerate(label.items()):
                frame.insert(column, key, [_cell(value)] * len(frame) if len(frame) else [])
            frame.insert(0, "point", point)
            frames[name] = frame
        return frames

    def execute(
        self,
        executor: Executor,
        progress: Progress | None,
        skip: Collection[int] = (),
        on_result: Callable[[int, Results], None] | None = None,
    ) -> Iterator[tuple[int, Results]]:
        """(run index, Results) for every run not in ``skip``, biggest first.

        ``on_result(run index, Results)`` fires as each run finishes, before
        ``progress`` counts it.
        """
        todo = [i for i in range(len(self.runs)) if i not in skip]
        order = sorted(todo, key=lambda i: -_cost(self.runs[i][3]))
        finished = len(skip)

        def done(j: int, results: Results) -> None:
            nonlocal finished
            if on_result is not None:
                on_result(order[j], results)
            finished += 1
            if progress is not None:
                progress(finished, len(self.runs), self.label(order[j]))

        results = executor.map(
            run,
            [((self.runs[i][3],), {}) for i in order],
            on_done=done,
            describe=lambda j: self.describe(order[j]),
        )
        for j, result in enumerate(results):
            yield order[j], result


def sweep(
    source: str | Path | dict[str, Any],
    *,
    progress: Progress | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
) -> Results:
    """Run every grid point with every protocol; one ``Results`` with a column per swept key.

    ``jobs``: local worker processes (1: run in this process; 0 or None: one
    per CPU); ``executor`` (``bench.parallel``, e.g. a ``DaskExecutor``)
    replaces it.  The result is the same for any executor, except the
    wall-clock columns of ``summary`` (``wall_s``, ``sim_msgs_per_wall_s``).
    ``progress(done, total, label)`` fires as each run finishes; ``label``
    holds its swept values and protocol.
    """
    plan = _Plan(source)
    frames: list[dict[str, pd.DataFrame]] = [{} for _ in plan.runs]
    for i, results in plan.execute(executor or executor_for(jobs), progress):
        frames[i] = plan.frames(i, results)
    return combine({name: [run[name] for run in frames] for name in TABLES})


def sweep_to(
    source: str | Path | dict[str, Any],
    out: str | Path,
    *,
    progress: Progress | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
    resume: bool = False,
) -> Path:
    """Run a sweep, writing each run into the parquet dataset ``out`` as it finishes.

    The executor holds at most a window of finished runs (16 per worker),
    so a sweep too big for memory fits; ``read_sweep(out)`` gives what
    ``sweep`` would have returned (``bench.dataset`` has the layout).
    ``resume``: continue the same sweep in ``out``, running only the runs
    not yet written (``progress`` counts the written ones as done).
    Arguments otherwise as for ``sweep``.
    """
    plan = _Plan(source)
    writer = SweepWriter(
        out,
        {"base": plan.base, "grid": plan.grid},
        list(plan.grid),
        [(point, protocol) for point, _, protocol, _ in plan.runs],
        resume=resume,
    )
    written = writer.complete() if resume else set()

    def write(i: int, results: Results) -> None:
        writer.write(i, plan.frames(i, results))

    # Written as they finish, not in grid order: a stopped sweep loses only
    # the runs in flight.  The in-order results are not needed here.
    for _ in plan.execute(executor or executor_for(jobs), progress, written, write):
        pass
    return writer.out
