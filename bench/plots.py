"""Plots of results: each function takes DataFrames and an Axes, returns the figure.

No import-time side effects: matplotlib is imported by the caller (or the
notebook), and nothing here picks a backend or shows a window.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = [
    "plot_latency_cdf",
    "plot_latency_throughput",
    "plot_scaling",
    "plot_throughput",
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
