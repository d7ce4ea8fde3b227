"""The command line: ``python -m bench run|speed ...``.

Exit status: 0 on success, 2 on a configuration error (nothing written).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from consensus.config import ConfigError

__all__ = ["main", "summary_table"]

COLUMNS = [
    ("protocol", "protocol", "{}"),
    ("throughput", "ops/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p95_ms", "p95 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_gap_s", "max gap s", "{:.3f}"),
    ("failover_s", "failover s", "{:.3f}"),
    ("msgs_per_op", "msgs/op", "{:.2f}"),
    ("leader_changes", "leader changes", "{}"),
    ("unknown", "unknown", "{}"),
]


def _fmt(fmt: str, value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def summary_table(summary: pd.DataFrame, title: str = "") -> Table:
    table = Table(title=title or None)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="left" if header == "protocol" else "right")
    for row in summary.to_dict("records"):
        table.add_row(*(_fmt(fmt, row[key]) for key, _, fmt in COLUMNS))
    return table


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench.runner import load_run_config, run

    config = load_run_config(args.config)
    config = config.with_overrides(protocols=args.protocol, seed=args.seed)
    with console.status("simulating...") as status:

        def progress(protocol: str, fraction: float) -> None:
            status.update(f"simulating {protocol}: {fraction:4.0%}")

        results = run(config, progress=progress)
    c = config.cluster
    w = config.workload
    title = (
        f"{c.nodes} nodes, {w.mode}-loop {w.clients} clients, {w.duration:g}s"
        f" (warm-up {w.warmup:g}s), seed {c.seed}"
    )
    console.print(summary_table(results.summary, title))
    if args.out:
        out = results.save(args.out)
        console.print(
            f"results written to {out}/ (ops, summary, messages, throughput, faults,"
            " counters .parquet)"
        )
    return 0


def _cmd_speed(args: argparse.Namespace, console: Console) -> int:
    from bench.simspeed import measure

    rows = [
        measure(p, nodes=args.nodes, clients=args.clients, seconds=args.seconds, wire=args.wire)
        for p in args.protocol or ["sequencer", "raft", "multipaxos", "paxos"]
    ]
    table = Table(
        title=f"simulation speed: {args.nodes} nodes, {args.clients} closed-loop clients,"
        f" {args.seconds:g} simulated s, wire={args.wire}"
    )
    for header in ("protocol", "sim msgs", "wall s", "msgs / wall s", "events / wall s"):
        table.add_column(header, justify="right")
    for row in rows:
        if row is None:
            continue
        table.add_row(
            row["protocol"],
            f"{row['messages']:,}",
            f"{row['wall']:.2f}",
            f"{row['msgs_per_s']:,.0f}",
            f"{row['events_per_s']:,.0f}",
        )
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Compare consensus protocols on one simulated workload, network and faults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a comparison and print the summary table")
    run.add_argument("config", nargs="?", help="run config TOML (default: built-in comparison)")
    run.add_argument("--protocol", action="append", help="protocol to run (repeatable)")
    run.add_argument("--seed", type=int, help="override the config's seed")
    run.add_argument("--out", type=Path, help="directory for the result DataFrames (parquet)")
    speed = sub.add_parser("speed", help="measure simulated messages per wall-clock second")
    speed.add_argument("--protocol", action="append", help="protocol to measure (repeatable)")
    speed.add_argument("--nodes", type=int, default=3)
    speed.add_argument("--clients", type=int, default=32)
    speed.add_argument("--seconds", type=float, default=5.0, help="simulated seconds")
    speed.add_argument("--wire", choices=("objects", "bytes"), default="objects")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        if args.command == "run":
            return _cmd_run(args, console)
        return _cmd_speed(args, console)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
