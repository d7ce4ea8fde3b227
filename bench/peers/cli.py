"""``peers``: our runtime and PySyncObj on real TCP clusters, one table.

``add_arguments(parser)`` and ``peers_command(args)`` are what ``bench.cli``
wires in as ``python -m bench peers``; ``main(argv)`` (also
``python -m bench.peers``) runs it on its own.

The systems are the entries of ``SYSTEMS`` (name -> ``run_point``); the
default selection is ``DEFAULT_SYSTEMS``.  Each is measured unloaded (one
client, one command at a time) and at its peak (closed-loop window raised
1, 2, 4, ... per client for each ``--clients`` count), the systems' points
interleaved.  ``--out`` writes the summary (``.parquet`` or ``.csv``) and
every point run beside it (``<name>-points.<ext>``).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.peers.measure import DEFAULT_WINDOWS, LoadPoint, PointResult, against_reference, compare
from bench.peers.ours import run_ours_point
from bench.peers.pysyncobj import run_pysyncobj_point
from bench.tables import cell

__all__ = [
    "DEFAULT_SYSTEMS",
    "SYSTEMS",
    "add_arguments",
    "comparison_table",
    "main",
    "peers_command",
    "save",
]

#: Every system ``--systems`` can name: ``run_point(LoadPoint) -> PointResult``.
SYSTEMS: dict[str, Callable[[LoadPoint], PointResult]] = {
    # PySyncObj's defaults: commands batched into one AppendEntries per
    # appendEntriesPeriod (0.1 s), upstream's throughput configuration (its
    # rps benchmark, testobj.py).  Commit latency is about one period at the
    # leader and two at a follower, whatever the load.
    "pysyncobj": run_pysyncobj_point,
    # Upstream's latency configuration (testobj_delay.py): no batching, every
    # command is sent at once; sub-millisecond commits unloaded, a lower peak.
    "pysyncobj-nobatch": functools.partial(
        run_pysyncobj_point, batch=False, system="pysyncobj-nobatch"
    ),
    # This project's real clusters: node processes with write-ahead logs
    # (group commit) and separate client processes over TCP.
    "raft": functools.partial(run_ours_point, protocol="raft"),
    "multipaxos": functools.partial(run_ours_point, protocol="multipaxos"),
    "paxos": functools.partial(run_ours_point, protocol="paxos"),
}

#: The systems of ``SYSTEMS`` that are not this project's: never judged by the targets.
PEERS: tuple[str, ...] = ("pysyncobj", "pysyncobj-nobatch")

#: The systems run when ``--systems`` is not given: PySyncObj's best latency
#: and its best throughput come from different configurations, so both.
DEFAULT_SYSTEMS: list[str] = ["pysyncobj", "pysyncobj-nobatch", "raft", "multipaxos", "paxos"]

# Nodes and command size are the same in every row: they go in the title.
COLUMNS = [
    ("system", "system", "{}"),
    ("protocol", "protocol", "{}"),
    ("clients", "clients", "{}"),
    ("unloaded_p50_ms", "unloaded\np50 ms", "{:.1f}"),
    ("unloaded_p99_ms", "unloaded\np99 ms", "{:.1f}"),
    ("peak_throughput", "peak\ncmds/s", "{:,.0f}"),
    ("peak_p50_ms", "peak\np50 ms", "{:.1f}"),
    ("peak_p99_ms", "peak\np99 ms", "{:.1f}"),
    ("peak_window", "peak\nwindow", "{}"),
]


def comparison_table(summary: pd.DataFrame, title: str = "") -> Table:
    """The ``compare`` summary as a rich table, one row per system and client count."""
    table = Table(title=title or None)
    for key, header, _ in COLUMNS:
        left = key in ("system", "protocol")
        table.add_column(header, justify="left" if left else "right", no_wrap=left)
    for row in summary.to_dict("records"):
        table.add_row(*(cell(fmt, row.get(key)) for key, _, fmt in COLUMNS))
    return table


TARGET_COLUMNS = [
    ("system", "system", "{}"),
    ("unloaded_p50_ms", "unloaded\np50 ms", "{:.2f}"),
    ("bounded_peak", "peak cmds/s\nwithin bound", "{:,.0f}"),
    ("bounded_peak_p50_ms", "its p50\nms", "{:.1f}"),
    ("ratio", "x reference\npeak", "{:.2f}"),
    ("unloaded_target_met", "p50 <= 1 ms", "{}"),
    ("throughput_target_met", ">= 2x peak", "{}"),
]


def targets_table(verdict: pd.DataFrame) -> Table:
    """``against_reference`` as a rich table: each of our systems against the reference."""
    first = verdict.iloc[0]
    title = (
        f"against {first['reference']}'s peak ({first['reference_peak']:,.0f} cmds/s at p50"
        f" {first['reference_peak_p50_ms']:.0f} ms): our peaks at p50 <="
        f" {first['latency_bound_ms']:.1f} ms (a tenth)"
    )
    table = Table(title=title)
    for key, header, _ in TARGET_COLUMNS:
        table.add_column(header, justify="left" if key == "system" else "right")
    for row in verdict.to_dict("records"):
        table.add_row(*(cell(fmt, row.get(key)) for key, _, fmt in TARGET_COLUMNS))
    return table


def save(summary: pd.DataFrame, out: str | Path) -> list[Path]:
    """Write the summary to ``out`` and its points beside it; returns the paths."""
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out: expected a .parquet or .csv path, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = {out: summary}
    points = summary.attrs.get("points")
    if points is not None:
        frames[out.with_name(f"{out.stem}-points{out.suffix}")] = points
    targets = summary.attrs.get("targets")
    if targets is not None:
        frames[out.with_name(f"{out.stem}-targets{out.suffix}")] = targets
    for path, frame in frames.items():
        frame = frame.copy()
        frame.attrs = {}
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    return list(frames)


def _systems(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {unknown or value!r}; known: {', '.join(SYSTEMS)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``peers`` options, on ``parser`` (a subcommand's parser, or a fresh one)."""
    parser.add_argument(
        "--command-size",
        type=int,
        default=10,
        help="characters per command (default 10, upstream's 'custom' mode)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[3, 12],
        help="closed-loop clients per cluster for the peak search (default 3 12)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each")
    parser.add_argument(
        "--systems",
        type=_systems,
        default=None,
        help=f"comma-separated, of: {', '.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)})",
    )
    parser.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=list(DEFAULT_WINDOWS),
        help="the peak search's ladder: outstanding commands per client"
        f" (default 1 2 4 ... {DEFAULT_WINDOWS[-1]})",
    )
    parser.add_argument(
        "--max-p50-ms",
        type=float,
        default=1000.0,
        help="stop raising the load past this p50 latency",
    )
    parser.add_argument(
        "--max-points",
        type=int,
        default=len(DEFAULT_WINDOWS),
        help="load points per peak search at most",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="wall seconds per peak search at most"
    )
    parser.add_argument("--out", default=None, help="write the summary (.parquet or .csv)")
    return parser


