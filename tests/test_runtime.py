"""The Trio runtime on virtual time (pytest-trio's autojump clock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from consensus.commands import Append, Get, Put, Request
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig
from consensus.registry import get_protocol
from consensus.runtime import LocalNetwork, NodeRunner, OperationFailed, open_cluster

CONFIG = ClusterConfig(
    protocol="sequencer",
    nodes=3,
    seed=3,
    network=NetworkConfig(delay=Delay.uniform(0.001, 0.004), loss=0.02, reorder=0.1),
)


async def test_submit_returns_the_state_machine_result(autojump_clock):
    async with open_cluster(CONFIG) as cluster:
        assert await cluster.submit(Put(key="x", value="1")) is None
        assert await cluster.submit(Append(key="x", value="2")) is None
        assert await cluster.submit(Get(key="x")) == "12"


async def test_node_submit_follows_the_redirect_to_the_leader(autojump_clock):
    async with open_cluster(CONFIG) as cluster:
        assert await cluster.node(2).submit(Put(key="k", value="v")) is None
        (op,) = cluster.history
        assert op.ok and op.retries >= 1


async def test_cluster_time_follows_trio_virtual_time(autojump_clock):
    async with open_cluster(CONFIG) as cluster:
        start = trio.current_time()
        await trio.sleep(2.5)
        assert cluster.now == pytest.approx(trio.current_time() - start)
        assert cluster.now == pytest.approx(2.5)


async def test_concurrent_client_tasks_give_the_same_history_for_the_same_seed(autojump_clock):
    async def run_once() -> list:
        async with open_cluster(CONFIG) as cluster:
            clients = [cluster.client() for _ in range(5)]

            async def work(client):
                for i in range(10):
                    await client.submit(Append(key=f"k{i % 2}", value=f"{client.client_id}.{i}"))

            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(work, client)
            return cluster.history.fingerprint()

    first = await run_once()
    assert len(first) == 50
    assert await run_once() == first


async def test_crash_and_restart_from_a_task(autojump_clock):
    async with open_cluster(CONFIG) as cluster:
        await cluster.submit(Put(key="a", value="1"))
        cluster.node(1).crash()
        assert not cluster.node(1).is_up
        await cluster.submit(Put(key="b", value="2"))
        cluster.node(1).restart()
        await trio.sleep(0.5)
        assert cluster.sim.applied(1) == cluster.sim.applied(0)


async def test_operation_with_no_possible_commit_raises(autojump_clock):
    config = ClusterConfig(
        protocol="sequencer", nodes=3, client=ClientConfig(timeout=0.1, max_attempts=3)
    )
    async with open_cluster(config) as cluster:
        cluster.node(0).crash()  # the fixed leader
        with pytest.raises(OperationFailed, match="did not complete"):
            await cluster.node(1).submit(Put(key="k", value="v"))


async def test_node_runners_in_nurseries_over_a_local_network(autojump_clock):
    spec = get_protocol("sequencer")
    members = (0, 1, 2)
    network = LocalNetwork(3, delay=0.002)
    runners = [
        NodeRunner(
            node_id=n,
            spec=spec,
            members=members,
            options=spec.make_options(),
            transport=network.endpoint(n),
        )
        for n in members
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for runner in runners:
            nursery.start_soon(runner.run)
        await trio.sleep(0.01)
        start = trio.current_time()
        reply = await runners[0].submit(
            Request(client_id=1, seq=1, command=Put(key="a", value="b"))
        )
        assert reply.ok and trio.current_time() - start == pytest.approx(0.004)
        redirect = await runners[2].submit(Request(client_id=1, seq=2, command=Get(key="a")))
        assert not redirect.ok and redirect.leader_hint == 0
        reply = await runners[0].submit(Request(client_id=1, seq=2, command=Get(key="a")))
        assert reply.ok and reply.result == "b"
        await trio.sleep(0.2)  # heartbeats carry the commit index to followers
        assert [r.host.sm.data for r in runners] == [{"a": "b"}] * 3
        nursery.cancel_scope.cancel()


async def test_network_delay_is_observed_in_trio_virtual_time(autojump_clock):
    config = ClusterConfig(
        protocol="sequencer", nodes=3, network=NetworkConfig(delay=Delay.constant(0.005))
    )
    async with open_cluster(config) as cluster:
        await cluster.submit(Put(key="warm", value="up"), node=0)
        start = trio.current_time()
        await cluster.submit(Put(key="k", value="v"), node=0)
        assert trio.current_time() - start == pytest.approx(0.010)  # there and back


async def test_partition_blocks_commits_until_healed_under_mock_clock(autojump_clock):
    config = ClusterConfig(
        protocol="sequencer", nodes=3, client=ClientConfig(timeout=0.2, max_attempts=4)
    )
    async with open_cluster(config) as cluster:
        cluster.partition([0], [1, 2])  # the leader alone: no majority
        with pytest.raises(OperationFailed):
            await cluster.node(0).submit(Put(key="k", value="lost?"))
        cluster.heal()
        assert await cluster.node(0).submit(Get(key="k")) in (None, "lost?")
        await cluster.node(0).submit(Put(key="k", value="v"))
        assert await cluster.node(0).submit(Get(key="k")) == "v"


async def test_loss_only_delays_commits_under_mock_clock(autojump_clock):
    config = ClusterConfig(
        protocol="raft", nodes=3, seed=4, network=NetworkConfig(loss=0.3, reorder=0.3)
    )
    async with open_cluster(config) as cluster:
        for i in range(20):
            await cluster.submit(Append(key="log", value=str(i % 10)))
        assert await cluster.submit(Get(key="log")) == "01234567890123456789"


async def _runners(
    protocol: str,
    pack: int = 0,
    *,
    delay: float = 0.001,
    transport: Any = None,
    storage: Any = None,
) -> tuple[LocalNetwork, list[NodeRunner]]:
    """Three runners over a local network; ``transport(n, endpoint)`` and
    ``storage(n)``, if given, make node ``n``'s."""
    spec = get_protocol(protocol)
    network = LocalNetwork(3, delay=delay)
    runners = [
        NodeRunner(
            node_id=n,
            spec=spec,
            members=(0, 1, 2),
            options=spec.make_options(),
            transport=(transport or (lambda _, e: e))(n, network.endpoint(n)),
            storage=storage(n) if storage else None,
            pack_proposals=pack,
        )
        for n in range(3)
    ]
    return network, runners


