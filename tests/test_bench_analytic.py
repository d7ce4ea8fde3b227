"""The analytical check: with a constant one-way delay d, no processing time
(costs off: a benchmark's nodes otherwise pay the measured costs) and one
client at the leader, a commit costs one round trip (2d) for Raft and
Multi-Paxos and two (4d: prepare, then accept) for a single-decree Paxos
instance proposed without a leader.  Measured in virtual time through the
harness, so the whole path (workload, clients, network, host) is covered.
With costs on, the same path adds each service time on the way
(``tests/test_costs.py``)."""

from __future__ import annotations

import pytest

from bench import run

D = 0.010


@pytest.mark.parametrize("protocol, delays", [("raft", 2), ("multipaxos", 2), ("paxos", 4)])
def test_commit_latency_is_a_whole_number_of_message_delays(protocol, delays):
    results = run(
        {
            "protocols": [protocol],
            "cluster": {
                "nodes": 3,
                "seed": 1,
                "network": {"delay": {"kind": "constant", "value": D}},
            },
            "costs": "off",
            # One client, writes only; the warm-up lets it find the leader.
            "workload": {"clients": 1, "duration": 3.0, "warmup": 1.0, "read_fraction": 0.0},
        }
    )
    ops = results.ops
    measured = ops[ops["measured"]]
    assert len(measured) > 20
    assert (measured["status"] == "ok").all()
    assert (measured["retries"] == 0).all()
    assert measured["latency"].tolist() == pytest.approx([delays * D] * len(measured))


def test_linearizable_reads_cost_one_round_trip_too():
    results = run(
        {
            "protocols": ["raft"],
            "cluster": {
                "nodes": 3,
                "seed": 1,
                "network": {"delay": {"kind": "constant", "value": D}},
            },
            "costs": "off",
            "workload": {"clients": 1, "duration": 3.0, "warmup": 1.0, "read_fraction": 1.0},
        }
    )
    reads = results.ops[results.ops["measured"]]
    assert (reads["op"] == "get").all()
    assert reads["latency"].tolist() == pytest.approx([2 * D] * len(reads))