def peers_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run the comparison the parsed ``args`` describe and print the table."""
    # Piped output defaults to 80 columns, too narrow for nine numeric columns.
    console = console or Console(width=None if sys.stdout.isatty() else 110)
    names = args.systems or list(DEFAULT_SYSTEMS)
    systems = {name: SYSTEMS[name] for name in names}
    started = time.monotonic()
    with console.status("starting...") as status:

        def progress(name: str, point: LoadPoint) -> None:
            status.update(
                f"{name}: {point.clients} clients x window {point.window}"
                f" ({time.monotonic() - started:.0f}s)"
            )

        summary = compare(
            systems,
            command_size=args.command_size,
            clients=args.clients,
            duration=args.duration,
            warmup=args.warmup,
            windows=args.windows,
            progress=progress,
            max_p50_ms=args.max_p50_ms,
            max_points=args.max_points,
            max_seconds=args.max_seconds,
        )
    took = time.monotonic() - started
    nodes = ", ".join(str(n) for n in sorted(set(summary["nodes"])))
    title = (
        f"{nodes}-node clusters on 127.0.0.1 (one process per node),"
        f" {args.command_size}-character commands, closed loop,"
        f" {args.duration:g}s per point (warm-up {args.warmup:g}s); {took:.0f}s in all"
    )
    console.print(comparison_table(summary, title))
    points = summary.attrs["points"]
    verdict = against_reference(summary, points, peers=PEERS)
    if not verdict.empty:
        console.print(targets_table(verdict))
        summary.attrs["targets"] = verdict
    # For the record: the same bounds against PySyncObj without batching.
    unbatched = against_reference(summary, points, reference="pysyncobj-nobatch", peers=PEERS)
    if not unbatched.empty:
        console.print(targets_table(unbatched))
    if args.out:
        paths = save(summary, args.out)
        console.print(f"written: {', '.join(str(p) for p in paths)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.peers [options]``; exit 130 on Ctrl-C, 2 on a bad option."""
    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    )
    args = parser.parse_args(argv)
    try:
        return peers_command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