async def _leader(runners: list[NodeRunner]) -> int:
    with trio.fail_after(10):
        while True:
            leaders = [r.node_id for r in runners if r.host.replica.leader() == r.node_id]
            if len(leaders) == 1:
                return leaders[0]
            await trio.sleep(0.01)


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos"])
async def test_a_runner_packs_concurrent_requests_into_few_log_entries(autojump_clock, protocol):
    network, runners = await _runners(protocol, pack=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for runner in runners:
            nursery.start_soon(runner.run)
        target = runners[await _leader(runners)] if protocol != "paxos" else runners[0]
        if protocol == "paxos":
            await trio.sleep(0.1)
        replies = {}

        async def append(i: int) -> None:
            request = Request(client_id=1000 + i, seq=1, command=Append(key="k", value=f"{i},"))
            replies[i] = await target.submit(request)

        async with trio.open_nursery() as clients:
            for i in range(100):
                clients.start_soon(append, i)
        assert all(r.ok for r in replies.values()), [r for r in replies.values() if not r.ok][:3]
        await trio.sleep(0.5)  # followers learn the commit index
        for runner in runners:
            value = runner.host.sm.data["k"]
            assert sorted(int(t) for t in value.split(",") if t) == list(range(100))
            # 100 requests in a handful of entries (plus a leader's no-op)
            assert runner.host.sm.applied_index < 20
        nursery.cancel_scope.cancel()


async def test_a_rejected_pack_answers_every_request_inside_it(autojump_clock):
    network, runners = await _runners("raft", pack=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for runner in runners:
            nursery.start_soon(runner.run)
        leader = await _leader(runners)
        follower = runners[(leader + 1) % 3]
        replies = []

        async def put(i: int) -> None:
            request = Request(client_id=2000 + i, seq=1, command=Put(key=f"k{i}", value="v"))
            replies.append(await follower.submit(request))

        async with trio.open_nursery() as clients:
            for i in range(10):
                clients.start_soon(put, i)
        assert len(replies) == 10
        assert {(r.ok, r.reason, r.leader_hint) for r in replies} == {(False, "not_leader", leader)}
        assert follower.host.waiting == {} and follower.host._packs == {}
        nursery.cancel_scope.cancel()


def test_the_host_sends_eager_messages_before_persisting_and_the_rest_after():
    from core_helpers import lone_host

    from consensus.replica import Outputs
    from consensus.storage import MemoryStorage

    events: list[str] = []

    class Recording(MemoryStorage):
        def append(self, records):
            events.append("append")
            super().append(records)

        def sync(self):
            events.append("sync")

    host = lone_host(
        members=(0, 1), storage=Recording(), send=lambda dst, m: events.append(f"send {m}")
    )
    synced = []
    host.replica.synced = lambda now: synced.append(now) or Outputs(messages=[(1, "after sync")])
    out = Outputs(persist=["record"], messages=[(1, "regular")])
    out.send_eager(1, "eager")
    host.handle(1.0, out)
    assert events == ["send eager", "append", "sync", "send regular", "send after sync"]
    assert synced == [1.0]
    host.handle(2.0, Outputs(messages=[(1, "no records")]))
    assert synced == [1.0]  # nothing persisted: nothing newly durable


async def test_a_runner_never_packs_for_a_protocol_without_a_log(autojump_clock):
    assert "log" in get_protocol("nwr").lacks
    _, runners = await _runners("nwr", 64)
    async with trio.open_nursery() as nursery:
        for runner in runners:
            nursery.start_soon(runner.run)
        await trio.sleep(0.1)
        replies = []

        async def put(i: int) -> None:
            request = Request(client_id=3000 + i, seq=1, command=Put(key=f"k{i}", value="v"))
            replies.append(await runners[0].submit(request))

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(put, i)
        assert len(replies) == 20 and all(r.ok for r in replies)
        assert runners[0].host._packs == {} and runners[0].host.pack_proposals == 0
        nursery.cancel_scope.cancel()


class _WriterTransport:
    """A transport shaped like TCP's: ``send`` queues, a writer task takes the
    queue when woken and hands it to the local network, noting when."""

    def __init__(self, inner, events: list[str]) -> None:
        self.inner, self.events = inner, events
        self.queue: list[tuple[int, object]] = []
        self.wake = trio.Event()

    def send(self, dst: int, message: object) -> None:
        self.queue.append((dst, message))
        self.wake.set()

    def unsent(self) -> bool:
        return bool(self.queue)

    async def run(self, deliver) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.inner.run, deliver)
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                taken, self.queue = self.queue, []
                for dst, message in taken:
                    if getattr(message, "entries", ()):
                        self.events.append("wire entries")
                    self.inner.send(dst, message)


async def test_a_leaders_replication_is_on_the_wire_before_its_own_disk_write(autojump_clock):
    """The eager AppendEntries of a batch leave before the leader syncs that batch,
    whatever order Trio runs the driver and the writer in."""
    from consensus.storage import MemoryStorage

    logs: list[list[str]] = [[], [], []]

    class Recording(MemoryStorage):
        def __init__(self, events: list[str]) -> None:
            super().__init__()
            self.events = events

        def sync(self):
            self.events.append("sync")

    network, runners = await _runners(
        "raft",
        delay=0.0,
        transport=lambda n, endpoint: _WriterTransport(endpoint, logs[n]),
        storage=lambda n: Recording(logs[n]),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        for runner in runners:
            nursery.start_soon(runner.run)
        leader = await _leader(runners)
        events = logs[leader]
        events.clear()
        for i in range(30):
            request = Request(client_id=7, seq=i + 1, command=Put(key="k", value=str(i)))
            assert (await runners[leader].submit(request)).ok
        nursery.cancel_scope.cancel()
    # Every sync of a batch with new entries follows that batch's replication.
    pairs = [(a, b) for a, b in zip(events, events[1:]) if b == "sync"]
    assert len(pairs) >= 30
    assert all(a == "wire entries" for a, b in pairs), events
