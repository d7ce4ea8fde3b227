"""Comparing the ``Results`` of two sweeps: equal frame for frame, row for row.

A run is a function of its config and seed only, so wherever it ran the
tables must be equal; the one exception is the wall-clock columns of the
summary table.
"""

from __future__ import annotations

import pandas as pd

from bench.metrics import TABLES, Results

WALL_CLOCK = ["wall_s", "sim_msgs_per_wall_s"]


def assert_same_results(got: Results, expected: Results) -> None:
    for name in TABLES:
        a, b = getattr(got, name), getattr(expected, name)
        if name == "summary":
            a, b = a.drop(columns=WALL_CLOCK), b.drop(columns=WALL_CLOCK)
        pd.testing.assert_frame_equal(a, b, obj=name)
