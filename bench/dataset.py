"""Sweep results as a parquet dataset on disk, written run by run.

Layout (hive partitioning: pandas, pyarrow and ``dask.dataframe`` read it)::

    OUT/_sweep.json                                what the sweep is: config, keys, runs
    OUT/<table>/protocol=<p>/part-<point>.parquet  one run's rows of <table>
    OUT/<table>/_empty.parquet                     the first run's columns, if it had no rows

A *run* is one grid point with one protocol.  Its part files hold its rows
with the point columns (``point`` and one per swept key) and without
``protocol``, which is in the path.

Theory of operation
-------------------
* A run is written when it finishes, table by table, each to a hidden
  temporary file renamed into place, ``summary`` last: a run is complete
  exactly when its summary part exists.  A sweep that stops (Ctrl-C, a lost
  task, a crash) leaves complete runs and perhaps stray parts, never a
  half-written file; ``resume`` runs what is not complete and overwrites
  stray parts.
* ``read_sweep`` restores serial order (runs in grid order, a run's rows as
  written) and combines the runs with ``combine``, the function the
  in-memory sweep uses, so ``read_sweep(OUT)`` equals ``sweep(config)``
  frame for frame.
* ``combine`` leaves out empty frames: pandas would let an empty frame's
  object columns turn a float column into object.  A table empty in every
  run is the first run's empty frame (``_empty.parquet`` on disk).
* Files starting with ``_`` or ``.`` are invisible to pyarrow's dataset
  discovery, so ``pd.read_parquet(OUT / "ops")`` and
  ``dask.dataframe.read_parquet(OUT / "ops")`` see the parts only, with
  ``protocol`` as a categorical partition column, in no set order.

Invariant: the manifest is written before any part, and a directory is
replaced only when it holds a manifest (a sweep's, never anything else).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.metrics import TABLES, Results
from consensus.config import ConfigError

__all__ = ["MANIFEST", "SweepWriter", "combine", "read_sweep"]

MANIFEST = "_sweep.json"
FORMAT = 1
# Written last: its presence marks a complete run.
LAST = "summary"


def combine(tables: dict[str, list[pd.DataFrame]]) -> Results:
    """One ``Results`` from per-run frames given in serial order."""
    combined = {}
    for name in TABLES:
        frames = tables.get(name, [])
        rows = [frame for frame in frames if len(frame)]
        if rows:
            combined[name] = pd.concat(rows, ignore_index=True)
        else:
            combined[name] = frames[0].reset_index(drop=True) if frames else pd.DataFrame()
    return Results(**combined)


def _part(out: Path, table: str, protocol: str, point: int) -> Path:
    return out / table / f"protocol={protocol}" / f"part-{point:05d}.parquet"


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)


class SweepWriter:
    """Writes a sweep's runs into ``out`` as they finish.

    ``spec``: the sweep's config (JSON-able); ``keys``: the swept keys;
    ``runs``: (point, protocol) for every run, in grid order.  With
    ``resume``, a dataset of the same spec in ``out`` is continued (see
    ``complete``); without, one is replaced.  Another spec, or a directory
    that holds table folders but no manifest, is a ``ConfigError``.
    """

    def __init__(
        self,
        out: str | Path,
        spec: dict[str, Any],
        keys: list[str],
        runs: list[tuple[int, str]],
        *,
        resume: bool = False,
    ) -> None:
        self.out = Path(out)
        self.keys = list(keys)
        self.runs = list(runs)
        manifest = {
            "format": FORMAT,
            "spec": json.loads(json.dumps(spec, sort_keys=True, default=str)),
            "keys": self.keys,
            "tables": list(TABLES),
            "runs": [[point, protocol] for point, protocol in self.runs],
        }
        path = self.out / MANIFEST
        old = json.loads(path.read_text()) if path.exists() else None
        if old is not None and resume:
            if old.get("spec") != manifest["spec"] or old.get("runs") != manifest["runs"]:
                raise ConfigError(
                    f"--resume: {self.out} holds another sweep (its config differs);"
                    " give another --out"
                )
        elif old is not None:
            for table in old.get("tables", TABLES):
                shutil.rmtree(self.out / table, ignore_errors=True)
            path.unlink()
        elif any((self.out / table).exists() for table in TABLES):
            raise ConfigError(
                f"--out: {self.out} holds table folders but no {MANIFEST}; give another --out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        if old is None or not resume:
            temporary = self.out / f".{MANIFEST}.tmp"
            temporary.write_text(json.dumps(manifest, indent=1) + "\n")
            os.replace(temporary, path)

    def complete(self) -> set[int]:
        """Indexes (into ``runs``) of the runs already written in full."""
        return {
            i
            for i, (point, protocol) in enumerate(self.runs)
            if _part(self.out, LAST, protocol, point).exists()
        }

    def write(self, index: int, frames: dict[str, pd.DataFrame]) -> None:
        """Write run ``index``'s frames (point columns included)."""
        point, protocol = self.runs[index]
        for table in sorted(TABLES, key=lambda name: name == LAST):
            frame = frames[table]
            if len(frame):
                _write(frame.drop(columns="protocol"), _part(self.out, table, protocol, point))
            elif index == 0:
                _write(frame, self.out / table / "_empty.parquet")


def read_sweep(
    path: str | Path, *, tables: Iterable[str] = TABLES, partial: bool = False
) -> Results:
    """A sweep dataset back as ``Results``, rows in serial order.

    ``tables``: the tables to read (the others are empty DataFrames).  A
    sweep that did not finish raises ``FileNotFoundError`` naming what is
    missing, unless ``partial``: then the complete runs are read.
    """
    out = Path(path)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{out}: no {MANIFEST}; not a sweep written with --out") from None
    keys: list[str] = manifest["keys"]
    runs = [(int(point), str(protocol)) for point, protocol in manifest["runs"]]
    done = [i for i, (point, p) in enumerate(runs) if _part(out, LAST, p, point).exists()]
    if len(done) < len(runs) and not partial:
        raise FileNotFoundError(
            f"{out}: {len(runs) - len(done)} of {len(runs)} runs are not written (the sweep"
            " stopped early); finish it with `sweep ... --out DIR --resume`, or read what is"
            " there with read_sweep(..., partial=True)"
        )
    wanted = set(tables)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES if name in wanted}
    for name in frames:
        empty = out / name / "_empty.parquet"
        for i in done:
            point, protocol = runs[i]
            part = _part(out, name, protocol, point)
            if part.exists():
                frame = pd.read_parquet(part)
                frame.insert(1 + len(keys), "protocol", protocol)
                frames[name].append(frame)
            elif i == 0 and empty.exists():
                frames[name].append(pd.read_parquet(empty))
    return combine(frames)
