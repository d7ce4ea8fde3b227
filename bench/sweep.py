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
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.metrics import TABLES, Results
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


def sweep(
    source: str | Path | dict[str, Any],
    *,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Results:
    """Run every grid point; one ``Results`` with a column per swept key."""
    base, grid = load_sweep(source)
    points = expand(base, grid)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for i, (label, config) in enumerate(points):
        if progress is not None:
            progress(i, len(points), label)
        results = run(config)
        for name in TABLES:
            frame = getattr(results, name).copy()
            for column, (key, value) in enumerate(label.items()):
                frame.insert(column, key, [value] * len(frame) if len(frame) else [])
            frame.insert(0, "point", i)
            frames[name].append(frame)
    if progress is not None:
        progress(len(points), len(points), {})
    return Results(
        **{
            name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            for name, parts in frames.items()
        }
    )
