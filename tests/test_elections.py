"""Raft's election study (``bench.elections``, the paper's figure 16) in simulation:
downtimes bounded by the timeouts, a disk write that makes short timeouts
unworkable, and every trial a function of its seed."""

from __future__ import annotations

import math

import pandas as pd

from bench.cli import main
from bench.elections import PAPER, election_study, summarize, trial


def test_a_downtime_is_at_least_half_the_minimum_timeout_and_elects_an_up_to_date_node():
    study = election_study(["150-300", "50-100"], trials=8, seed=3)
    assert study["staged"].all() and study["elected"].all()
    for name, low in (("150-300", 150), ("50-100", 50)):
        rows = study[study["range"] == name]
        # Crashed within its heartbeat interval (min/2) after a broadcast: the others'
        # timers have at least min/2 to run, then an election takes a round trip.
        assert (rows["downtime_ms"] >= low / 2).all()
        assert not rows["new_leader_was_behind"].any()  # the two behind cannot win
    summary = summarize(study).set_index("range")
    assert summary.loc["50-100", "median_ms"] < summary.loc["150-300", "median_ms"]


def test_the_paper_figures_stand_beside_the_medians():
    summary = summarize(election_study(["150-155"], trials=3, seed=1)).iloc[0]
    assert summary["paper_median_ms"] == PAPER["150-155"]["median_ms"] == 287.0
    assert summary["trials"] == 3 and math.isnan(summary["paper_mean_ms"])


def test_a_disk_write_longer_than_the_timeouts_allow_stages_no_crash():
    # An election round is two disk writes and a round trip: 2 x 10 + 2 x 2.5 = 25 ms,
    # longer than any 12-24 ms timeout, so no candidate ever hears back in time.
    row = trial(12, 24, seed=5, delay=(0.002, 0.003), fsync=0.010, limit=2.0)
    assert not row["staged"] and math.isnan(row["downtime_ms"])
    assert trial(12, 24, seed=5, delay=(0.002, 0.003), fsync=0.0, limit=2.0)["staged"]


def test_same_seed_same_rows(tmp_path, capsys):
    first = election_study(["100-200"], trials=3, seed=9)
    pd.testing.assert_frame_equal(first, election_study(["100-200"], trials=3, seed=9))
    out = tmp_path / "study.parquet"
    assert main(["elections", "--trials", "2", "--range", "100-200", "--out", str(out)]) == 0
    assert "paper" in capsys.readouterr().out and len(pd.read_parquet(out)) == 2
