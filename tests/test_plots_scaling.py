"""plot_scaling: one line per protocol of a summary column against a swept key."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from bench.plots import plot_scaling


def _summary() -> pd.DataFrame:
    # Rows deliberately out of order in x, as a sweep's biggest-first runs could leave them.
    return pd.DataFrame(
        {
            "protocol": ["raft", "raft", "raft", "paxos", "paxos", "paxos"],
            "cluster.nodes": [5, 3, 7, 3, 7, 5],
            "nodes": [5, 3, 7, 3, 7, 5],
            "msgs_per_op": [4.0, 2.0, 6.0, 10.0, 30.0, 20.0],
        }
    )


def test_one_line_per_protocol_sorted_by_x():
    ax = Figure().subplots()
    plot_scaling(_summary(), ax, "msgs_per_op", x="cluster.nodes", ylabel="messages / op")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"raft", "paxos"}
    assert list(lines["raft"].get_xdata()) == [3, 5, 7]
    assert list(lines["raft"].get_ydata()) == [2.0, 4.0, 6.0]
    assert list(lines["paxos"].get_ydata()) == [10.0, 20.0, 30.0]
    assert ax.get_xlabel() == "cluster size (nodes)"
    assert ax.get_ylabel() == "messages / op"
    assert list(ax.get_xticks()) == [3, 5, 7]


def test_log_option_sets_a_log_y_axis():
    ax = Figure().subplots()
    plot_scaling(_summary(), ax, "msgs_per_op", log=True)
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "msgs_per_op"


def test_several_rows_per_point_is_an_error_not_a_zigzag():
    # A sweep over nodes x clients has two rows per (protocol, nodes).
    doubled = pd.concat([_summary(), _summary()], ignore_index=True)
    with pytest.raises(ValueError, match="other swept keys"):
        plot_scaling(doubled, Figure().subplots(), "msgs_per_op")
