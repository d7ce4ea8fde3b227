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

Parallel runs
-------------
A run is a pure function of its config (the seed is part of it), so grid
points can run in worker processes: ``sweep(..., jobs=N)``, through
``bench.parallel.map_in_processes``.  The unit of work is one grid point (all
its protocols, through ``run``), so a point's ``Results`` are built exactly as
in a serial run; the parent adds the point columns and concatenates in grid
order, whatever order the points finish in.  Points start biggest first (a
rough cost: protocols x simulated time x nodes x load), so that a big point
does not start last while the other workers idle.

Invariant: for ``jobs=1`` nothing is started; the serial loop is the
reference the parallel path must reproduce.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.metrics import TABLES, Results
from bench.parallel import map_in_processes, resolve_jobs
from bench.runner import RunConfig, load_run_config, run
from consensus.config import ConfigError, load_toml

__all__ = ["expand", "load_sweep", "sweep"]


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
    # Relative cost, only to schedule big points first: simulated events grow
    # with simulated time, cluster size, load and the number of protocols.
    w = config.workload
    load = w.clients if w.mode == "closed" else w.rate
    return len(config.protocols) * (w.duration + config.drain) * config.cluster.nodes * load


def _add_point(
    frames: dict[str, list[pd.DataFrame]], i: int, label: dict[str, Any], results: Results
) -> None:
    for name in TABLES:
        frame = getattr(results, name).copy()
        for column, (key, value) in enumerate(label.items()):
            frame.insert(column, key, [value] * len(frame) if len(frame) else [])
        frame.insert(0, "point", i)
        frames[name].append(frame)


def sweep(
    source: str | Path | dict[str, Any],
    *,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    jobs: int | None = 1,
) -> Results:
    """Run every grid point; one ``Results`` with a column per swept key.

    ``jobs``: worker processes (1: run in this process; 0 or None: one per
    CPU).  The result is the same for any ``jobs``, except the wall-clock
    columns of ``summary`` (``wall_s``, ``sim_msgs_per_wall_s``).
    ``progress(done, total, label)`` fires before each point when serial,
    after each point finishes when parallel, and once more at the end.
    """
    base, grid = load_sweep(source)
    points = expand(base, grid)
    workers = min(resolve_jobs(jobs), len(points))
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    if workers <= 1:
        for i, (label, config) in enumerate(points):
            if progress is not None:
                progress(i, len(points), label)
            _add_point(frames, i, label, run(config))
    else:
        # Largest points first, so that no big point starts last while the
        # other workers idle; the results are put back in grid order.
        order = sorted(range(len(points)), key=lambda i: -_cost(points[i][1]))
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((points[i][1],), {}) for i in order]
        finished = 0

        def done(j: int, _: Results) -> None:
            nonlocal finished
            finished += 1
            if progress is not None:
                progress(finished, len(points), points[order[j]][0])

        by_point = dict(
            zip(order, map_in_processes(run, calls, workers, on_done=done), strict=True)
        )
        for i, (label, _) in enumerate(points):
            _add_point(frames, i, label, by_point[i])
    if progress is not None:
        progress(len(points), len(points), {})
    return Results(
        **{
            name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            for name, parts in frames.items()
        }
    )
