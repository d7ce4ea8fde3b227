"""Seeded chaos runs: every protocol stays linearizable under the nemesis and
loses no acknowledged write, the deliberately broken variant is caught, and a
seed replays exactly.

CI runs a bounded number per configuration; the long soak is
``python -m bench chaos --protocol NAME --runs 1000`` (see the README).
"""

from __future__ import annotations

import pytest

from bench.chaos import chaos_run, chaos_runs, replay_command
from bench.cli import main

RUNS = 30

CONFIGURATIONS = [
    ("raft", {}, 0),
    ("raft", {"prevote": False}, 0),
    ("raft", {"check_quorum": False}, 0),
    ("raft", {"read_mode": "log"}, 0),
    ("raft", {"prevote": False, "check_quorum": False}, 0),
    ("raft", {}, 20),  # snapshots every 20 applied entries, InstallSnapshot under faults
    ("multipaxos", {}, 0),
    ("multipaxos", {"check_quorum": False}, 0),
    ("multipaxos", {}, 20),
    ("multipaxos", {"read_mode": "read_index"}, 0),
    ("multipaxos", {"disruption_guard": False}, 0),
    ("paxos", {}, 0),
]


@pytest.mark.parametrize(
    "protocol, options, snapshot_every",
    CONFIGURATIONS,
    ids=[f"{p}-{o or 'default'}-snap{s}" for p, o, s in CONFIGURATIONS],
)
def test_seeded_chaos_runs_find_no_violation(protocol, options, snapshot_every):
    for result in chaos_runs(
        protocol, RUNS, seed=1000, ops=150, options=options, snapshot_every=snapshot_every
    ):
        assert result.passed, (
            f"seed {result.seed}: {[v.describe() for v in result.violations]}, lost {result.lost}\n"
            + replay_command(protocol, result.seed, 150, options, snapshot_every)
        )
        assert result.operations > 100


def test_lease_reads_under_clock_drift_within_the_bound_find_no_violation():
    options = {"read_mode": "lease", "max_clock_drift": 0.05}
    for result in chaos_runs(
        "multipaxos", RUNS, seed=1000, ops=150, options=options, clock_drift=0.05
    ):
        assert result.passed, replay_command(
            "multipaxos", result.seed, 150, options, clock_drift=0.05
        )


def test_multipaxos_chaos_runs_change_the_membership():
    changes = [
        f
        for r in chaos_runs("multipaxos", 5, seed=0)
        for _, f, d in r.faults
        if f == "membership_done" and d.startswith("ok")
    ]
    assert len(changes) >= 5


def test_runs_really_inject_faults_and_clients_really_retry():
    result = chaos_run("raft", 3)
    kinds = {name for _, name, _ in result.faults}
    assert {"crash", "kill_leader", "partition"} & kinds
    assert sum(op.retries for op in result.history) > 20
    assert sum(op.is_kv for op in result.history) == 200
    assert all(op.done for op in result.history)


def test_the_broken_variant_is_caught():
    caught = [r.seed for r in chaos_runs("raft-stale-reads", 100, seed=0, ops=200) if not r.ok]
    assert caught, "the checker missed a Raft that serves reads without confirming leadership"
    first = chaos_run("raft-stale-reads", caught[0])
    assert first.violations and len(first.violations[0].operations) <= 10


def test_replaying_a_seed_reproduces_the_identical_history():
    first = chaos_run("multipaxos", 42)
    again = chaos_run("multipaxos", 42)
    assert first.history.fingerprint() == again.history.fingerprint()
    assert first.faults == again.faults
    assert chaos_run("multipaxos", 43).history.fingerprint() != first.history.fingerprint()


def test_cli_ends_with_the_summary_line(capsys):
    assert main(["chaos", "--protocol", "paxos", "--runs", "2", "--ops", "60"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("paxos: 2 runs, 0 violations, ") and last.endswith(" operations checked")


def test_cli_reports_a_violation_with_seed_and_replay_command(capsys):
    seed = next(r.seed for r in chaos_runs("raft-stale-reads", 100, ops=200) if not r.ok)
    assert (
        main(
            [
                "chaos",
                "--protocol",
                "raft-stale-reads",
                "--runs",
                "1",
                "--seed",
                str(seed),
                "--ops",
                "200",
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert f"seed {seed}" in out
    assert f"python -m bench chaos --protocol raft-stale-reads --runs 1 --seed {seed}" in out
    assert out.strip().splitlines()[-1].startswith("raft-stale-reads: 1 runs, 1 violations")


def test_cli_rejects_unknown_protocol_and_option(capsys):
    assert main(["chaos", "--protocol", "nope", "--runs", "1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["chaos", "--protocol", "raft", "--runs", "1", "--option", "prevot=false"]) == 2
    assert "prevot" in capsys.readouterr().err
