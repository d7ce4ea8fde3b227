"""The command line: ``python -m bench run|sweep|chaos|speed|calibrate|validate|elections|peers``.

Exit status: 0 on success, 1 when chaos runs find a violation, 2 on a
configuration error (nothing written), 3 when a run was lost on a Dask cluster
(its worker died each time it ran), 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.executors import Executor, TaskFailed
from bench.tables import cell
from consensus.config import ConfigError
from consensus.registry import UnknownProtocolError, get_protocol
from consensus.testing.chaos import MIXES

__all__ = ["main", "protocols_table", "summary_table"]

COLUMNS = [
    ("protocol", "protocol", "{}"),
    ("throughput", "ops/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p95_ms", "p95 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_gap_s", "max gap s", "{:.3f}"),
    ("failover_s", "failover s", "{:.3f}"),
    ("msgs_per_op", "msgs/op", "{:.2f}"),
    ("bytes_per_op", "bytes/op", "{:,.0f}"),
    ("leader_changes", "leader changes", "{}"),
    ("unknown", "unknown", "{}"),
    ("busiest_cpu", "busiest node (CPU)", "busiest"),
]


def _safety(protocol: str) -> str:
    """``safe``, or ``UNSAFE`` for a baseline that lacks linearizability (rich markup)."""
    try:
        safe = get_protocol(protocol).safe
    except UnknownProtocolError:
        return "?"
    return "safe" if safe else "[bold red]UNSAFE[/]"


def _busiest(row: dict) -> str:
    # "n1 97%": the busiest node over the measured window and its CPU utilisation.
    util = row.get("busiest_cpu", math.nan)
    if not isinstance(util, float) or math.isnan(util):
        return "-"
    return f"n{row['busiest_node']} {util:.0%}"


def summary_table(summary: pd.DataFrame, title: str = "") -> Table:
    """The summary, one row per protocol; ``safety`` marks the unsafe baselines."""
    unsafe = [p for p in dict.fromkeys(summary["protocol"]) if not get_protocol(p).safe]
    caption = "".join(f"\nUNSAFE {p}: {get_protocol(p).lacks['linearizability']}" for p in unsafe)
    table = Table(title=title or None, caption=caption.strip() or None, caption_justify="left")
    for _, header, _ in COLUMNS[:1]:
        table.add_column(header, justify="left")
    table.add_column("safety", justify="left")
    for _, header, _ in COLUMNS[1:]:
        table.add_column(header, justify="right")
    for row in summary.to_dict("records"):
        cells = [
            _busiest(row) if fmt == "busiest" else cell(fmt, row.get(key, math.nan))
            for key, _, fmt in COLUMNS
        ]
        table.add_row(cells[0], _safety(row["protocol"]), *cells[1:])
    return table


def protocols_table() -> Table:
    """Every available protocol: safety, what it lacks, summary (``run --list``)."""
    from consensus.registry import available_protocols

    table = Table(title="protocols (UNSAFE: a baseline that is not linearizable under faults)")
    for header in ("protocol", "safety", "lacks", "summary"):
        table.add_column(header, justify="left")
    for name in available_protocols():
        spec = get_protocol(name)
        table.add_row(name, _safety(name), ", ".join(spec.lacks) or "-", spec.summary)
    return table


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench.runner import load_run_config, run

    if args.list:
        console.print(protocols_table())
        return 0
    config = load_run_config(args.config)
    config = config.with_overrides(
        protocols=args.protocol, seed=args.seed, tcp=args.tcp, trace=args.trace
    )
    verb = "running real processes of" if config.real else "simulating"
    with console.status(f"{verb}...") as status:

        def progress(protocol: str, fraction: float) -> None:
            status.update(f"{verb} {protocol}: {fraction:4.0%}")

        results = run(config, progress=progress)
    c = config.cluster
    w = config.workload
    load = f"{w.mode}-loop {w.clients} clients" if w.mode == "closed" else f"open loop {w.rate:g}/s"
    title = f"{c.nodes} nodes, {load}, {w.duration:g}s (warm-up {w.warmup:g}s), seed {c.seed}"
    if not config.real:
        title += ", costs " + (c.costs.note or "set") if c.costs.enabled else ", costs off"
    if config.real:
        title += (
            f", real processes over TCP (fsync {config.tcp.fsync}, window {config.tcp.window},"
            f" {config.tcp.processes} load processes)"
        )
    console.print(summary_table(results.summary, title))
    if args.plot:
        _write_plot(results, config.name, args.plot)
        console.print(f"plot written to {args.plot}")
    if args.out:
        out = results.save(args.out)
        console.print(
            f"results written to {out}/ (ops, summary, messages, throughput, faults,"
            " counters, nodes, queues, trace .parquet)"
        )
    if config.trace:
        console.print(
            f"trace: {len(results.trace):,} rows"
            + ("" if args.out else " (give --out DIR to keep it: trace.parquet)")
        )
    return 0


def _write_plot(results: Any, name: str, path: Path) -> None:
    """``--plot``: throughput over time (the first protocol's faults marked) beside
    the latency CDF, as a PNG.  A bare ``Figure``, so no pyplot backend is chosen."""
    from matplotlib.figure import Figure

    from bench.plots import plot_latency_cdf, plot_throughput

    fig = Figure(figsize=(12, 4))
    left, right = fig.subplots(1, 2)
    first = results.summary["protocol"].iloc[0]
    faults = results.faults[results.faults["protocol"] == first]
    plot_throughput(results.throughput, left, faults)
    left.set_title(f"{name}: completed operations per second")
    plot_latency_cdf(results.ops, right)
    right.set_title("latency distribution")
    fig.tight_layout()
    fig.savefig(path)


def _executor(args: argparse.Namespace) -> Executor:
    """``-j`` / ``--dask`` / ``--dask-workers`` as an executor (``ConfigError`` if they clash)."""
    from bench.executors import executor_for

    return executor_for(args.jobs, dask=args.dask, dask_workers=args.dask_workers)


def _cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bench.sweep import expand, load_sweep, read_sweep, sweep, sweep_to

    base, grid = load_sweep(args.config)
    points = expand(base, grid)  # validates every point before anything runs
    total = sum(len(config.protocols) for _, config in points)
    if args.resume and not args.out:
        raise ConfigError("--resume: goes with --out DIR (the sweep to continue)")
    err = Console(stderr=True)
    with _executor(args) as executor:
        if args.dask:
            err.print(f"sweep on {executor}")
        with Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("", total=total)

            def progress(done: int, total: int, label: dict) -> None:
                bar.update(
                    task,
                    completed=done,
                    description=" ".join(f"{k}={v}" for k, v in label.items()),
                )

            if args.out:
                sweep_to(
                    args.config, args.out, progress=progress, executor=executor, resume=args.resume
                )
                results = read_sweep(args.out, tables=["summary"])
            else:
                results = sweep(args.config, progress=progress, executor=executor)
    summary = results.summary
    keys = list(grid)
    table = Table(title=f"sweep over {', '.join(keys)}: {len(points)} points, {total} runs")
    shown = keys + ["protocol", "throughput", "p50_ms", "p99_ms", "msgs_per_op"]
    for column in shown:
        table.add_column(column, justify="right")
    for row in summary.to_dict("records"):
        table.add_row(
            *(cell("{:,.2f}" if isinstance(row[c], float) else "{}", row[c]) for c in shown)
        )
    console.print(table)
    if args.out:
        console.print(
            f"results written to {args.out}/ (a parquet dataset per table, partitioned by"
            " protocol; read it with bench.read_sweep)"
        )
    return 0


def _cmd_speed(args: argparse.Namespace, console: Console) -> int:
    from bench.parallel import resolve_jobs
    from bench.simspeed import measure, measure_parallel

    jobs = resolve_jobs(args.jobs)
    for name in args.protocol or ():
        get_protocol(name)  # a name asked for by hand must exist (the defaults may be absent)
    protocols = args.protocol or ["sequencer", "raft", "multipaxos", "paxos"]
    table = Table(
        title=f"simulation speed: {args.clients} closed-loop clients, {args.seconds:g} simulated"
        f" s, wire={args.wire}, costs {args.costs}, best of {args.repeat}"
    )
    headers = ["protocol", "nodes", "sim msgs", "msgs / wall s", "ops / wall s", "µs / op"]
    if jobs > 1:
        headers.append(f"msgs / wall s, {jobs} runs at once")
    for header in headers:
        table.add_column(header, justify="right")
    for nodes in args.nodes or [3, 5]:
        for protocol in protocols:
            row = measure(
                protocol,
                nodes=nodes,
                clients=args.clients,
                seconds=args.seconds,
                wire=args.wire,
                repeat=args.repeat,
                costs=args.costs,
            )
            if row is None:
                continue
            cells = [
                row["protocol"],
                str(nodes),
                f"{row['messages']:,}",
                f"{row['msgs_per_s']:,.0f}",
                f"{row['ops_per_s']:,.0f}",
                f"{row['us_per_op']:.1f}",
            ]
            if jobs > 1:
                together = measure_parallel(
                    protocol, jobs=jobs, nodes=nodes, clients=args.clients,
                    seconds=args.seconds, wire=args.wire, costs=args.costs,
                )  # fmt: skip
                assert together is not None
                cells.append(f"{together['msgs_per_s']:,.0f}")
            table.add_row(*cells)
    console.print(table)
    console.print(
        "A message is one protocol message delivered to a node.  Raft batches many"
        " commands per AppendEntries, so compare protocols by µs / op."
    )
    if jobs > 1:
        console.print(
            f"Runs at once: {jobs} simulations (seeds 1..{jobs}), one process each, as"
            " `sweep --jobs` and `chaos --jobs` run them: messages of all runs per wall second."
        )
    return 0


def _cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    from bench.calibrate import PROTOCOLS, calibrate, combine, to_toml, write

    err = Console(stderr=True)
    tables = []
    with err.status("calibrating...") as status:
        for run in range(1, args.repeat + 1):
            of = f" (run {run} of {args.repeat})" if args.repeat > 1 else ""
            tables.append(
                calibrate(
                    tuple(args.protocol or PROTOCOLS),
                    seconds=args.seconds,
                    start=args.start,
                    end_to_end=not args.no_real,
                    progress=lambda what, of=of: status.update(f"calibrating{of}: {what}"),
                )
            )
    table = combine(tables)
    if args.out:
        path = write(table, args.out)
        console.print(f"[costs] table written to {path}")
    else:
        console.print(to_toml(table), markup=False, highlight=False, end="")
    return 0


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from importlib.resources import files

    from bench.validate import compare, peaks

    config = args.config or str(files("bench") / "configs" / "validate.toml")
    clients = [int(c) for c in args.clients.split(",")]
    with Console(stderr=True).status("validating...") as status:
        rows = compare(config, clients, progress=lambda what: status.update(f"running {what}"))
    table = Table(title=f"simulated (sim) and real over TCP (tcp): {config}")
    shown = [
        ("mode", "{}"),
        ("protocol", "{}"),
        ("clients", "{}"),
        ("completed_per_s", "{:,.0f}"),
        ("p50_ms", "{:.2f}"),
        ("p99_ms", "{:.2f}"),
        ("busiest_cpu", "{:.0%}"),
        ("client_cpu", "{:.2f}"),
        ("host_cpu", "{:.2f}"),
        ("other_cpu", "{:.2f}"),
    ]
    for column, _ in shown:
        table.add_column(column, justify="right")
    for row in rows.sort_values(["protocol", "clients", "mode"]).to_dict("records"):
        table.add_row(*(cell(fmt, row[column]) for column, fmt in shown))
    console.print(table)
    best = peaks(rows)
    console.print(best.round(3).to_string(index=False))
    if args.out:
        _write_parquet(console, rows, args.out, "rows")
    return 0


def _write_parquet(console: Console, frame: pd.DataFrame, out: Path, what: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    console.print(f"{what} written to {out}")


def _cmd_elections(args: argparse.Namespace, console: Console) -> int:
    from bench.elections import RANGES, election_study, summarize

    ranges = args.range or list(RANGES)
    options = dict(_parse_option(o) for o in args.option or [])
    with Console(stderr=True).status(f"{args.trials} leader crashes per range..."):
        study = election_study(
            ranges,
            args.trials,
            args.seed,
            delay=(args.delay_ms * 0.8 / 1000, args.delay_ms * 1.2 / 1000),
            fsync=args.fsync_ms / 1000,
            jobs=args.jobs,
            limit=args.limit,
            protocol=args.protocol,
            options=options,
            candidate_write=not args.voters_only_write,
        )
    summary = summarize(study)
    table = Table(
        title=f"{args.protocol} leader crashes (Raft paper figure 16): 5 nodes, one-way delay"
        f" {args.delay_ms:g} ms"
        f" +-20%, disk write {args.fsync_ms:g} ms, {args.trials} trials per range, seed {args.seed}"
    )
    shown = [
        ("range", "timeouts ms", "{}"),
        ("trials", "crashes staged", "{}"),
        ("median_ms", "median ms", "{:,.0f}"),
        ("mean_ms", "mean ms", "{:,.0f}"),
        ("max_ms", "worst ms", "{:,.0f}"),
        ("elections", "elections", "{:.1f}"),
        ("paper_median_ms", "paper median", "{:,.0f}"),
        ("paper_mean_ms", "paper mean", "{:,.0f}"),
        ("paper_max_ms", "paper worst", "{:,.0f}"),
        ("paper_note", "paper says", "{}"),
    ]
    for _, header, _ in shown:
        table.add_column(header, justify="right")
    for row in summary.to_dict("records"):
        cells = []
        for key, _, fmt in shown:
            value = row[key]
            if isinstance(value, float) and math.isinf(value):
                cells.append(f"> {args.limit:g} s" if key != "elections" else "-")
            else:
                cells.append(cell(fmt, value))
        table.add_row(*cells)
    console.print(table)
    if args.out:
        _write_parquet(console, study, args.out, "one row per trial")
    return 0


def _cmd_notebooks(args: argparse.Namespace, console: Console) -> int:
    from bench.notebooks import execute_notebooks, notebook_paths

    try:
        paths = notebook_paths(args.only or ())
    except ValueError as exc:
        print(f"notebooks: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(p.name for p in paths)
    console.print(f"executing {len(paths)} notebooks in place ({args.jobs} at a time): {names}")

    def report(path: Path, seconds: float | None, error: BaseException | None) -> None:
        if error is None:
            console.print(f"  {path.name}: {seconds:,.0f} s, outputs saved")
        else:
            first = str(error).strip().splitlines()[-1:] or [type(error).__name__]
            console.print(f"  {path.name}: FAILED, not written: {first[0]}")

    outcome = execute_notebooks(paths, jobs=args.jobs, timeout=args.timeout, report=report)
    failed = [p.name for p, r in outcome.items() if isinstance(r, BaseException)]
    if failed:
        print(f"notebooks that raised: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with a TOML value (true, 0.2, "x"); bare words are strings."""
    import tomllib

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--option: expected key=value, got {text!r}")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def _cmd_real_chaos(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    from bench.realchaos import real_chaos_run

    violations = checked = 0
    err = Console(stderr=True)
    for seed in range(args.seed, args.seed + args.runs):
        with err.status(f"chaos over tcp: {args.protocol}, seed {seed}"):
            result = real_chaos_run(
                args.protocol, seed, duration=args.duration, options=options or None
            )
        checked += result.operations
        faults = "; ".join(f"{t:.2f}s {what}" for t, what in result.faults) or "none"
        lost = {node: keys for node, keys in result.missing.items() if keys}
        if result.passed:
            console.print(
                f"seed {seed}: ok, {result.operations} operations, {result.acknowledged_writes}"
                f" acknowledged writes on every node; faults: {faults}",
                markup=False,
                highlight=False,
            )
            continue
        violations += 1
        console.print("[bold red]VIOLATION[/] ", end="")
        detail = (
            f"not linearizable: {result.violations[:1]}"
            if not result.ok
            else f"acknowledged writes missing: { {n: k[:5] for n, k in lost.items()} }"
        )
        console.print(f"seed {seed}: {detail}; faults: {faults}", markup=False, highlight=False)
    print(
        f"{args.protocol}: {args.runs} runs over tcp, {violations} violations,"
        f" {checked} operations checked",
        flush=True,
    )
    return 1 if violations else 0


def _cmd_chaos(args: argparse.Namespace, console: Console) -> int:
    from bench.chaos import chaos_config, chaos_runs
    from consensus.registry import get_protocol
    from consensus.testing.chaos import describe_failure

    options = dict(_parse_option(o) for o in args.option or [])
    if args.tcp:
        get_protocol(args.protocol).make_options(options)  # validate up front
        return _cmd_real_chaos(args, options, console)
    if not 0 <= args.clock_drift < 1:
        raise ConfigError(f"--clock-drift: must be in [0, 1), got {args.clock_drift}")
    chaos_config(args.protocol, args.seed, options).protocol_options()  # validate up front
    get_protocol(args.protocol)
    violations = unknown = checked = 0
    err = Console(stderr=True)
    with _executor(args) as executor, err.status(f"chaos: {args.protocol}") as status:
        if args.dask:
            err.print(f"chaos on {executor}")
        for done, result in enumerate(
            chaos_runs(
                args.protocol,
                args.runs,
                args.seed,
                ops=args.ops,
                options=options,
                snapshot_every=args.snapshot_every,
                mix=args.mix,
                clock_drift=args.clock_drift,
                executor=executor,
            ),
            start=1,
        ):
            checked += result.operations
            if result.ok is None and not result.lost:
                unknown += 1
                console.print(f"seed {result.seed}: check inconclusive (checker timed out)")
            elif not result.passed:
                violations += 1
                console.print("[bold red]VIOLATION[/] ", end="")
                console.print(
                    describe_failure(
                        result,
                        args.ops,
                        options=options,
                        snapshot_every=args.snapshot_every,
                        mix=args.mix,
                        clock_drift=args.clock_drift,
                    ),
                    markup=False,
                    highlight=False,
                )
            status.update(
                f"chaos: {args.protocol} {done}/{args.runs} runs, {violations} violations"
            )
    if unknown:
        console.print(f"{unknown} runs inconclusive (checker timeout)")
    print(
        f"{args.protocol}: {args.runs} runs, {violations} violations, {checked} operations checked",
        flush=True,
    )
    return 1 if violations else 0


def _add_jobs(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help=f"worker processes for the {what} (0: one per CPU; default 1: in this"
        " process); results are the same for any N",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help=f"run the {what} on Dask: 'local' starts a LocalCluster here, tcp://HOST:PORT"
        " uses a running scheduler (pip install -e '.[dask]'); results are the same",
    )
    parser.add_argument(
        "--dask-workers",
        type=int,
        metavar="N",
        help="worker processes of --dask local (default: one per CPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Compare consensus protocols on one simulated workload, network and faults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a comparison and print the summary table")
    run.add_argument("config", nargs="?", help="run config TOML (default: built-in comparison)")
    run.add_argument("--protocol", action="append", help="protocol to run (repeatable)")
    run.add_argument(
        "--list",
        action="store_true",
        help="list the available protocols (UNSAFE marks baselines that are not consensus)",
    )
    run.add_argument("--seed", type=int, help="override the config's seed")
    run.add_argument("--out", type=Path, help="directory for the result DataFrames (parquet)")
    run.add_argument("--plot", type=Path, help="write a PNG: throughput over time, latency CDF")
    run.add_argument(
        "--tcp",
        action="store_true",
        help="run each protocol as real node processes on loopback (network.kind = 'tcp')",
    )
    run.add_argument(
        "--trace",
        action="store_true",
        help="record every message, client operation and role change (trace.parquet with"
        " --out; bench.trace.to_shiviz, bench.plots.space_time)",
    )
    sweep = sub.add_parser("sweep", help="run a grid of configs (a [sweep] table) and combine")
    sweep.add_argument("config", help="sweep config TOML with a [sweep] table")
    sweep.add_argument(
        "--out",
        type=Path,
        help="directory for a parquet dataset per table, partitioned by protocol, written"
        " run by run",
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out DIR: run only what is not written yet",
    )
    _add_jobs(sweep, "grid points")
    chaos = sub.add_parser("chaos", help="seeded fault-injection runs checked for linearizability")
    chaos.add_argument("--protocol", required=True)
    chaos.add_argument("--runs", type=int, default=10)
    chaos.add_argument(
        "--seed", type=int, default=0, help="first seed (runs use seed, seed+1, ...)"
    )
    chaos.add_argument("--ops", type=int, default=200, help="client operations per run")
    chaos.add_argument(
        "--tcp",
        action="store_true",
        help="real node processes on loopback, SIGKILLed and SIGSTOPped while clients write"
        " (bench.realchaos); not replayable: the seed fixes the workload and the schedule",
    )
    chaos.add_argument(
        "--duration", type=float, default=6.0, help="with --tcp: seconds of faults per run"
    )
    chaos.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="protocol option, e.g. prevote=false (repeatable)",
    )
    chaos.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        help="snapshot the state machine every N applied entries",
    )
    chaos.add_argument(
        "--mix",
        choices=MIXES,
        default="kv",
        help="the operations: every key-value command (kv), or only get and put (registers)",
    )
    chaos.add_argument(
        "--clock-drift",
        type=float,
        default=0.0,
        metavar="D",
        help="each node's clock runs at a rate drawn from 1-D .. 1+D (leases meet drift)",
    )
    _add_jobs(chaos, "seeded runs")
    from bench.peers.cli import add_arguments as add_peers_arguments

    add_peers_arguments(
        sub.add_parser(
            "peers",
            help="real 3-process clusters side by side with PySyncObj (pip install .[peers])",
        )
    )
    calibrate = sub.add_parser(
        "calibrate", help="measure this machine's costs of each protocol's work: a [costs] table"
    )
    calibrate.add_argument("--out", type=Path, help="write the table here (default: print it)")
    calibrate.add_argument("--protocol", action="append", help="protocol to time (repeatable)")
    calibrate.add_argument(
        "--seconds", type=float, default=1.0, help="simulated seconds per timed run"
    )
    calibrate.add_argument(
        "--start",
        default="default",
        help="costs the timed runs simulate with, so they batch as under load (a preset or"
        " a file; default: the shipped table)",
    )
    calibrate.add_argument(
        "--repeat",
        type=int,
        default=1,
        choices=range(1, 21),
        metavar="N",
        help="calibrate N times and write each number's median (a shared machine's noise)",
    )
    calibrate.add_argument(
        "--no-real",
        action="store_true",
        help=(
            "skip the end-to-end steps (real clusters for a few seconds: one node"
            " under load, three nodes with one client)"
        ),
    )
    validate = sub.add_parser(
        "validate", help="one config simulated with calibrated costs and run over TCP, side by side"
    )
    validate.add_argument("config", nargs="?", help="run config (default: configs/validate.toml)")
    validate.add_argument(
        "--clients", default="16,64,256,1024", help="closed-loop client counts (comma-separated)"
    )
    validate.add_argument("--out", type=Path, help="write the rows (parquet)")
    elections = sub.add_parser(
        "elections",
        help="the Raft paper's election study (figure 16) with a modelled disk write, for"
        " Raft or Multi-Paxos",
    )
    elections.add_argument(
        "--protocol", choices=("raft", "multipaxos"), default="raft", help="whose leader crashes"
    )
    elections.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="protocol option, e.g. disruption_guard=true (repeatable)",
    )
    elections.add_argument(
        "--voters-only-write",
        action="store_true",
        help="Raft: a candidate asks for votes before its own vote is on disk (a measurement)",
    )
    elections.add_argument("--trials", type=int, default=100, help="leader crashes per range")
    elections.add_argument("--seed", type=int, default=1)
    elections.add_argument(
        "--range", action="append", help="election timeouts in ms, e.g. 150-300 (repeatable)"
    )
    elections.add_argument("--delay-ms", type=float, default=5.0, help="mean one-way delay")
    elections.add_argument("--fsync-ms", type=float, default=5.0, help="the disk write")
    elections.add_argument(
        "--limit", type=float, default=10.0, help="virtual seconds to wait for a new leader"
    )
    elections.add_argument("--out", type=Path, help="write one row per trial (parquet)")
    _add_jobs(elections, "trials")
    notebooks = sub.add_parser(
        "notebooks",
        help="re-execute the notebooks in place with their full parameters and save the outputs",
    )
    notebooks.add_argument(
        "--only", action="append", metavar="NAME", help="just this notebook (repeatable)"
    )
    notebooks.add_argument("-j", "--jobs", type=int, default=1, help="notebooks run at once")
    notebooks.add_argument(
        "--timeout", type=int, default=7200, help="seconds one cell may take (default 2 h)"
    )
    speed = sub.add_parser("speed", help="measure simulated messages per wall-clock second")
    speed.add_argument("--protocol", action="append", help="protocol to measure (repeatable)")
    speed.add_argument(
        "--nodes", type=int, action="append", help="cluster size (repeatable; default 3 and 5)"
    )
    speed.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    speed.add_argument("--clients", type=int, default=32)
    speed.add_argument("--seconds", type=float, default=5.0, help="simulated seconds")
    speed.add_argument("--wire", choices=("objects", "bytes"), default="objects")
    speed.add_argument(
        "--costs",
        default="off",
        help="the nodes' costs: off (default), default (the measured table) or a file",
    )
    speed.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        help="also run N simulations at once, one process each (0: one per CPU), as sweeps do",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "chaos":
            return _cmd_chaos(args, console)
        if args.command == "sweep":
            return _cmd_sweep(args, console)
        if args.command == "calibrate":
            return _cmd_calibrate(args, console)
        if args.command == "elections":
            return _cmd_elections(args, console)
        if args.command == "validate":
            return _cmd_validate(args, console)
        if args.command == "notebooks":
            return _cmd_notebooks(args, console)
        if args.command == "peers":
            from bench.peers.cli import peers_command

            return peers_command(args, console)
        return _cmd_speed(args, console)
    except (ConfigError, UnknownProtocolError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except TaskFailed as exc:
        print(f"run lost: {exc}", file=sys.stderr)
        if getattr(args, "out", None):
            print(f"finished runs are in {args.out}/; --resume runs the rest", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        # Workers, if any, are already stopped (bench.parallel, bench.ondask).
        print("interrupted", file=sys.stderr)
        return 130
