"""Plots of results: each function takes DataFrames and an Axes, returns the figure.

No import-time side effects: matplotlib is imported by the caller (or the
notebook), and nothing here picks a backend or shows a window.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = [
    "plot_downtime_cdf",
    "plot_latency_cdf",
    "plot_latency_throughput",
    "plot_scaling",
    "plot_throughput",
    "space_time",
]


def _mark_faults(ax: Any, faults: pd.DataFrame, protocol: str | None = None) -> None:
    if faults is None or faults.empty:
        return
    rows = faults if protocol is None else faults[faults["protocol"] == protocol]
    seen: set[tuple[float, str]] = set()
    for row in rows.itertuples():
        key = (round(row.time, 6), row.action)
        if key in seen:
            continue
        seen.add(key)
        ax.axvline(row.time, color="grey", linestyle=":", linewidth=1)
        label = row.action if pd.isna(row.node) else f"{row.action} {int(row.node)}"
        ax.annotate(
            label,
            (row.time, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="grey",
        )


def plot_throughput(throughput: pd.DataFrame, ax: Any, faults: pd.DataFrame | None = None) -> Any:
    """Completed operations per second over time, one line per protocol."""
    for protocol, rows in throughput.groupby("protocol", sort=False):
        ax.plot(rows["time"], rows["ops_per_s"], label=protocol, linewidth=1.5)
    _mark_faults(ax, faults) if faults is not None else None
    ax.set_xlabel("time (s)")
    ax.set_ylabel("completed ops/s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left")
    return ax.figure


def plot_latency_cdf(ops: pd.DataFrame, ax: Any) -> Any:
    """The latency distribution of successful measured operations, per protocol."""
    done = ops[(ops["status"] == "ok") & ops["measured"]]
    for protocol, rows in done.groupby("protocol", sort=False):
        latency = rows["latency"].sort_values() * 1000
        fraction = (pd.RangeIndex(1, len(latency) + 1) / len(latency)).to_numpy()
        ax.plot(latency.to_numpy(), fraction, label=protocol, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of operations")
    ax.legend(loc="lower right")
    return ax.figure


def plot_scaling(
    summary: pd.DataFrame,
    ax: Any,
    y: str,
    *,
    x: str = "nodes",
    ylabel: str | None = None,
    log: bool = False,
) -> Any:
    """One line per protocol: the summary column ``y`` against ``x``.

    ``summary`` is a run's or a sweep's summary; ``x`` is a swept key (such
    as ``"workload.clients"``) or ``nodes``.  Each protocol needs at most one
    row per ``x`` value: filter a sweep over more keys down to one line first.
    """
    if summary.duplicated(["protocol", x]).any():
        raise ValueError(
            f"plot_scaling: several rows per protocol and {x!r}; select one value of the"
            " other swept keys first"
        )
    for protocol, rows in summary.groupby("protocol", sort=False):
        rows = rows.sort_values(x)
        ax.plot(rows[x], rows[y], marker="o", label=protocol, linewidth=1.5)
    ax.set_xticks(sorted(summary[x].unique()))
    ax.set_xlabel("cluster size (nodes)" if x in ("nodes", "cluster.nodes") else x)
    ax.set_ylabel(ylabel or y)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.legend()
    return ax.figure


def plot_latency_throughput(
    summary: pd.DataFrame,
    ax: Any,
    *,
    latency: str = "p50_ms",
    by: str = "protocol",
    knees: dict[str, float] | None = None,
) -> Any:
    """Latency against what the cluster served: one curve per ``by`` value.

    ``summary`` holds one row per load point (a sweep over ``workload.rate``
    or ``workload.clients``, filtered to one value of the other swept keys);
    x is ``completed_per_s`` (operations completed in the measured window),
    y is ``latency`` (log scale).  A curve climbs once the busiest node
    saturates and what it serves stops growing with the load offered: its
    knee.  ``knees`` maps a ``by`` value to a predicted capacity (ops/s),
    drawn as a dotted vertical line in the curve's colour.
    """
    key = "workload.rate" if "workload.rate" in summary.columns else "workload.clients"
    for name, rows in summary.groupby(by, sort=False):
        rows = rows.sort_values(key) if key in rows.columns else rows
        (line,) = ax.plot(
            rows["completed_per_s"], rows[latency], marker="o", label=str(name), linewidth=1.5
        )
        if knees and name in knees:
            ax.axvline(knees[name], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("completed ops/s")
    ax.set_ylabel(latency.replace("_ms", " latency (ms, log scale)"))
    ax.set_xlim(left=0)
    ax.legend()
    return ax.figure


def plot_downtime_cdf(
    study: pd.DataFrame,
    ax: Any,
    *,
    paper: dict[str, dict[str, Any]] | None = None,
    column: str = "downtime_ms",
    log: bool = True,
    label: str = "{range} ms",
) -> Any:
    """The election study's downtimes (``bench.elections``) as one CDF per
    timeout range, in the order the ranges first appear.

    Trials that elected nobody within the study's limit count as never
    reaching the top of the curve.  ``paper`` (``bench.elections.PAPER``)
    marks what the Raft paper states for a range in the curve's colour: a
    dot at its median, a diamond at its worst case, a triangle at its mean
    (placed at fraction 0.5, 1.0 and 0.5).  ``label`` formats each curve's
    name from the row (``{range}``, ``{protocol}``, ...).
    """
    import numpy as np

    staged = study[study["staged"]]
    for name, rows in staged.groupby("range", sort=False):
        values = np.sort(rows[column].to_numpy(dtype=float))
        finite = values[np.isfinite(values)]
        if not len(values):
            continue
        fraction = np.arange(1, len(finite) + 1) / len(values)
        first = rows.iloc[0].to_dict()
        (line,) = ax.step(finite, fraction, where="post", label=label.format(**first))
        for key, marker, y in (
            ("median_ms", "o", 0.5),
            ("max_ms", "D", 1.0),
            ("mean_ms", "^", 0.5),
        ):
            value = (paper or {}).get(str(name), {}).get(key)
            if value is not None:
                ax.plot(
                    [value],
                    [y],
                    marker=marker,
                    color=line.get_color(),
                    markersize=8,
                    markeredgecolor="black",
                    linestyle="",
                )
    if paper:
        for marker, text in (("o", "paper: median"), ("D", "paper: worst"), ("^", "paper: mean")):
            ax.plot(
                [],
                [],
                marker=marker,
                color="white",
                markeredgecolor="black",
                linestyle="",
                label=text,
            )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("downtime (ms" + (", log scale)" if log else ")"))
    ax.set_ylabel("fraction of trials")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


def _trace_rows(trace: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    if "protocol" not in trace.columns:
        return trace
    if protocol is None:
        names = trace["protocol"].unique()
        if len(names) > 1:
            raise ValueError(
                f"space_time: the trace has several protocols {list(names)}: pick one"
                " (protocol=...), or leave ax out for one panel each"
            )
        return trace
    return trace[trace["protocol"] == protocol]


def space_time(
    trace: pd.DataFrame,
    start: float | None = None,
    end: float | None = None,
    ax: Any = None,
    *,
    protocol: str | None = None,
    nodes: Any = None,
    title: str | None = None,
) -> Any:
    """A space-time diagram of a message trace (``consensus.sim.trace``).

    Each node is a horizontal line; time runs left to right in milliseconds
    since ``start`` (default: the trace's first row).  Each message sent in
    ``[start, end]`` is an arrow from its sender at its send time to its
    receiver at its arrival, coloured by message type; a dropped one stops
    half-way with an x and why (loss, partition, down).  Client invocations
    (triangles) and completions (squares) sit on the node the client
    talked to, role changes are written above their node's line, crashes
    are a red X.  ``protocol`` picks one protocol's rows of a
    ``Results.trace``; ``nodes`` the node ids to draw (default: all seen).
    Without ``ax`` a new figure is made, with one panel per protocol when
    ``trace`` holds several (a ``Results.trace``) and ``protocol`` is None.
    Returns the figure.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        names = (
            list(dict.fromkeys(trace["protocol"]))
            if protocol is None and "protocol" in trace.columns
            else []
        )
        if len(names) > 1:
            fig, axes = plt.subplots(len(names), 1, figsize=(10, 3.5 * len(names)), squeeze=False)
            for panel, name in zip(axes[:, 0], names, strict=True):
                space_time(
                    trace,
                    start,
                    end,
                    panel,
                    protocol=name,
                    nodes=nodes,
                    title=f"{title or 'Space-time diagram'}: {name}",
                )
            fig.tight_layout()
            return fig
        _, ax = plt.subplots(figsize=(10, 4))
    rows = _trace_rows(trace, protocol)
    if start is None:
        start = float(rows["time"].min()) if len(rows) else 0.0
    if end is None:
        end = float(rows["time"].max()) if len(rows) else start
    shown = rows[(rows["time"] >= start) & (rows["time"] <= end)]
    messages = shown[shown["kind"] == "message"]
    events = shown[shown["kind"] != "message"]
    if nodes is None:
        nodes = sorted(
            {int(n) for n in messages["src"]}
            | {int(n) for n in messages["dst"]}
            | {int(n) for n in events["node"]}
        )
    nodes = list(nodes)
    y = {node: -i for i, node in enumerate(nodes)}  # node 0 on top

    def ms(t: Any) -> Any:
        return (t - start) * 1000

    delivered = messages[messages["dropped"] == ""]
    transit = (delivered["arrival"] - delivered["time"]).median() if len(delivered) else None
    half = transit / 2 if transit and transit > 0 else max(end - start, 1e-3) / 50
    last = max([end, *messages["arrival"].dropna().tolist()])
    for node in nodes:
        ax.axhline(y[node], color="0.8", linewidth=1, zorder=0)
    colours: dict[str, Any] = {}
    cycle = iter(_palette())
    for row in messages.itertuples(index=False):
        if row.src not in y or row.dst not in y:
            continue
        if row.type not in colours:
            colours[row.type] = next(cycle)
            ax.plot([], [], color=colours[row.type], label=row.type)  # legend entry
        colour = colours[row.type]
        x0, y0 = ms(row.time), y[row.src]
        if row.dropped:
            x1 = ms(row.time + half)
            y1 = y0 + (y[row.dst] - y0) / 2
            ax.plot([x0, x1], [y0, y1], color=colour, linestyle="--", linewidth=1)
            ax.plot([x1], [y1], marker="x", color="red", markersize=8, linestyle="")
            ax.annotate(
                row.dropped,
                (x1, y1),
                fontsize=7,
                color="red",
                xytext=(3, 3),
                textcoords="offset points",
            )
        else:
            ax.annotate(
                "",
                xy=(ms(row.arrival), y[row.dst]),
                xytext=(x0, y0),
                arrowprops={"arrowstyle": "->", "color": colour, "linewidth": 1.2},
            )
    if (messages["dropped"] != "").any():
        ax.plot([], [], marker="x", color="red", linestyle="", label="dropped")
    styles = {
        "invoke": ("v", "tab:green", "client invokes"),
        "complete": ("s", "tab:green", "client completes"),
        "crash": ("X", "red", "crash"),
        "restart": ("P", "tab:blue", "restart"),
    }
    labelled: set[str] = set()
    for row in events.itertuples(index=False):
        if row.node not in y:
            continue
        x0, y0 = ms(row.time), y[row.node]
        if row.kind == "role":
            ax.plot([x0], [y0], marker="|", color="black", markersize=14, linestyle="")
            ax.annotate(row.detail, (x0, y0), fontsize=8, xytext=(2, 7), textcoords="offset points")
            continue
        marker, colour, label = styles.get(row.kind, ("o", "black", row.kind))
        ax.plot(
            [x0],
            [y0],
            marker=marker,
            color=colour,
            markersize=8,
            linestyle="",
            label=None if label in labelled else label,
        )
        labelled.add(label)
    if (events["kind"] == "role").any():
        ax.plot([], [], marker="|", color="black", markersize=10, linestyle="", label="role change")
    ax.set_yticks([y[n] for n in nodes])
    ax.set_yticklabels([f"node {n}" for n in nodes])
    ax.set_ylim(-len(nodes) + 0.5, 0.6)
    ax.set_xlim(-0.02 * ms(last), ms(last) * 1.02 if last > start else 1)
    ax.set_xlabel(f"time since {start:.3f} s (ms)")
    ax.set_ylabel("node")
    ax.set_title(title or "Space-time diagram: messages between nodes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax.figure


def _palette() -> list[str]:
    # Distinct colours for message types, then grey for any beyond them.
    return [
        "tab:blue",
        "tab:orange",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
        "tab:gray",
        "navy",
        "teal",
        "maroon",
        "gold",
    ] + ["0.5"] * 100
