"""The deterministic simulator end to end, on the sequencer baseline plugin."""

from __future__ import annotations

from typing import Any, Sequence

import pytest

from consensus.checker.history import INFO, OK
from consensus.commands import Append, CompareAndSet, Delete, Get, Noop, Put, Request
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig
from consensus.host import TickLoopError
from consensus.registry import ProtocolSpec, register
from consensus.replica import Outputs, Replica, ReplicaContext
from consensus.sim.clients import Attempt
from consensus.sim.simulator import Simulator


def sequencer(seed: int = 1, nodes: int = 3, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol="sequencer", nodes=nodes, seed=seed, **kwargs))


def run_ops(sim: Simulator, commands: Sequence[Any], node: int | None = 0) -> list:
    ops = []
    for command in commands:
        op = sim.submit(command, node=node)
        assert sim.run_until(lambda op=op: op.done, timeout=10), f"{command} did not finish"
        ops.append(op)
    return ops


def test_three_node_cluster_applies_commands_and_answers_results():
    sim = sequencer()
    ops = run_ops(
        sim,
        [
            Put(key="x", value="1"),
            Append(key="x", value="2"),
            Get(key="x"),
            CompareAndSet(key="x", expected="12", new="3"),
            CompareAndSet(key="x", expected="12", new="4"),
            Delete(key="x"),
            Get(key="x"),
        ],
    )
    assert [op.status for op in ops] == [OK] * 7
    assert [op.result for op in ops] == [None, None, "12", True, False, True, None]
    sim.run_for(0.2)  # let the commit index reach the followers
    sequences = [[payload for _, payload in sim.applied(n)] for n in range(3)]
    assert sequences[0] == sequences[1] == sequences[2]
    assert len(sequences[0]) == 7


def test_commit_latency_is_one_round_trip_with_constant_delay():
    sim = sequencer(network=NetworkConfig(delay=Delay.constant(0.004)))
    (op,) = run_ops(sim, [Put(key="k", value="v")])
    assert op.latency == pytest.approx(0.008)


def test_client_at_a_follower_is_redirected_to_the_leader():
    sim = sequencer()
    (op,) = run_ops(sim, [Put(key="k", value="v")], node=2)
    assert op.ok and op.retries == 1


def test_restarted_follower_recovers_its_log_from_storage_and_catches_up():
    sim = sequencer()
    run_ops(sim, [Put(key=f"k{i}", value=str(i)) for i in range(5)])
    sim.run_for(0.2)
    before = sim.storage(2).load()
    sim.crash(2)
    run_ops(sim, [Put(key=f"k{i}", value=str(i)) for i in range(5, 10)])
    sim.restart(2)
    assert sim.replica(2).log == [record.payload for record in before]
    sim.run_for(0.5)
    assert sim.applied(2) == sim.applied(0)
    assert len(sim.applied(2)) == 10


def test_operations_without_a_leader_end_indeterminate():
    sim = sequencer(client=ClientConfig(timeout=0.1, max_attempts=3))
    sim.crash(0)  # the sequencer's fixed leader: nothing can commit
    op = sim.submit(Put(key="k", value="v"), node=1)
    assert sim.run_until(lambda: op.done, timeout=5)
    assert op.status == INFO and op.complete is None and op.retries == 2


def test_a_retry_of_a_committed_request_is_applied_once():
    sim = sequencer()
    client = sim.client()
    first = client.submit(Append(key="log", value="a"), node=0)
    sim.run_until(lambda: first.done)
    # The same (client, seq) proposed again, as a client whose reply was lost would.
    host = sim.host(0)
    stale_waiter = (client, Attempt(op=first, node=0), 0)  # answered already: ignored
    retry = Request(client_id=client.client_id, seq=first.seq, command=Append(key="log", value="a"))
    host.submit(sim.now, retry, stale_waiter)
    sim.run_for(0.2)
    assert host.sm.data["log"] == "a"
    assert host.sm.applied_index == 2


def test_same_seed_gives_identical_history_and_another_seed_does_not():
    def history(seed: int) -> list:
        sim = sequencer(
            seed=seed,
            network=NetworkConfig(
                delay=Delay.uniform(0.001, 0.01), loss=0.05, reorder=0.2, duplicate=0.02
            ),
        )
        clients = [sim.client() for _ in range(4)]

        def loop(client, n):
            if n:
                client.submit(
                    Append(key=f"k{n % 3}", value=str(n)), on_done=lambda op: loop(client, n - 1)
                )

        for client in clients:
            loop(client, 25)
        sim.run_for(30)
        assert all(op.done for op in sim.history)
        return sim.history.fingerprint()

    first = history(11)
    assert len(first) == 100
    assert first == history(11)
    assert first != history(12)


def test_history_dataframe_has_one_row_per_operation():
    sim = sequencer()
    run_ops(sim, [Put(key="a", value="1"), Get(key="a")])
    df = sim.history.to_dataframe()
    assert list(df["op"]) == ["put", "get"]
    assert list(df["status"]) == ["ok", "ok"]
    assert df.loc[1, "result"] == "1"
    assert (df["latency"] > 0).all()


def test_message_counts_survive_a_crash():
    sim = sequencer()
    run_ops(sim, [Put(key="a", value="1")])
    before = sim.message_counts()["Replicate"]
    sim.crash(0)
    assert sim.message_counts()["Replicate"] == before


class _Stuck(Replica):
    """A broken replica: its deadline never moves past now."""

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any]) -> None:
        super().__init__(ctx)

    def start(self, now: float) -> Outputs:
        return Outputs()

    def step(self, now: float, src: int, message: Any) -> Outputs:
        return Outputs()

    def tick(self, now: float) -> Outputs:
        return Outputs(committed=[])

    def next_deadline(self) -> float | None:
        return 0.5

    def propose(self, now: float, request: Any) -> Outputs:
        return Outputs()

    def leader(self) -> int | None:
        return None


def test_a_replica_that_never_moves_its_deadline_is_reported():
    register(ProtocolSpec(name="stuck", create=_Stuck, summary="broken on purpose"))
    sim = Simulator(ClusterConfig(protocol="stuck", nodes=1))
    with pytest.raises(TickLoopError, match="asks for a tick"):
        sim.run_for(1.0)


def test_submit_to_unknown_node_is_an_error():
    sim = sequencer()
    with pytest.raises(ValueError, match="no node 7"):
        sim.submit(Noop(), node=7)
