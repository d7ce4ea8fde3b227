"""Raft's election study (``bench.elections``, the paper's figure 16) in simulation:
downtimes bounded by the timeouts, a disk write that makes short timeouts
unworkable, and every trial a function of its seed."""

from __future__ import annotations

import math

import pandas as pd
import pytest

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


def test_raft_accepts_a_fixed_election_timeout():
    from protocols.raft.options import RaftOptions

    options = RaftOptions(election_timeout_min=0.15, election_timeout_max=0.15)
    assert options.election_timeout_min == options.election_timeout_max
    with pytest.raises(ValueError, match="at least"):
        RaftOptions(election_timeout_min=0.15, election_timeout_max=0.14)
    # Every follower's timeout is exactly 150 ms: its first election starts then.
    from consensus.sim.simulator import Simulator

    sim = Simulator(
        {
            "protocol": "raft",
            "nodes": 3,
            "options": {
                "election_timeout_min": 0.15,
                "election_timeout_max": 0.15,
                "heartbeat_interval": 0.05,
            },
        },
        trace=True,
    )
    sim.run_for(0.2)
    trace = sim.trace()
    votes = trace[trace["type"] == "RequestVote"]
    assert votes["time"].min() == pytest.approx(0.15)


def test_downtime_runs_until_the_others_hear_the_new_leader():
    study = election_study(["150-300"], trials=4, seed=2)
    assert (study["downtime_ms"] > study["elected_ms"]).all()
    # The first heartbeat needs a one-way delay (4-6 ms) to reach the last server.
    gap = study["downtime_ms"] - study["elected_ms"]
    assert (gap >= 4).all() and (gap < 20).all()


def test_a_candidate_that_asks_before_writing_its_vote_elects_sooner_on_short_timeouts():
    slow = summarize(election_study(["25-50"], trials=4, seed=4, limit=2.0)).iloc[0]
    quick = summarize(
        election_study(["25-50"], trials=4, seed=4, limit=2.0, candidate_write=False)
    ).iloc[0]
    assert quick["median_ms"] < slow["median_ms"]


def test_multipaxos_study_times_its_new_leaders_first_heartbeat(capsys):
    study = election_study(["150-300"], trials=3, seed=1, protocol="multipaxos")
    assert set(study["protocol"]) == {"multipaxos"}
    assert study["staged"].all() and study["elected"].all()
    assert (study["downtime_ms"] >= 75).all()  # min/2 after the last heartbeat, at least
    argv = ["elections", "--protocol", "multipaxos", "--trials", "2", "--range", "100-200"]
    assert main([*argv, "--option", "check_quorum=false"]) == 0
    assert "multipaxos" in capsys.readouterr().out
