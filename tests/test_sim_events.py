"""The simulator's event fast paths: lazy client timeouts, uniform events, speed rows."""

from __future__ import annotations

from typing import Any

import pytest

from bench.simspeed import measure, measure_parallel
from bench.workload import Workload, WorkloadConfig
from consensus.checker.history import OK
from consensus.commands import Put
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator


def sequencer(**kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol="sequencer", nodes=3, seed=1, **kwargs))


def test_a_timeout_fires_at_its_own_attempt_deadline_not_an_earlier_operations():
    sim = sequencer(client=ClientConfig(timeout=0.3, backoff=0.02))
    client = sim.client()
    first = client.submit(Put(key="a", value="1"), node=0)
    assert sim.run_until(lambda: first.done, timeout=1.0) and first.ok
    # The first operation's timer (at first.invoke + 0.3) is still pending; the
    # second one must not time out then, but 0.3 s after it was sent.
    sim.run_for(0.1)
    sim.crash(0)  # the sequencer's fixed leader: nothing commits any more
    second = client.submit(Put(key="b", value="2"), node=0)
    deadline = second.invoke + 0.3
    sim.run_until_time(first.invoke + 0.3 + 1e-9)
    assert second.retries == 0
    sim.run_until_time(deadline - 1e-9)
    assert second.retries == 0
    sim.run_until_time(deadline + 1e-9)
    assert second.retries >= 1  # timed out, retried at node 1 (and redirected back to 0)


def test_stale_timeouts_of_completed_operations_never_retry():
    sim = sequencer(client=ClientConfig(timeout=0.05))
    workload = Workload(sim, WorkloadConfig(clients=8, duration=0.5, warmup=0.0))
    workload.start()
    sim.run_for(1.0)
    ops = list(sim.history)
    assert len(ops) > 500  # many operations, each far shorter than the timeout
    assert all(op.status == OK for op in ops)
    # Only a client's first operation may retry (redirected to the leader, which
    # it then remembers); a stale timeout firing would show up as a retry later.
    assert all(op.retries == 0 for op in ops if op.seq > 1)


def test_a_retry_after_a_timeout_reaches_the_next_node():
    sim = sequencer(client=ClientConfig(timeout=0.1, backoff=0.01, max_attempts=3))
    sim.crash(1)
    op = sim.submit(Put(key="k", value="v"), node=1)  # node 1 is down: no answer
    assert sim.run_until(lambda: op.done, timeout=1.0)
    assert op.ok and op.retries >= 1


@pytest.mark.parametrize("wire", ["objects", "bytes"])
def test_runs_with_lazy_timeouts_are_reproducible(wire: str):
    def history(seed: int) -> list:
        sim = Simulator(
            ClusterConfig(
                protocol="sequencer",
                nodes=3,
                seed=seed,
                wire=wire,
                network=NetworkConfig(delay=Delay.uniform(0.001, 0.003), loss=0.05),
                client=ClientConfig(timeout=0.02, backoff=0.005),
            )
        )
        Workload(sim, WorkloadConfig(clients=4, duration=0.5, warmup=0.0)).start()
        sim.run_for(1.0)
        return sim.history.fingerprint()

    first = history(3)
    assert any(op[-1] > 0 for op in first)  # some operations did time out and retry
    assert first == history(3)


def test_speed_rows_are_deterministic_and_complete():
    rows = [measure("sequencer", seconds=0.05, repeat=2) for _ in range(2)]
    assert rows[0] is not None and rows[1] is not None
    keys = {"messages", "events", "ops", "wall", "cpu", "msgs_per_s", "us_per_op"}
    assert keys <= rows[0].keys()
    assert rows[0]["messages"] == rows[1]["messages"] > 0
    assert rows[0]["ops"] == rows[1]["ops"] > 0
    assert rows[0]["us_per_op"] > 0
    assert measure("no-such-protocol") is None


def test_parallel_speed_runs_one_seed_per_process_and_counts_them_all():
    together = measure_parallel("sequencer", jobs=2, seconds=0.05)
    alone = [measure("sequencer", seconds=0.05, seed=seed) for seed in (1, 2)]
    assert together is not None and None not in alone
    assert alone[0]["messages"] != alone[1]["messages"]  # type: ignore[index]  # seeds differ
    assert together["messages"] == sum(row["messages"] for row in alone)  # type: ignore[index]
    assert together["msgs_per_s"] == together["messages"] / together["wall"]
    assert measure_parallel("no-such-protocol", jobs=2) is None


def test_speed_cli_adds_the_parallel_column_with_jobs(capsys):
    from bench.cli import main

    argv = ["speed", "--protocol", "sequencer", "--nodes", "3", "--seconds", "0.05"]
    assert main([*argv, "--repeat", "1", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 runs at once" in out and "sequencer" in out


def test_speed_cli_rejects_an_unknown_protocol_by_name(capsys):
    from bench.cli import main

    assert main(["speed", "--protocol", "nosuch", "--seconds", "0.05"]) == 2
    assert "unknown protocol 'nosuch'" in capsys.readouterr().err
